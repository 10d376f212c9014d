"""Signals (issue 30): SIGINT, SIGTERM and SIGHUP end every command with one line, 128 + the signal's
number, no temporary file and the earlier output whole; concurrent training runs never overwrite each other."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from vaecli.figures.snapshots import FIRST_EPOCH_POINTS
from vaecli.store.checkpoint import load_checkpoint, read_metadata

from tests.helpers.signals import default_signals

REPO = Path(__file__).resolve().parent.parent

# The real CLI in a child whose work stalls at one point (touching STALL_MARK first), so that a signal
# lands there and nowhere else: in -log p(x)'s importance sampling (eval, score, ood), or in a write,
# after the temporary file holds every byte and before it is renamed into place (traverse -o).
STALLED_CLI = """
import os, time
from pathlib import Path
import vaecli.training.evaluate, vaecli.store.files

def stall(*args, **kwargs):
    Path(os.environ["STALL_MARK"]).touch()
    time.sleep(600)

if os.environ["STALL_AT"] == "nll":
    vaecli.training.evaluate.iw_nll = stall
else:
    vaecli.store.files.os.fsync = stall
from vaecli.cli import main
main()
"""

# A training child whose first step waits for GATE (touching READY first), or whose steps are slowed.
GATED_TRAIN = """
import os, time
from pathlib import Path
import vaecli.training.loop
real = vaecli.training.loop.to_pixels

def gated(batch):
    Path(os.environ["READY"]).touch()
    while not Path(os.environ["GATE"]).exists():
        time.sleep(0.02)
    time.sleep(float(os.environ.get("STEP_S", "0")))
    return real(batch)

