"""Bad input never crashes or loses work; numerical faults stop cleanly; concurrent writers never corrupt.

The bad-input tests are tables: a command that reads a checkpoint, an image or a number joins by adding
one row to CHECKPOINT_READERS, IMAGE_READERS, UNWRITABLE or BAD_NUMBERS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaecli.checkpoint import load_checkpoint, read_metadata
from vaecli.errors import CheckpointError, InputError

from cli_checks import IMAGE_FAULT_MESSAGES, SENTINEL, assert_untouched, keep_outputs, one_error_line
from safetensors_bytes import edit_metadata

BAD = "bad.safetensors"
# Arguments that make any training run tiny; commands add their own.
TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "4", "--batch-size", "64", "--limit", "128",
        "--device", "cpu", "--no-report", "-q"]


# --- helpers -------------------------------------------------------------------------------------------


def fill(args: list[str], **values: object) -> list[str]:
    """Replace {C}, {M}, {I}... placeholders in a command line."""
    out = []
    for arg in args:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", str(value))
        out.append(arg)
    return out


def set_fields(**changes: object):
    """An edit for edit_metadata: set config fields, e.g. set_fields(**{"model.latent_dim": 10**9})."""

    def edit(meta: dict) -> None:
        for where, value in changes.items():
            *parents, last = where.split(".")
            node = meta if where == "format_version" else meta["config"]
            for key in parents:
                node = node[key]
            node[last] = value

    return edit


def foreign_safetensors() -> bytes:
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3, 3)}, "foreign.tmp", metadata={"framework": "not vaecli"})
    data = Path("foreign.tmp").read_bytes()
    Path("foreign.tmp").unlink()
    return data


def flip_header_bytes(raw: bytes) -> bytes:
    out = bytearray(raw)
    for index in range(12, 40):
        out[index] ^= 0xA5
    return bytes(out)


# --- bad checkpoints -----------------------------------------------------------------------------------

# name -> (bytes of the bad file from the good one's bytes, or None for no file; words the error must hold).
CHECKPOINT_FAULTS = {
    "missing": (None, "no such checkpoint"),
    "folder": ("folder", "is a folder"),
    "empty": (lambda raw: b"", "empty"),
    "five_bytes": (lambda raw: raw[:5], "truncated"),
    "half": (lambda raw: raw[: len(raw) // 2], "truncated"),
    "header_cut": (lambda raw: raw[:300], "truncated"),
    "header_flipped": (flip_header_bytes, "not a readable checkpoint"),
    "foreign": (lambda raw: foreign_safetensors(), "not a vaecli checkpoint"),
    "bad_json": (lambda raw: edit_metadata(raw, lambda m: '{"format_version": 1, "config": {'), "not valid JSON"),
    "json_list": (lambda raw: edit_metadata(raw, lambda m: "[1, 2]"), "not a JSON object"),
    "unknown_arch": (lambda raw: edit_metadata(raw, set_fields(**{"model.arch": "transformer"})), "transformer"),
    "huge_latent": (lambda raw: edit_metadata(raw, set_fields(**{"model.latent_dim": 10**9})), "latent"),
    "huge_image": (
        lambda raw: edit_metadata(raw, set_fields(**{"model.height": 100_000, "model.width": 100_000})), "image"
    ),
    "string_number": (lambda raw: edit_metadata(raw, set_fields(**{"model.latent_dim": "4"})), "latent_dim"),
    "newer_format": (lambda raw: edit_metadata(raw, set_fields(format_version=99)), "newer"),
}
ABSURD = ("huge_latent", "huge_image")

# Commands that read a checkpoint: arguments ({C} is the checkpoint) and outputs that must survive.
CHECKPOINT_READERS = {
    "info": (["info", "{C}"], []),
    "train-resume": (["train", "--resume", "{C}", "--epochs", "5", "-o", "out.safetensors", "--no-report", "--force"],
                     ["out.safetensors"]),
}


def make_bad_checkpoint(fault: str, good: Path, path: Path) -> None:
    maker = CHECKPOINT_FAULTS[fault][0]
    if maker == "folder":
        path.mkdir()
    elif maker is not None:
        path.write_bytes(maker(good.read_bytes()))


def forbid_building(monkeypatch) -> None:
    """Absurd sizes must be refused from the metadata, before any model exists."""

    def build_model(config):
        raise AssertionError(f"build_model called for {config}")

    monkeypatch.setattr("vaecli.models.build_model", build_model)


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
@pytest.mark.parametrize("command", list(CHECKPOINT_READERS))
def test_bad_checkpoint_fails_in_one_line(cli, tiny_model, monkeypatch, tmp_path, command, fault):
    make_bad_checkpoint(fault, tiny_model, tmp_path / BAD)
    before = (tmp_path / BAD).read_bytes() if (tmp_path / BAD).is_file() else None
    args, outputs = CHECKPOINT_READERS[command]
    kept = keep_outputs(".", outputs)
    if fault in ABSURD:
        forbid_building(monkeypatch)
    started = time.perf_counter()
    result = cli(*fill(args, C=BAD))
    assert time.perf_counter() - started < 10
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = one_error_line(result)
    assert BAD in line and CHECKPOINT_FAULTS[fault][1] in line, line
    assert_untouched(kept)
    if before is not None:
        assert (tmp_path / BAD).read_bytes() == before, "the bad checkpoint itself was changed"


LOADERS = {
    "load_checkpoint": lambda path: load_checkpoint(path, training_state=True),
    "read_metadata": read_metadata,
}


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_checkpoint_loaders_raise_checkpoint_error(tiny_model, monkeypatch, tmp_path, loader, fault):
    make_bad_checkpoint(fault, tiny_model, tmp_path / BAD)
    if fault in ABSURD:
        forbid_building(monkeypatch)
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as caught:
        LOADERS[loader](tmp_path / BAD)
    assert time.perf_counter() - started < 5
    message = caught.value.message
    assert BAD in message and CHECKPOINT_FAULTS[fault][1] in message, message
    assert "\n" not in message


def test_weights_that_do_not_fit_the_declared_model_are_refused_unallocated(tiny_model, tmp_path, monkeypatch):
    """Sizes each within their limits can still declare a ~50 GB model: the header's shapes refuse it."""
    import torch

    import vaecli.models

    big = set_fields(**{"model.arch": "mlp", "model.channels": 3, "model.height": 1024, "model.width": 1024,
                        "model.hidden": 4096})
    (tmp_path / BAD).write_bytes(edit_metadata(tiny_model.read_bytes(), big))
    real = vaecli.models.build_model
    devices = []

    def build_model(config):
        devices.append(torch.empty(0).device.type)
        return real(config)

    monkeypatch.setattr(vaecli.models, "build_model", build_model)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / BAD)
    assert devices and set(devices) == {"meta"}, devices


