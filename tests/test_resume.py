"""Interrupted training: clean exits on SIGINT/SIGTERM, bit-exact resumption, writes that survive SIGKILL."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaecli.store.checkpoint import load_checkpoint

from tests.helpers.signals import default_signals

# Tiny runs on CPU: three steps an epoch (96 images, 32 a batch), bit-exact there.
RECIPE = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "4", "--batch-size", "32", "--limit", "96",
          "--device", "cpu", "--no-report"]
COSINE_3 = [*RECIPE, "--lr-schedule", "cosine", "--epochs", "3", "--seed", "5"]
# Run in a child: the real CLI, with each training step slowed by 0.5 s (numbers unchanged), so that
# a signal sent once epoch 1 is saved lands in the middle of the run even on a busy machine (at 0.15 s,
# the last two epochs took 1 s and a loaded machine once let the run finish first).
SLOW_CLI = """
import sys, time
import vaecli.training.loop
real = vaecli.training.loop.to_pixels
def slow(batch):
    time.sleep(0.5)
    return real(batch)
vaecli.training.loop.to_pixels = slow
from vaecli.cli import main
main()
"""


def assert_same_training_state(a: Path, b: Path) -> None:
    """Weights, Adam moments, RNG state and epoch count of two checkpoints are bit-identical."""
    first, second = (load_checkpoint(p, training_state=True) for p in (a, b))
    assert first.epochs_done == second.epochs_done
    weights, others = first.model.state_dict(), second.model.state_dict()
    assert weights.keys() == others.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, others[name]), f"weight {name} differs"
    assert first.optimizer_state.keys() == second.optimizer_state.keys() and first.optimizer_state
    for key, value in first.optimizer_state.items():
        assert torch.equal(value, second.optimizer_state[key]), f"optimizer state {key} differs"
    assert torch.equal(first.rng_state, second.rng_state)
    assert first.training_weights.keys() == second.training_weights.keys()  # with --ema: the raw weights
    for name, tensor in first.training_weights.items():
        assert torch.equal(tensor, second.training_weights[name]), f"training weight {name} differs"


def assert_resume_matches_a_straight_run(cli, tmp_path: Path, recipe: list[str]) -> None:
    """1 epoch then --resume to 3 gives the state of 3 epochs straight (a constant learning rate: the
    schedule of a 1-epoch run is the first epoch of a 3-epoch one)."""
    constant = [*recipe, "--lr-schedule", "constant"]
    assert cli("train", *constant, "--epochs", "3", "-o", "straight.safetensors").exit_code == 0
    assert cli("train", *constant, "--epochs", "1", "-o", "split.safetensors").exit_code == 0
    resumed = cli("train", "--resume", "split.safetensors", "--epochs", "3", "-q", "--no-report")
    assert resumed.exit_code == 0, resumed.stderr
    assert_same_training_state(tmp_path / "straight.safetensors", tmp_path / "split.safetensors")


@pytest.mark.slow
def test_resume_with_more_epochs_equals_a_straight_run(cli, tmp_path):
    recipe = [*RECIPE, "-q", "--lr-schedule", "constant"]
    assert cli("train", *recipe, "--epochs", "4", "-o", "straight.safetensors").exit_code == 0
    assert cli("train", *recipe, "--epochs", "2", "-o", "split.safetensors").exit_code == 0
    result = cli("train", "--resume", "split.safetensors", "--epochs", "4", "--no-report", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "split.safetensors\n" and result.stderr == ""
    assert_same_training_state(tmp_path / "straight.safetensors", tmp_path / "split.safetensors")
    resumed = load_checkpoint(tmp_path / "split.safetensors")
    assert [record["epoch"] for record in resumed.meta["history"]] == [1, 2, 3, 4]
    assert resumed.config.epochs == 4


def test_an_extended_run_records_the_recipe_that_repeats_it(cli, tmp_path, monkeypatch):
    # The cosine schedule depends on the total: 1 epoch then --epochs 3 is not `vae train --epochs 3`.
    assert cli("train", *COSINE_3[:-4], "--epochs", "1", "--seed", "5", "-q", "-o", "run.safetensors").exit_code == 0
    assert load_checkpoint(tmp_path / "run.safetensors").meta.get("recipe") is None
    for total in ("2", "3"):
        result = cli("train", "--resume", "run.safetensors", "--epochs", total, "-q", "--no-report")
        assert result.exit_code == 0, result.stderr
    steps = load_checkpoint(tmp_path / "run.safetensors").meta["recipe"]
    assert steps[0].startswith("vae train ") and " --epochs 1 " in steps[0] and steps[0].endswith(" -o run.safetensors")
    assert steps[1:] == [f"vae train --resume run.safetensors --epochs {n} -o run.safetensors" for n in (2, 3)]
    assert "recipe step 3" in cli("info", "run.safetensors").stdout

    # The recipe, run as written in another folder, gives the very same state.
    again = tmp_path / "again"
    again.mkdir()
    monkeypatch.chdir(again)
    for step in steps:
        assert cli(*shlex.split(step)[1:], "-q", "--no-report").exit_code == 0
    assert_same_training_state(tmp_path / "run.safetensors", again / "run.safetensors")


def test_a_run_resumed_at_the_same_total_adds_no_step(cli, tmp_path):
    from tests.helpers.safetensors_bytes import edit_metadata

    assert cli("train", *COSINE_3[:-4], "--epochs", "1", "-q", "-o", "run.safetensors").exit_code == 0
    assert cli("train", "--resume", "run.safetensors", "--epochs", "3", "-q", "--no-report").exit_code == 0
    before = load_checkpoint(tmp_path / "run.safetensors").meta["recipe"]

    def interrupted_after_epoch_2(meta: dict) -> None:
        meta["history"], meta["epochs_done"] = meta["history"][:2], 2

    path = tmp_path / "run.safetensors"
    path.write_bytes(edit_metadata(path.read_bytes(), interrupted_after_epoch_2))
    assert cli("train", "--resume", "run.safetensors", "-q", "--no-report").exit_code == 0
    assert load_checkpoint(path).meta["recipe"] == before


def test_resume_help_explains_the_cosine_schedule():
    import typer.main

    from vaecli.cli import app

    train = typer.main.get_command(app).commands["train"]
    (resume,) = [p for p in train.params if p.name == "resume"]
    assert "cosine" in resume.help and "--epochs" in resume.help, resume.help


@pytest.fixture(scope="module")
def straight_cosine(tmp_path_factory) -> Path:
    """The uninterrupted 3-epoch cosine run that interrupted ones must reproduce."""
    from typer.testing import CliRunner

    from vaecli.cli import app

    out = tmp_path_factory.mktemp("straight") / "straight.safetensors"
    result = CliRunner().invoke(app, ["train", *COSINE_3, "-q", "-o", str(out)], env={"VAE_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"])
def test_signal_keeps_the_last_epoch_and_resume_finishes_the_same_run(cli, tmp_path, straight_cosine, signum, code):
    out = tmp_path / "run.safetensors"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, "train", *COSINE_3, "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        env={**os.environ, "VAE_OFFLINE": "1", "NO_COLOR": "1"}, preexec_fn=default_signals,
    )
    try:
        deadline = time.monotonic() + 90
        while not out.exists():  # epoch 1 is saved
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "no checkpoint after 90 s"
            time.sleep(0.01)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = stderr.decode()
    assert process.returncode == code, text
    assert stdout == b"" and "Traceback" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("error: interrupted"), text
    assert f"Resume with: vae train --resume {out}" in last, last
    # The file holds the last complete epoch, whole, with its training state, and the message says which.
    checkpoint = load_checkpoint(out, training_state=True)
    assert 1 <= checkpoint.epochs_done < 3, text
    assert f"holds epoch {checkpoint.epochs_done}." in last, last
    # Each epoch line is printed just after its save, so the signal may fall between the two.
    reported = re.findall(r"^epoch +\d+/3", text, flags=re.MULTILINE)
    assert checkpoint.epochs_done - 1 <= len(reported) <= checkpoint.epochs_done, text
    assert len(checkpoint.meta["history"]) == checkpoint.epochs_done
    assert checkpoint.optimizer_state and checkpoint.rng_state is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"], "temporary files were left"

    result = cli("train", "--resume", out, "--no-report", "-q")  # no --epochs: the run's own total
    assert result.exit_code == 0, result.stderr
    assert_same_training_state(straight_cosine, out)


@pytest.mark.slow
@pytest.mark.parametrize(("interrupted_save", "expected"), [
    (1, "interrupted during epoch 1; nothing new was saved"),
    (2, "interrupted during epoch 2; run.safetensors holds epoch 1. Resume with: vae train --resume run.safetensors"),
])
def test_ctrl_c_during_a_save_reports_what_is_on_disk(cli, monkeypatch, tmp_path, interrupted_save, expected):
    """The message names the epoch in the file, not the one in memory that was being written."""
    import vaecli.training.loop

    real, calls = vaecli.training.loop.save_checkpoint, []

    def save(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == interrupted_save:
            raise KeyboardInterrupt
        real(path, *args, **kwargs)

    monkeypatch.setattr(vaecli.training.loop, "save_checkpoint", save)
    Path("run.safetensors").write_bytes(b"an earlier run")
    result = cli("train", *RECIPE, "-q", "--epochs", "3", "-o", "run.safetensors", "--force")
    assert result.exit_code == 130, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {expected}"]
    if interrupted_save == 1:
        assert Path("run.safetensors").read_bytes() == b"an earlier run"
    else:
        assert load_checkpoint(tmp_path / "run.safetensors").epochs_done == 1


# A child that replaces `target` with new bytes in 64 kB pieces and stops halfway, to be killed there.
SLOW_WRITER = """
import os, sys, time
from pathlib import Path
import vaecli.store.files

