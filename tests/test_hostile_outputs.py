"""Hostile outputs and streams (issue 13): special files, atomic writes, sizes before work, stdout, pipes."""

from __future__ import annotations

import errno
import io
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.cli_checks import SENTINEL, assert_untouched, keep_outputs, one_error_line
from tests.helpers.images import digit

VAE = [sys.executable, "-m", "vaecli"]


def _shell(command: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run a bash command line with `vae` as this interpreter's module, as a user's shell would."""
    env = {**os.environ, "VAE_OFFLINE": "1"}
    vae = " ".join(shlex.quote(part) for part in VAE)
    return subprocess.run(["bash", "-c", f"vae() {{ {vae} \"$@\"; }}\n{command}"], cwd=tmp_path, env=env,
                          capture_output=True, timeout=120)


# --- class 1: an existing special file is written through, never replaced -------------------------------


def _char_device(path: Path) -> Path:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the null device
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["project", "--dataset", "digits", "--limit", "40", "-o", "{T}"],
        ["sample", "-n", "4", "--grid", "{T}"],
        ["encode", "d.png", "-o", "{T}"],
        ["interpolate", "d.png", "d.png", "-o", "{T}"],
        ["train", "--dataset", "digits", "--limit", "64", "--epochs", "1", "--hidden", "4", "-q", "-o", "{T}"],
    ],
    ids=["project", "sample", "encode", "interpolate", "train"],
)
def test_a_device_node_given_as_output_stays_a_device(cli, tiny_model, tmp_path, args):
    device = _char_device(tmp_path / "n")
    digit(tmp_path / "d.png", value=200)
    model = [] if args[0] == "train" else ["-m", tiny_model]
    result = cli(*[a.replace("{T}", str(device)) for a in args], *model)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(os.stat(device).st_mode), "the device node was replaced by a regular file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "n"], "something was written beside it"


def test_a_fifo_given_as_output_is_written_through(cli, tiny_model, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = cli("sample", "-n", "4", "--grid", fifo, "-m", tiny_model)
    reader.join(30)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert Image.open(io.BytesIO(received[0])).size[0] > 0


def test_a_symlink_output_keeps_the_link_and_replaces_its_target(cli, tiny_model, tmp_path):
    target = tmp_path / "real.png"
    target.write_bytes(SENTINEL)
    (tmp_path / "link.png").symlink_to(target)
    result = cli("sample", "-n", "4", "--grid", "link.png", "-m", tiny_model)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "link.png").is_symlink()
    assert target.read_bytes().startswith(b"\x89PNG")


# --- class 2: every file output goes through one atomic path --------------------------------------------

ATOMIC_CASES = {
    "sample-grid": (["sample", "-n", "4", "--grid", "out.png"], ["out.png"]),
    "sample-files": (["sample", "-n", "2", "-o", "dir", "--force"], ["dir/sample-0001.png"]),
    "decode": (["decode", "codes.npy", "--grid", "out.png"], ["out.png"]),
    "reconstruct": (["reconstruct", "d.png", "-o", "dir"], ["dir/recon-d.png"]),
    "compare": (["reconstruct", "d.png", "--compare", "out.png"], ["out.png"]),
    "strip": (["interpolate", "d.png", "d.png", "-o", "out.png"], ["out.png"]),
    "frames": (["interpolate", "d.png", "d.png", "--frames", "dir"], ["dir/frame-0001.png"]),
    "gif": (["interpolate", "d.png", "d.png", "--gif", "out.gif"], ["out.gif"]),
    "encode": (["encode", "d.png", "-o", "out.npy"], ["out.npy"]),
    "project": (["project", "--dataset", "digits", "--limit", "40", "-o", "out.png"], ["out.png"]),
    "tour": (["tour", "-o", "dir"], ["dir/latent.png"]),
}


@pytest.mark.parametrize("case", list(ATOMIC_CASES))
def test_a_full_disk_leaves_earlier_outputs_whole_and_no_partial_files(cli, tiny_model, tmp_path, monkeypatch, case):
    args, outputs = ATOMIC_CASES[case]
    digit(tmp_path / "d.png", value=200)
    np.save(tmp_path / "codes.npy", np.zeros((2, 4), np.float32))
    kept = keep_outputs(tmp_path, outputs)
    before = {p for p in tmp_path.rglob("*")}

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("vaecli.store.files.os.fsync", full_disk)
    result = cli(*args, "-m", tiny_model, "-q")
    assert result.exit_code == 2, result.stderr
    assert "No space left on device".lower() in one_error_line(result).lower()
    assert_untouched(kept)
    left = {p for p in tmp_path.rglob("*")} - before
    assert not left, f"left behind: {sorted(map(str, left))}"


# --- class 4: sizes are checked before the work, and per-image outputs stream ---------------------------


def test_a_grid_too_large_is_refused_before_anything_is_decoded(cli, tiny_model, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("decoded before the size was checked")

    monkeypatch.setattr("vaecli.analysis.latent.decode_to_pixels", never)
    result = cli("sample", "-n", "1000000", "--grid", "g.png", "-m", tiny_model)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "-n 1000000" in line and "too large" in line and "images fit" in line
    assert not Path("g.png").exists()


def test_sample_writes_each_batch_before_drawing_the_next(cli, tiny_model, monkeypatch):
    import vaecli.analysis.latent as latent

    monkeypatch.setattr(latent, "BATCH_SIZE", 8)
    written_when_decoding = []
    real = latent.decode_to_pixels

    def spy(model, z, *draws):
        written_when_decoding.append(len(list(Path("out").glob("*.png"))) if Path("out").exists() else 0)
        return real(model, z, *draws)

    monkeypatch.setattr(latent, "decode_to_pixels", spy)
    result = cli("sample", "-n", "20", "-o", "out", "-m", tiny_model)
    assert result.exit_code == 0, result.stderr
    assert written_when_decoding == [0, 8, 16]
    assert len(result.stdout.splitlines()) == 20


def test_sample_in_batches_draws_the_same_images_as_one_draw(cli, tiny_model, monkeypatch):
    assert cli("sample", "-n", "20", "--grid", "one.png", "-m", tiny_model, "--seed", "9").exit_code == 0
    monkeypatch.setattr("vaecli.analysis.latent.BATCH_SIZE", 3)
    assert cli("sample", "-n", "20", "--grid", "many.png", "-m", tiny_model, "--seed", "9").exit_code == 0
    assert Path("one.png").read_bytes() == Path("many.png").read_bytes()


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (_npy_header((10**12, 4)), "more than one run decodes"),
        (_npy_header((3, 4)) + b"\0" * 20, "truncated"),
        (b"\x93NUMPY\x01\x00\xff\xff{'descr'", "not a readable .npy"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4}\n", "not a readable .npy"),
    ],
    ids=["huge-shape", "truncated", "header-cut", "header-garbage"],
)
def test_npy_headers_are_checked_before_memory_is_committed(cli, tiny_model, tmp_path, payload, expected):
    (tmp_path / "z.npy").write_bytes(payload)
    result = cli("decode", "z.npy", "-m", tiny_model, "--grid", "g.png")
    assert result.exit_code == 2
    assert expected in one_error_line(result)


@pytest.mark.slow
def test_decode_of_an_endless_device_stops_at_once(tiny_model, tmp_path):
    result = _shell(f"vae decode -m {tiny_model} /dev/zero -o out; echo rc=$?; "
                    f"vae decode -m {tiny_model} -o out < /dev/zero; echo rc=$?", tmp_path)
    assert result.stdout.decode().split() == ["rc=2", "rc=2"], result.stderr
    assert result.stderr.decode().count("not a .npy file") == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval", "--dataset", "digits", "--decode-rows", "100000000"], "--decode-rows must be between"),
        (["eval", "--dataset", "digits", "--iw-samples", "1000000000"], "--iw-samples must be between"),
        (["fit-prior", "--samples", "100000", "--limit", "10"], "--samples must be between"),
    ],
)
def test_counts_without_a_sensible_bound_are_refused(cli, tiny_model, args, expected):
    result = cli(*args, "-m", tiny_model)
    assert result.exit_code == 2
    assert expected in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--dataset", "digits", "--arch", "mlp", "--image-size", "1024", "--hidden", "16384",
          "--epochs", "1", "--limit", "64"], "lower --batch-size, --image-size or --hidden"),
        (["eval", "-m", "{M}", "--dataset", "digits", "--limit", "4", "--decode-rows", "1000000"],
         "lower --decode-rows"),
        (["fit-prior", "-m", "{M}", "--components", "4000", "--samples", "1000"],
         "lower --components, --samples or --limit"),
    ],
    ids=["train", "eval", "fit-prior"],
)
def test_runs_that_cannot_fit_in_memory_are_refused_before_they_start(cli, tiny_model, monkeypatch, args, expected):
    monkeypatch.setattr("vaecli.runtime.memory.available_bytes", lambda device=None: 2 << 30)
    result = cli(*[str(tiny_model) if a == "{M}" else a for a in args])
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "needs about" in line and expected in line
    assert not Path("vae.safetensors").exists()


# --- class 5: stdout closed or full, names too long, seeds out of range, unconvertible images -----------


@pytest.mark.slow
def test_stdout_full_or_closed_is_one_line_and_exit_2(tiny_model, tmp_path):
    result = _shell(f"vae sample -m {tiny_model} -q -o - > /dev/full; echo rc=$? >&2; "
                    f"vae info {tiny_model} >&-; echo rc=$? >&2", tmp_path)
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith("error: cannot write to stdout (No space left on device)"), lines
    assert lines[1:] == ["rc=2", lines[2], "rc=2"] and lines[2].startswith("error: stdout is closed"), lines


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--grid", "{L}.png"],
        ["sample", "-o", "{L}"],
        ["encode", "d.png", "-o", "{L}.npy"],
        ["project", "--dataset", "digits", "-o", "{L}.png"],
        ["reconstruct", "d.png", "--compare", "{L}.png"],
        ["train", "--dataset", "digits", "-o", "{L}.safetensors"],
        ["info", "{L}.safetensors"],
        ["reconstruct", "{L}.png"],
    ],
)
def test_names_over_255_bytes_are_one_line(cli, tiny_model, tmp_path, args):
    digit(tmp_path / "d.png", value=200)
    long_name = "x" * 300
    model = ["-m", tiny_model] if args[0] not in ("train", "info") else []
    result = cli(*[a.replace("{L}", long_name) for a in args], *model)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "255" in line or "too long" in line, line


@pytest.mark.parametrize("command", [["sample", "--grid", "g.png"], ["eval", "--dataset", "digits"],
                                     ["train", "--dataset", "digits"], ["fit-prior"]])
@pytest.mark.parametrize("seed", [str(2**64), str(-(2**63) - 1), str(10**30)])
def test_seeds_outside_64_bits_are_refused(cli, tiny_model, command, seed):
    model = [] if command[0] == "train" else ["-m", tiny_model]
    result = cli(*command, "--seed", seed, *model)
    assert result.exit_code == 2
    assert "--seed" in one_error_line(result)


def test_an_image_mode_pillow_cannot_convert_is_one_line(cli, tiny_model, tmp_path):
    Image.new("LAB", (28, 28)).save(tmp_path / "lab.tif")
    result = cli("reconstruct", "lab.tif", "-m", tiny_model)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "lab.tif" in line and "LAB" in line and "cannot be converted" in line


# --- class 7: text from files reaches the terminal clean ------------------------------------------------


def test_user_text_is_not_rewritten_by_markup_emoji_or_escapes(cli, tiny_model):
    for name in ["digit:smile:.png", "[bold]x[/bold].png", "a\x1b]0;owned\x07b.png"]:
        result = cli("reconstruct", name, "-m", tiny_model)
        line = one_error_line(result)
        assert "\x1b" not in line and "\x07" not in line
        shown = name.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
        assert line.startswith(f"error: {shown}: no such file"), line


def test_info_shows_escape_sequences_in_metadata_instead_of_replaying_them(cli, tiny_model, tmp_path):
    from tests.helpers.safetensors_bytes import edit_metadata

    def plant(meta):
        meta["command"] = "vae train \x1b]0;owned\x07\x1b[2J:smile: [red]x[/red]"
        meta.pop("recipe", None)

    (tmp_path / "m.safetensors").write_bytes(edit_metadata(tiny_model.read_bytes(), plant))
    result = cli("info", "m.safetensors")
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;owned\\x07\\x1b[2J:smile: [red]x[/red]" in result.stdout.replace("\n", "")


# --- class 8: pipes and special files as inputs, a reader that goes away, concatenated arrays -----------


@pytest.mark.slow
def test_images_from_dev_stdin_process_substitution_and_fifos_are_read(tiny_model, tmp_path):
    digit(tmp_path / "d.png", value=200)
    os.mkfifo(tmp_path / "fifo.png")
    result = _shell(
        f"cat d.png | vae reconstruct /dev/stdin -m {tiny_model} -o a && "
        f"vae reconstruct <(cat d.png) -m {tiny_model} -o b && "
        f"(cat d.png > fifo.png &) && vae reconstruct fifo.png -m {tiny_model} -o c",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr.decode()
    written = result.stdout.decode().split()
    assert len(written) == 3
    for path in written:
        assert Image.open(tmp_path / path).size == (28, 28)


def test_a_fifo_with_no_writer_is_refused_instead_of_blocking(cli, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr("vaecli.store.files.PIPE_WRITER_WAIT_S", 0.2)
    os.mkfifo(tmp_path / "fifo.png")
    result = cli("reconstruct", "fifo.png", "-m", tiny_model)
    assert result.exit_code == 2
    assert "no program writes to" in one_error_line(result)


@pytest.mark.slow
def test_a_reader_that_goes_away_ends_quietly_with_the_sigpipe_status(tiny_model, tmp_path):
    result = _shell(f"vae sample -m {tiny_model} -q -n 400 -o out | head -1; echo rc=${{PIPESTATUS[0]}}; "
                    f"vae sample -m {tiny_model} -q -n 400 --scale 4 -o - | head -c 1 > /dev/null; "
                    "echo rc=${PIPESTATUS[0]}", tmp_path)
    out = result.stdout.decode().split()
    assert out == ["out/sample-0001.png", "rc=141", "rc=141"], (out, result.stderr)
    assert result.stderr == b""


def test_concatenated_npy_arrays_on_stdin_are_all_read(cli, tiny_model):
    streams = io.BytesIO()
    np.save(streams, np.zeros((2, 4), np.float32))
    np.save(streams, np.ones((3, 4), np.float64))
    result = cli("decode", "-m", tiny_model, "-o", "out", input=streams.getvalue())
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5
    streams.write(b"\x93NUMPY garbage")
    result = cli("decode", "-m", tiny_model, "-o", "again", input=streams.getvalue())
    assert result.exit_code == 2
    assert "stdin" in one_error_line(result)
    assert not Path("again").exists() or not any(Path("again").iterdir())


def test_a_model_whose_checkpoints_no_reader_accepts_is_refused_before_training(cli, monkeypatch):
    monkeypatch.setattr("vaecli.store.safetensors_file.MAX_CHECKPOINT_BYTES", 1 << 20)
    result = cli("train", "--dataset", "digits", "--arch", "mlp", "--hidden", "512", "--epochs", "1",
                 "--limit", "64")
    assert result.exit_code == 2
    assert "checkpoints, more than vae reads" in one_error_line(result)
    assert not Path("vae.safetensors").exists()


def test_negative_seeds_that_torch_accepts_still_train_and_load(cli):
    result = cli("train", "--dataset", "digits", "--seed", "-5", "--epochs", "1", "--limit", "64", "--hidden", "4",
                 "-q", "--no-report")
    assert result.exit_code == 0, result.stderr
    assert cli("sample", "-m", "vae.safetensors", "--grid", "g.png").exit_code == 0


# --- issue 30: nothing is created before every input is checked; replaced files keep their permissions ----


@pytest.mark.parametrize(
    ("args", "made"),
    [
        (["sample", "-m", "{C}", "--label", "99", "-n", "2", "-o", "out/a/b"], "out"),
        (["sample", "-m", "{M}", "--label", "3", "-n", "2", "-o", "out"], "out"),
        (["decode", "bad.npy", "-m", "{M}", "-o", "out"], "out"),
        (["reconstruct", "missing.png", "-m", "{M}", "-o", "out"], "out"),
        (["interpolate", "d.png", "missing.png", "-m", "{M}", "--frames", "frames"], "frames"),
        (["tour", "-m", "{M}", "--dataset", "nosuch", "-o", "tour"], "tour"),
        (["train", "--resume", "done.safetensors", "--report", "report"], "report"),
    ],
    ids=["sample-label-of-no-class", "sample-label-unconditional", "decode", "reconstruct", "interpolate-frames",
         "tour", "train-report"],
)
def test_no_output_folder_is_made_when_a_later_check_fails(cli, tiny_model, tiny_conditional, tmp_path, args, made):
    digit(tmp_path / "d.png")
    (tmp_path / "bad.npy").write_bytes(b"not a numpy file")
    shutil.copy(tiny_model, tmp_path / "done.safetensors")  # trained to its total: resuming it is refused
    before = sorted(tmp_path.iterdir())
    result = cli(*[a.replace("{M}", str(tiny_model)).replace("{C}", str(tiny_conditional)) for a in args])
    assert result.exit_code == 2, result.stderr
    one_error_line(result)
    assert not (tmp_path / made).exists()
    assert sorted(tmp_path.iterdir()) == before


def test_an_output_folder_is_still_refused_where_it_cannot_be_made(cli, tiny_model, tmp_path):
    (tmp_path / "file").write_bytes(SENTINEL)
    result = cli("sample", "-m", tiny_model, "-n", "2", "-o", "file/out")
    assert result.exit_code == 2
    assert one_error_line(result) == "error: -o file/out: file is not a folder; choose another path"
    result = cli("sample", "-m", tiny_model, "-n", "2", "-o", "file")
    assert one_error_line(result) == "error: -o file: exists and is not a folder; choose another output folder"
    assert (tmp_path / "file").read_bytes() == SENTINEL


def test_a_replaced_output_keeps_its_permissions_and_a_new_one_gets_the_umask(cli, tiny_model, tmp_path):
    private = tmp_path / "private.png"
    private.write_bytes(SENTINEL)
    private.chmod(0o600)
    os.symlink(private.name, tmp_path / "link.png")
    for target in ("private.png", "link.png", "new.png"):
        result = cli("sample", "-m", tiny_model, "-n", "2", "--grid", target)
        assert result.exit_code == 0, result.stderr
    assert private.read_bytes() != SENTINEL and stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / "link.png").is_symlink()
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "new.png").stat().st_mode) == 0o666 & ~mask


def test_a_private_checkpoint_stays_private_when_training_goes_on(cli, tmp_path):
    recipe = ["--dataset", "digits", "--arch", "mlp", "--hidden", "8", "--latent-dim", "3", "--limit", "64",
              "--device", "cpu", "--no-report", "-q"]
    assert cli("train", *recipe, "--epochs", "1", "-o", "m.safetensors").exit_code == 0
    (tmp_path / "m.safetensors").chmod(0o600)
    result = cli("train", "--resume", "m.safetensors", "--epochs", "2", "--no-report", "-q")
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "-m", "{M}", "-n", "2", "--grid", "NAME/"],
        ["project", "-m", "{M}", "--dataset", "digits", "--limit", "40", "-o", "NAME/"],
        ["encode", "d.png", "-m", "{M}", "-o", "NAME/"],
        ["traverse", "-m", "{M}", "--limit", "8", "--gif", "NAME/"],
        ["train", "--dataset", "digits", "--limit", "64", "--epochs", "1", "--hidden", "4", "-q", "-o", "NAME/"],
    ],
    ids=["sample-grid", "project", "encode", "traverse-gif", "train"],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing-file"])
def test_a_file_output_given_with_a_trailing_slash_is_refused(cli, tiny_model, tmp_path, args, existing):
    digit(tmp_path / "d.png")
    if existing:
        (tmp_path / "NAME").write_bytes(SENTINEL)
    result = cli(*[a.replace("{M}", str(tiny_model)) for a in args])
    assert result.exit_code == 2
    line = one_error_line(result)
    assert line.endswith(" NAME/: ends in /, as a folder's name does; give a file name (no / at the end)"), line
    if existing:
        assert (tmp_path / "NAME").read_bytes() == SENTINEL
    else:
        assert not (tmp_path / "NAME").exists()