# --- bad images ----------------------------------------------------------------------------------------


def stroke(mode: str = "L", size: tuple[int, int] = (28, 28)) -> Image.Image:
    """A light vertical stroke on black in the given Pillow mode."""
    array = np.zeros(size[::-1], dtype=np.uint8)
    array[size[1] // 5 : -size[1] // 5, size[0] // 2 - 2 : size[0] // 2 + 2] = 255
    if mode == "I;16":
        return Image.fromarray(array.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(array.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(array.astype(np.float32))
    return Image.fromarray(array).convert(mode)


def make_bad_image(fault: str, path: Path, monkeypatch) -> None:
    if fault == "folder":
        path.mkdir()
    elif fault == "empty":
        path.write_bytes(b"")
    elif fault == "text":
        path.write_text("a shopping list, not a picture\n")
    elif fault == "truncated":
        # Noise compresses badly, so half the file cuts through the pixel data itself.
        noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(noise).save("whole.png")
        path.write_bytes(Path("whole.png").read_bytes()[:400])
        Path("whole.png").unlink()
    elif fault in ("bomb", "bomb_warning"):
        # Over the limit a warning, over twice the limit an error: both must refuse.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        stroke(size=(300, 300) if fault == "bomb" else (40, 40)).save(path)


IMAGE_FAULTS = {**IMAGE_FAULT_MESSAGES, "bomb_warning": "safety limit"}
CONTENT_FAULTS = ("empty", "text", "truncated", "bomb", "bomb_warning")  # faults a file in a folder can have

# Commands that read images: arguments ({I} the bad image, {D} a folder holding it and a good one),
# outputs that must survive, and the faults that apply.
IMAGE_READERS = {
    "train-folder": (["train", *TINY[2:], "--dataset", "{D}", "--epochs", "1", "--force"], ["vae.safetensors"],
                     CONTENT_FAULTS),
}


@pytest.mark.parametrize("fault", list(IMAGE_FAULTS))
def test_open_image_raises_input_error(tmp_path, monkeypatch, fault):
    from vaecli.images import image_to_tensor, open_image

    path = tmp_path / "bad.png"
    make_bad_image(fault, path, monkeypatch)
    with pytest.raises(InputError) as caught:
        image_to_tensor(open_image(path), 1, 28, 28)
    message = caught.value.message
    assert "bad.png" in message and IMAGE_FAULTS[fault] in message, message


@pytest.mark.parametrize(
    ("command", "fault"), [(c, f) for c, (_, _, faults) in IMAGE_READERS.items() for f in faults]
)
def test_bad_image_fails_in_one_line(cli, monkeypatch, tmp_path, command, fault):
    folder = tmp_path / "pictures"
    folder.mkdir()
    stroke().save(folder / "good.png")
    make_bad_image(fault, folder / "bad.png", monkeypatch)
    args, outputs, _ = IMAGE_READERS[command]
    kept = keep_outputs(".", outputs)
    result = cli(*fill(args, I=folder / "bad.png", D=folder))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = one_error_line(result)
    assert "bad.png" in line and IMAGE_FAULTS[fault] in line, line
    assert_untouched(kept)


@pytest.mark.parametrize(("mode", "fmt"), [
    ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("1", "PNG"),
    ("CMYK", "JPEG"), ("RGB", "JPEG"),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_unusual_image_modes_are_converted(tmp_path, mode, fmt, channels):
    from vaecli.images import image_to_tensor, open_image

    path = tmp_path / f"odd.{fmt.lower()}"
    stroke(mode).save(path, format=fmt)
    image = open_image(path)
    assert image.mode == mode or (mode == "I" and image.mode.startswith("I")), image.mode
    pixels = image_to_tensor(image, channels, 28, 28)
    assert pixels.dtype.is_floating_point is False and tuple(pixels.shape) == (channels, 28, 28)
    # The stroke stays light and the background dark, whatever the mode's depth or palette.
    assert int(pixels[:, 14, 14].min()) > 200 and int(pixels[:, 1, 1].max()) < 40


# --- outputs that cannot be written --------------------------------------------------------------------

# Each writes under `blocker`, a regular file: no one, not even root, can create a path below it.
UNWRITABLE = {
    "train-out": ["train", *TINY, "--epochs", "1", "-o", "blocker/x.safetensors"],
    "train-out-deep": ["train", *TINY, "--epochs", "1", "-o", "blocker/sub/x.safetensors"],
    "train-report": ["train", *TINY[:-2], "--epochs", "1", "--report", "blocker/report", "--force"],
    "train-resume-out": ["train", "--resume", "{M}", "--epochs", "3", "-o", "blocker/x.safetensors"],
}


@pytest.mark.parametrize("args", list(UNWRITABLE.values()), ids=list(UNWRITABLE))
def test_unwritable_output_fails_before_any_work(cli, tiny_model, monkeypatch, args):
    import vaecli.train

    def fit(*args, **kwargs):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(vaecli.train, "fit", fit)
    Path("blocker").write_bytes(SENTINEL)
    kept = keep_outputs(".", ["vae.safetensors"])
    result = cli(*fill(args, M=tiny_model))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert "blocker" in line and ("--out" in line or "--report" in line), line
    assert Path("blocker").read_bytes() == SENTINEL
    assert_untouched(kept)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_fails_before_any_work(cli, monkeypatch, tmp_path):
    import vaecli.train

    monkeypatch.setattr(vaecli.train, "fit", lambda *a, **k: pytest.fail("training started"))
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = cli("train", *TINY, "--epochs", "1", "-o", folder / "x.safetensors")
    finally:
        folder.chmod(0o700)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "locked" in one_error_line(result)


# --- option values -------------------------------------------------------------------------------------

BAD_NUMBERS = [
    (["train", "--dataset", "digits", "--epochs", "0"], "--epochs"),
    (["train", "--dataset", "digits", "--epochs", "-2"], "--epochs"),
    (["train", "--resume", "{M}", "--epochs", "0"], "--epochs"),
    (["train", "--resume", "{M}", "--epochs", "-1"], "--epochs"),
    (["train", "--dataset", "digits", "--batch-size", "0"], "--batch-size"),
    (["train", "--dataset", "digits", "--batch-size", "-8"], "--batch-size"),
    (["train", "--dataset", "digits", "--latent-dim", "0"], "--latent-dim"),
    (["train", "--dataset", "digits", "--latent-dim", "-4"], "--latent-dim"),
    (["train", "--dataset", "digits", "--lr", "0"], "--lr"),
    (["train", "--dataset", "digits", "--lr", "-0.001"], "--lr"),
    (["train", "--dataset", "digits", "--lr", "nan"], "--lr"),
    (["train", "--dataset", "digits", "--lr", "inf"], "--lr"),
    (["train", "--dataset", "digits", "--beta", "inf"], "--beta"),
]


@pytest.mark.parametrize(("args", "option"), BAD_NUMBERS, ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_zero_negative_or_non_finite_numbers_are_refused(cli, tiny_model, args, option):
    kept = keep_outputs(".", ["vae.safetensors"])
    result = cli(*fill(args, M=tiny_model))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert option in one_error_line(result)
    assert_untouched(kept)


def test_unknown_dataset_lists_the_valid_names(cli):
    from vaecli.data import DATASET_NAMES

    kept = keep_outputs(".", ["vae.safetensors"])
    result = cli("train", "--dataset", "cifar-11")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert "cifar-11" in line and all(name in line for name in DATASET_NAMES), line
    assert_untouched(kept)


# --- tracebacks only on request ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["info", BAD], ["train", "--resume", BAD]], ids=["info", "train-resume"])
def test_traceback_only_with_debug(cli, args):
    Path(BAD).write_bytes(b"\0" * 4)
    plain = cli(*args)
    assert plain.exit_code == 2
    one_error_line(plain)
    for debug in (cli("--debug", *args), cli(*args, env={"VAE_DEBUG": "1"})):
        assert debug.exit_code == 2
        assert "Traceback" in debug.stderr and "CheckpointError" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1].startswith(f"error: {BAD}")
    one_error_line(cli(*args))  # --debug does not stick to the next in-process call


# --- numerical faults ----------------------------------------------------------------------------------


def test_non_finite_loss_stops_naming_epoch_step_and_lr(cli, monkeypatch, tmp_path):
    """A learning rate far too high from epoch 2 on: the loss turns non-finite at its second step."""
    import vaecli.train

    real = vaecli.train.learning_rate
    monkeypatch.setattr(vaecli.train, "learning_rate",
                        lambda c, progress: 1e30 if progress >= 0.5 else real(c, progress))
    result = cli("train", *TINY, "--epochs", "2", "-o", "run.safetensors")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = one_error_line(result)
    assert "epoch 2, step 2" in line and "--lr" in line and ("nan" in line or "inf" in line), line
    kept = load_checkpoint(tmp_path / "run.safetensors")  # it refuses NaN weights, so these are good
    assert kept.epochs_done == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_non_finite_weights_after_an_epoch_keep_the_last_good_checkpoint(cli, monkeypatch, tmp_path):
    """An infinite step on the last batch of epoch 2 leaves a finite loss but inf weights: not saved."""
    import vaecli.train

    real = vaecli.train.learning_rate
    # 128 images, 64 a batch, 2 epochs: four steps, the last at progress 3/4.
    monkeypatch.setattr(vaecli.train, "learning_rate",
                        lambda c, progress: float("inf") if progress >= 0.75 else real(c, progress))
    result = cli("train", *TINY, "--epochs", "2", "-o", "run.safetensors")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert "epoch 2" in line and "--lr" in line, line
    assert load_checkpoint(tmp_path / "run.safetensors").epochs_done == 1


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_encoder_log_variance_is_bounded(arch):
    import torch

    class Extreme(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raw = torch.tensor([[1e30] * 4, [-1e30] * 4])
            return torch.cat([torch.zeros(2, 4), raw], dim=1)  # (B, 2 * latent): mu, then raw logvar

    from vaecli.config import ModelConfig
    from vaecli.models import LOGVAR_BOUND, build_model, reparameterize
    from vaecli.objective import kl_to_standard_normal

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, latent_dim=4, hidden=8)).eval()
    x = torch.full((2, 1, 28, 28), 1e4)
    x[1] = -1e4
    with torch.no_grad():
        mu, logvar = model.encode(x)
        assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()
        assert logvar.abs().max() <= LOGVAR_BOUND
        # Whatever the network's last layer says, exp(logvar) stays finite and positive.
        model.encoder = Extreme()
        mu, logvar = model.encode(x)
        variance = torch.exp(logvar)
        assert torch.isfinite(variance).all() and (variance > 0).all()
        z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
        assert torch.isfinite(z).all() and torch.isfinite(kl_to_standard_normal(mu, logvar)).all()


# --- concurrency ---------------------------------------------------------------------------------------


def test_two_trainings_writing_the_same_out_leave_a_whole_checkpoint(tmp_path):
    out = tmp_path / "shared.safetensors"
    env = {**os.environ, "VAE_OFFLINE": "1", "NO_COLOR": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-m", "vaecli", "train", *TINY, "--limit", "64", "--epochs", "3",
                          "--seed", str(seed), "-o", str(out), "--force"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for seed in (1, 2)
    ]
    loads = 0
    while any(p.poll() is None for p in processes):
        if out.exists():  # meanwhile, this process reads whatever is there
            load_checkpoint(out)
            loads += 1
        time.sleep(0.05)
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr.decode()
        assert stdout.decode() == f"{out}\n"
    checkpoint = load_checkpoint(out, training_state=True)
    assert checkpoint.epochs_done == 3 and checkpoint.config.seed in (1, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["shared.safetensors"], "temporary files were left"


WRITER = """
import sys, time
from pathlib import Path
from vaecli.files import write_atomic
payload = Path(sys.argv[2]).read_bytes()
stop = time.monotonic() + float(sys.argv[3])
count = 0
while time.monotonic() < stop:
    write_atomic(Path(sys.argv[1]), payload)
    count += 1
print(count)
"""


def test_atomic_writes_from_two_processes_never_show_a_partial_file(tiny_model, tmp_path):
    """Two writers replace the file with different checkpoints over and over; every read sees one whole."""
    import torch

    from vaecli.checkpoint import build_metadata, save_checkpoint
    from vaecli.config import ModelConfig, TrainConfig
    from vaecli.models import build_model

    # A second checkpoint of another architecture, so a load mixing the two files cannot pass.
    config = TrainConfig(model=ModelConfig(arch="mlp", latent_dim=3, hidden=16), dataset="digits", epochs=1)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "other.safetensors", build_model(config.model), build_metadata(config, epochs_done=0))
    payloads = {tiny_model.read_bytes(): "cnn", (tmp_path / "other.safetensors").read_bytes(): "mlp"}
    target = tmp_path / "target.safetensors"
    target.write_bytes(tiny_model.read_bytes())
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(source), "3"], stdout=subprocess.PIPE)
        for source in (tiny_model, tmp_path / "other.safetensors")
    ]
    seen = {"cnn": 0, "mlp": 0}
    while any(w.poll() is None for w in writers):
        checkpoint = load_checkpoint(target)
        seen[checkpoint.config.model.arch] += 1
        assert target.read_bytes() in payloads
    counts = [int(w.communicate()[0]) for w in writers]
    assert all(w.returncode == 0 for w in writers)
    assert min(counts) > 1, counts
    assert sum(seen.values()) > 5, seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.safetensors", "target.safetensors"]