vaecli.training.loop.to_pixels = gated
from vaecli.cli import main
main()
"""

# Tiny runs on CPU: three steps an epoch.
RECIPE = ["--dataset", "digits", "--arch", "mlp", "--hidden", "8", "--latent-dim", "3", "--batch-size", "32",
          "--limit", "96", "--device", "cpu", "--no-report", "--lr-schedule", "constant"]
SIX_STEPS = ["--batch-size", "16"]

MESSAGES = {
    signal.SIGINT: "interrupted",
    signal.SIGTERM: "terminated by SIGTERM",
    signal.SIGHUP: "terminated by SIGHUP (its terminal was closed)",
}


def _start(script: str, args: list, cwd: Path, **env: str) -> subprocess.Popen:
    environment = {**os.environ, "VAE_OFFLINE": "1", "NO_COLOR": "1", **env,
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=cwd, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_signals)


def _wait_for(path: Path, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"ended before {what}: {process.communicate()[1].decode()}")
        assert time.monotonic() < deadline, f"no {what} after 120 s"
        time.sleep(0.01)


def _finish(process: subprocess.Popen) -> tuple[bytes, str]:
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return stdout, stderr.decode()


def _temporaries(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.tmp"))


COMMANDS = {
    "eval": ("nll", ["eval", "-k", "4", "--limit", "8"]),
    "score": ("nll", ["score", "--dataset", "digits", "--limit", "8", "-s", "nll", "-k", "4"]),
    "ood": ("nll", ["ood", "--known", "digits", "--unusual", "digits", "--limit", "8", "-s", "nll", "-k", "4"]),
    "traverse -o": ("write", ["traverse", "--limit", "8", "--steps", "3", "-o", "traverse.png"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("signum", list(MESSAGES), ids=["INT", "TERM", "HUP"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_signal_during_the_work_or_a_write_ends_with_one_line_and_leaves_nothing(tiny_model, tmp_path,
                                                                                   command, signum):
    stall_at, args = COMMANDS[command]
    earlier = tmp_path / "traverse.png"
    earlier.write_bytes(b"an earlier figure")
    earlier.chmod(0o640)
    mark = tmp_path / "stalled"
    process = _start(STALLED_CLI, [*args, "-m", tiny_model, "--device", "cpu", "-q"], tmp_path,
                     STALL_AT=stall_at, STALL_MARK=str(mark))
    _wait_for(mark, process, "the stall")
    if stall_at == "write":
        assert len(_temporaries(tmp_path)) == 1  # the signal comes while the temporary file is there
    process.send_signal(signum)
    stdout, stderr = _finish(process)
    assert process.returncode == 128 + signum, stderr
    assert stderr.splitlines() == [f"error: {MESSAGES[signum]}"]
    assert stdout == b""
    assert _temporaries(tmp_path) == []
    assert earlier.read_bytes() == b"an earlier figure" and stat.S_IMODE(earlier.stat().st_mode) == 0o640


@pytest.mark.slow
def test_sighup_during_training_keeps_the_epochs_and_the_snapshots_taken(tmp_path):
    out, gif = tmp_path / "run.safetensors", tmp_path / "run-evolution.gif"
    (tmp_path / "gate").touch()
    # Six steps an epoch, so the four points of the first epoch fall on four steps.
    process = _start(GATED_TRAIN, ["train", *RECIPE, *SIX_STEPS, "--epochs", "5", "--snapshots", "-o", out], tmp_path,
                     READY=str(tmp_path / "ready"), GATE=str(tmp_path / "gate"), STEP_S="0.3")
    _wait_for(out, process, "a checkpoint")
    process.send_signal(signal.SIGHUP)
    _, stderr = _finish(process)
    assert process.returncode == 129, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted during epoch"), stderr
    saved = load_checkpoint(out).epochs_done
    assert 1 <= saved < 5
    # The GIF is written once, with every frame taken: four in the first epoch, one after each saved epoch
    # (the signal may come between an epoch's save and its frame).
    frames = Image.open(gif).n_frames
    assert saved - 1 <= frames - len(FIRST_EPOCH_POINTS) <= saved, (frames, saved)
    assert _temporaries(tmp_path) == []


# --- two runs writing one checkpoint (item 8) ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("resumed", [False, True], ids=["two-new-runs", "two-resumes"])
def test_of_two_runs_writing_one_checkpoint_the_later_writer_stops_and_names_the_other(cli, tmp_path, resumed):
    """Run A passes its start checks and waits; run B writes the checkpoint; A must not overwrite it."""
    out = tmp_path / "run.safetensors"
    if resumed:
        assert cli("train", *RECIPE, "--epochs", "1", "-q", "-o", out).exit_code == 0
    first = ["--resume", out, "--epochs", "3"] if resumed else [*RECIPE, "--epochs", "3", "-o", out]
    ready, gate = tmp_path / "a-ready", tmp_path / "a-gate"
    process = _start(GATED_TRAIN, ["train", *first, "-q"], tmp_path, READY=str(ready), GATE=str(gate))
    try:
        _wait_for(ready, process, "run A's first step")
        second = ["--resume", out, "--epochs", "2"] if resumed else [*RECIPE, "--epochs", "2", "-o", out]
        b = cli("train", *second, "-q")
        assert b.exit_code == 0, b.stderr
        kept = out.read_bytes()
    finally:
        gate.touch()
    _, stderr = _finish(process)
    assert process.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {out}: another run wrote it at "), stderr
    assert "(mlp, 2 epochs on digits) while this run trained; stopping without overwriting it" in lines[0]
    assert out.read_bytes() == kept
    assert read_metadata(out)["epochs_done"] == 2
    assert _temporaries(tmp_path) == []


def test_a_run_goes_on_where_its_checkpoint_was_removed_meanwhile(cli, tmp_path, monkeypatch):
    """Removing the file takes nothing from anyone: the next epoch writes it again."""
    import vaecli.training.loop

    real, saves = vaecli.training.loop.save_checkpoint, []

    def save(path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            Path(path).unlink()
        real(path, *args, **kwargs)

    monkeypatch.setattr(vaecli.training.loop, "save_checkpoint", save)
    result = cli("train", *RECIPE, "--epochs", "2", "-q", "-o", "run.safetensors")
    assert result.exit_code == 0, result.stderr
    assert read_metadata(tmp_path / "run.safetensors")["epochs_done"] == 2


def test_a_checkpoint_replaced_by_another_program_between_epochs_is_kept(cli, tmp_path, monkeypatch):
    import vaecli.training.loop

    real, saves = vaecli.training.loop.save_checkpoint, []

    def save(path, *args, **kwargs):
        if Path(path).name == "run.safetensors":  # not its -best copy
            saves.append(path)
            if len(saves) == 2:
                Path(path).write_bytes(b"another program's file")
        real(path, *args, **kwargs)

    monkeypatch.setattr(vaecli.training.loop, "save_checkpoint", save)
    result = cli("train", *RECIPE, "--epochs", "3", "-q", "-o", "run.safetensors", "--keep-best")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --out run.safetensors: another program replaced it while this run trained; stopping without "
        "overwriting it (give each run its own -o)"]
    assert (tmp_path / "run.safetensors").read_bytes() == b"another program's file"
    assert len(saves) == 2 and _temporaries(tmp_path) == []


# --- --snapshots writes its GIF once (item 13) -----------------------------------------------------------


def test_snapshots_are_written_once_with_every_frame(cli, tmp_path, monkeypatch):
    """Once, at the end: rewriting the GIF after every frame cost time growing with the square of the epochs.
    (A FIFO at the GIF's path, a file vaecli names itself, is refused before training: test_own_files.)"""
    import vaecli.commands.train

    real, writes = vaecli.commands.train.write_atomic, []

    def counting(path, payload, **kwargs):
        if str(path).endswith("-evolution.gif"):
            writes.append(path)
        return real(path, payload, **kwargs)

    monkeypatch.setattr(vaecli.commands.train, "write_atomic", counting)  # as the command looks it up
    result = cli("train", *RECIPE, *SIX_STEPS, "--epochs", "3", "-q", "--snapshots", "-o", "run.safetensors")
    assert result.exit_code == 0, result.stderr
    assert len(writes) == 1
    assert Image.open(tmp_path / "run-evolution.gif").n_frames == len(FIRST_EPOCH_POINTS) + 3


def test_a_resumed_run_starts_a_new_gif(cli, tmp_path):
    """As the README says: the frames of the resumed epochs only (none from inside the first epoch)."""
    first = cli("train", *RECIPE, *SIX_STEPS, "--epochs", "1", "-q", "--snapshots", "-o", "run.safetensors")
    assert first.exit_code == 0, first.stderr
    assert Image.open(tmp_path / "run-evolution.gif").n_frames == len(FIRST_EPOCH_POINTS) + 1
    resumed = cli("train", "--resume", "run.safetensors", "--epochs", "3", "-q", "--snapshots")
    assert resumed.exit_code == 0, resumed.stderr
    assert Image.open(tmp_path / "run-evolution.gif").n_frames == 2