class Slow:
    def __init__(self, handle):
        self.handle = handle
    def write(self, data):
        for start in range(0, len(data), 65536):
            self.handle.write(data[start:start + 65536])
            if start >= len(data) // 2:
                self.handle.flush()
                print("halfway", flush=True)
                time.sleep(600)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)
    def __getattr__(self, name):
        return getattr(self.handle, name)

real_fdopen = os.fdopen
vaecli.store.files.os.fdopen = lambda fd, mode: Slow(real_fdopen(fd, mode))
vaecli.store.files.write_atomic(Path(sys.argv[1]), Path(sys.argv[2]).read_bytes())
print("done", flush=True)
"""


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_file(tiny_model, tmp_path):
    from vaecli.config import ModelConfig, TrainConfig
    from vaecli.model.networks import build_model
    from vaecli.store.checkpoint import build_metadata, save_checkpoint

    target = tmp_path / "model.safetensors"
    target.write_bytes(tiny_model.read_bytes())
    old = target.read_bytes()
    config = TrainConfig(model=ModelConfig(arch="mlp", latent_dim=3, hidden=64), dataset="digits", epochs=1)
    save_checkpoint(tmp_path / "new.bin", build_model(config.model), build_metadata(config, epochs_done=0))
    process = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target), str(tmp_path / "new.bin")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"halfway\n", process.communicate()[1].decode()
        partial = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(partial) == 1 and 0 < partial[0].stat().st_size < len((tmp_path / "new.bin").read_bytes())
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert target.read_bytes() == old, "the target was replaced by a partial write"
    assert load_checkpoint(target).config.model.arch == "cnn"
    # The partial write stays in its hidden temporary file, never under the target's name.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["model.safetensors",
                                                                                       "new.bin"]


def _with_rng_state(source: Path, target: Path, state: torch.Tensor) -> None:
    """A copy of the checkpoint whose saved random-number state is `state` (another device's, or damaged)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(source, "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        metadata = handle.metadata()
    tensors["rng.train"] = state
    save_file(tensors, target, metadata=metadata)


def test_a_run_saved_on_a_gpu_goes_on_on_the_cpu_repeatably(cli, tmp_path):
    assert cli("train", *RECIPE, "-q", "--epochs", "1", "-o", "cpu.safetensors").exit_code == 0
    cuda_state = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)  # seed, offset
    for name in ("a.safetensors", "b.safetensors"):
        _with_rng_state(tmp_path / "cpu.safetensors", tmp_path / name, cuda_state)
        result = cli("train", "--resume", name, "--epochs", "2", "--no-report")
        assert result.exit_code == 0, result.stderr
        assert "saved on another kind of device than cpu" in result.stderr
    # Seeded from the saved state: the same file resumed twice trains the same.
    a, b = (load_checkpoint(tmp_path / name, training_state=True) for name in ("a.safetensors", "b.safetensors"))
    assert all(torch.equal(w, b.model.state_dict()[k]) for k, w in a.model.state_dict().items())
    assert torch.equal(a.rng_state, b.rng_state) and a.rng_state.numel() != cuda_state.numel()


def test_a_random_state_of_no_known_size_is_refused(cli, tmp_path):
    assert cli("train", *RECIPE, "-q", "--epochs", "1", "-o", "cpu.safetensors").exit_code == 0
    _with_rng_state(tmp_path / "cpu.safetensors", tmp_path / "odd.safetensors", torch.zeros(100, dtype=torch.uint8))
    result = cli("train", "--resume", "odd.safetensors", "--epochs", "2", "-q", "--no-report")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "fits neither a CPU nor a CUDA generator" in result.stderr
