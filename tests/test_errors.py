"""Bad input, for every command that reads it: exit 2, one line naming the culprit, outputs untouched."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import typer.testing
from PIL import Image

from cli_checks import IMAGE_FAULT_MESSAGES, SENTINEL, assert_untouched, keep_outputs, one_error_line
from safetensors_bytes import edit_metadata

BAD = "bad.safetensors"
DATASETS = "mnist, fashion-mnist, kmnist, digits"

# Every command that reads a checkpoint: (name, args with {C} for the checkpoint, outputs made beforehand).
CHECKPOINT_READERS = {
    "info": (["info", "{C}"], []),
    "sample": (["sample", "-m", "{C}", "--grid", "out.png"], ["out.png"]),
    "reconstruct": (["reconstruct", "d.png", "-m", "{C}", "--compare", "out.png"], ["out.png"]),
    "interpolate": (["interpolate", "d.png", "d.png", "-m", "{C}", "-o", "out.png"], ["out.png"]),
    "encode": (["encode", "d.png", "-m", "{C}", "-o", "out.npy"], ["out.npy"]),
    "decode": (["decode", "codes.npy", "-m", "{C}", "--grid", "out.png"], ["out.png"]),
    "eval": (["eval", "-m", "{C}", "--dataset", "digits", "--limit", "8", "-k", "2"], []),
    "project": (["project", "-m", "{C}", "--dataset", "digits", "-o", "out.png"], ["out.png"]),
    "tour": (["tour", "-m", "{C}", "-o", "tourdir"], ["tourdir/latent.png"]),
    "train": (["train", "--resume", "{C}", "-o", "out.safetensors", "--no-report", "--force"], ["out.safetensors"]),
}


# --- helpers -------------------------------------------------------------------------------------------




def with_metadata(source: Path, edit) -> bytes:
    """The bytes of `source` with its vaecli metadata (a dict, or its raw JSON text) edited."""
    return edit_metadata(Path(source).read_bytes(), edit)


def _set(meta: dict, *pairs) -> None:
    for where, value in pairs:
        *path, last = where.split(".")
        node = meta
        for key in path:
            node = node[key]
        node[last] = value


def make_bad_checkpoint(kind: str, tiny: Path, target: Path) -> None:
    raw = tiny.read_bytes()
    if kind == "missing":
        return
    if kind == "folder":
        target.mkdir()
        return
    payloads = {
        "empty": lambda: b"",
        "short": lambda: raw[:5],
        "truncated": lambda: raw[: len(raw) // 2],
        "header_cut": lambda: raw[:200],
        "flipped": lambda: raw[:20] + bytes(b ^ 0xFF for b in raw[20:40]) + raw[40:],
        "foreign": _foreign_safetensors,
        "bad_json": lambda: with_metadata(tiny, lambda m: '{"format_version": 1, "config": ['),
        "unknown_arch": lambda: with_metadata(tiny, lambda m: _set(m, ("config.model.arch", "transformer"))),
        "huge_latent": lambda: with_metadata(tiny, lambda m: _set(m, ("config.model.latent_dim", 10**9))),
        "huge_image": lambda: with_metadata(
            tiny, lambda m: _set(m, ("config.model.height", 10**6), ("config.model.width", 10**6))
        ),
        # Every size within its limit, but the model it declares would need ~200 GB.
        "oversized_model": lambda: with_metadata(tiny, lambda m: _set(
            m, ("config.model.arch", "mlp"), ("config.model.channels", 3), ("config.model.height", 1024),
            ("config.model.width", 1024), ("config.model.hidden", 16384),
        )),
        "newer": lambda: with_metadata(tiny, lambda m: _set(m, ("format_version", 99))),
        "no_version": lambda: with_metadata(tiny, lambda m: m.pop("format_version")),
    }
    target.write_bytes(payloads[kind]())


def _foreign_safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"weight": torch.zeros(3, 3)}, metadata={"framework": "something else"})


def digit(path: Path, mode: str = "L", fmt: str = "PNG") -> Path:
    """A 28x28 light-on-dark stroke in the given Pillow mode."""
    array = np.zeros((28, 28), dtype=np.uint8)
    array[6:22, 12:16] = 255
    image = Image.fromarray(array)
    if mode == "I;16":
        image = Image.fromarray(array.astype(np.uint16) * 257)  # uint16 gives mode I;16
    elif mode != "L":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


@pytest.fixture
def inputs(tmp_path):
    """An image and a .npy of codes for the commands that need them beside the checkpoint."""
    digit(tmp_path / "d.png")
    np.save(tmp_path / "codes.npy", np.zeros((2, 4), dtype=np.float32))
    return tmp_path


# --- checkpoints ---------------------------------------------------------------------------------------

CHECKPOINT_FAULTS = {
    "missing": "no such checkpoint",
    "folder": "is a folder",
    "empty": "empty or truncated",
    "short": "empty or truncated",
    "truncated": "truncated",
    "header_cut": "truncated",
    "flipped": "not a readable checkpoint",
    "foreign": "not a vaecli checkpoint",
    "bad_json": "not valid JSON",
    "unknown_arch": "unknown architecture",
    "huge_latent": "latent dimension",
    "huge_image": "image height",
    "oversized_model": "do not match",
    "newer": "newer vaecli",
    "no_version": "no format version",
}


@pytest.mark.parametrize("command", list(CHECKPOINT_READERS))
@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
def test_bad_checkpoints_fail_in_one_line(cli, tiny_model, inputs, monkeypatch, command, fault):
    if command == "info" and fault == "oversized_model":
        pytest.skip("info reads the metadata only; the weights' shapes are checked when loading")
    bad = inputs / BAD
    make_bad_checkpoint(fault, tiny_model, bad)
    before = bad.read_bytes() if bad.is_file() else None
    args, outputs = CHECKPOINT_READERS[command]
    kept = keep_outputs(inputs, outputs)
    if fault in ("huge_latent", "huge_image"):
        # Refused from the metadata alone, before any model is built.
        def no_build(config):
            raise AssertionError("build_model called for an absurd config")

        monkeypatch.setattr("vaecli.models.build_model", no_build)
    started = time.perf_counter()
    result = cli(*[a.replace("{C}", BAD) for a in args])
    assert time.perf_counter() - started < 10
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = one_error_line(result)
    assert BAD in line and CHECKPOINT_FAULTS[fault] in line, line
    assert_untouched(kept)
    if before is not None:
        assert bad.read_bytes() == before


def test_absurd_model_is_refused_before_allocating(tiny_model, tmp_path, monkeypatch):
    """Declared shapes are compared with the file on the meta device, never with real weights."""
    import torch

    import vaecli.models
    from vaecli.checkpoint import load_checkpoint
    from vaecli.errors import CheckpointError

    make_bad_checkpoint("oversized_model", tiny_model, tmp_path / BAD)
    real_build = vaecli.models.build_model
    devices = []

    def build_and_record(config):
        devices.append(torch.empty(0).device.type)  # the default device where the model would live
        return real_build(config)

    monkeypatch.setattr(vaecli.models, "build_model", build_and_record)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / BAD)
    assert time.perf_counter() - started < 5
    assert devices == ["meta"]


# --- images --------------------------------------------------------------------------------------------

IMAGE_READERS = {
    "reconstruct": (["reconstruct", "{I}", "-m", "{M}", "--compare", "out.png"], ["out.png"]),
    "encode": (["encode", "{I}", "-m", "{M}", "-o", "out.npy"], ["out.npy"]),
    "interpolate": (["interpolate", "d.png", "{I}", "-m", "{M}", "-o", "out.png"], ["out.png"]),
}
IMAGE_FAULTS = IMAGE_FAULT_MESSAGES


def make_bad_image(kind: str, root: Path, name: str) -> None:
    path = root / name
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("a shopping list, not a picture\n")
    elif kind == "truncated":
        digit(root / "whole.png")
        path.write_bytes((root / "whole.png").read_bytes()[:60])
    elif kind == "bomb":
        Image.new("L", (300, 300)).save(path)


@pytest.mark.parametrize("command", list(IMAGE_READERS))
@pytest.mark.parametrize("fault", list(IMAGE_FAULTS))
def test_bad_images_fail_in_one_line(cli, tiny_model, inputs, monkeypatch, command, fault):
    make_bad_image(fault, inputs, "bad.png")
    if fault == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    args, outputs = IMAGE_READERS[command]
    kept = keep_outputs(inputs, outputs)
    result = cli(*[a.replace("{I}", "bad.png").replace("{M}", str(tiny_model)) for a in args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = one_error_line(result)
    assert "bad.png" in line and IMAGE_FAULTS[fault] in line, line
    assert_untouched(kept)


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"),
                                           ("LA", "PNG"), ("1", "PNG")])
def test_unusual_image_modes_are_converted(cli, tiny_model, tmp_path, mode, fmt):
    name = f"odd.{fmt.lower()}"
    digit(tmp_path / name, mode, fmt)
    assert Image.open(tmp_path / name).mode == mode
    result = cli("reconstruct", name, "-m", tiny_model, "-o", "out", "--invert", "no")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "out/recon-odd.png\n"
    assert Image.open(tmp_path / "out/recon-odd.png").size == (28, 28)


def test_sixteen_bit_image_is_scaled_not_clipped(tmp_path):
    from vaecli.images import image_to_tensor, open_image

    digit(tmp_path / "deep.png", "I;16")
    pixels = image_to_tensor(open_image(tmp_path / "deep.png"), 1, 28, 28)
    assert int(pixels.max()) == 255 and int(pixels.min()) == 0


# --- outputs -------------------------------------------------------------------------------------------

UNWRITABLE = [
    ["sample", "-m", "{M}", "-o", "blocker/sub"],
    ["sample", "-m", "{M}", "--grid", "blocker/grid.png"],
    ["decode", "codes.npy", "-m", "{M}", "-o", "blocker/sub"],
    ["reconstruct", "d.png", "-m", "{M}", "-o", "blocker/sub"],
    ["reconstruct", "d.png", "-m", "{M}", "--compare", "blocker/c.png"],
    ["interpolate", "d.png", "d.png", "-m", "{M}", "-o", "blocker/strip.png"],
    ["interpolate", "d.png", "d.png", "-m", "{M}", "--frames", "blocker/frames"],
    ["interpolate", "d.png", "d.png", "-m", "{M}", "--gif", "blocker/a.gif"],
    ["encode", "d.png", "-m", "{M}", "-o", "blocker/codes.npy"],
    ["project", "-m", "{M}", "--dataset", "digits", "--limit", "30", "-o", "blocker/p.png"],
    ["project", "-m", "{M}", "--dataset", "digits", "--limit", "30", "--points", "blocker/p.csv"],
    ["tour", "-m", "{M}", "-o", "blocker/tour"],
    ["train", "--dataset", "digits", "--epochs", "1", "-o", "blocker/x.safetensors"],
    ["train", "--resume", "{M}", "--epochs", "9", "-o", "blocker/x.safetensors"],
]


@pytest.mark.parametrize("args", UNWRITABLE, ids=lambda a: "-".join(a[:1] + a[-2:-1]))
def test_unwritable_output_is_one_line(cli, tiny_model, inputs, args):
    # A path under a regular file cannot be created even by root.
    (inputs / "blocker").write_bytes(SENTINEL)
    kept = keep_outputs(inputs, ["latent.png"])
    started = time.perf_counter()
    result = cli(*[a.replace("{M}", str(tiny_model)) for a in args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert "blocker" in line, line
    assert (inputs / "blocker").read_bytes() == SENTINEL
    assert_untouched(kept)
    assert time.perf_counter() - started < 5, "the output should be checked before the work"


BINARY_TO_STDOUT = [
    ["sample", "-m", "{M}", "-o", "-"],
    ["decode", "codes.npy", "-m", "{M}", "-o", "-"],
    ["reconstruct", "d.png", "-m", "{M}", "--compare", "-"],
    ["interpolate", "d.png", "d.png", "-m", "{M}", "-o", "-"],
    ["encode", "d.png", "-m", "{M}"],
    ["project", "-m", "{M}", "-o", "-"],
]


@pytest.mark.parametrize("args", BINARY_TO_STDOUT, ids=lambda a: a[0])
def test_binary_output_to_a_terminal_is_refused(cli, tiny_model, inputs, monkeypatch, args):
    monkeypatch.setattr(typer.testing._NamedTextIOWrapper, "isatty", lambda self: self.name == "<stdout>",
                        raising=False)
    result = cli(*[a.replace("{M}", str(tiny_model)) for a in args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = one_error_line(result)
    assert "terminal" in line and "-" in line, line


# --- option values -------------------------------------------------------------------------------------

BAD_NUMBERS = [
    (["sample", "-m", "{M}", "-n", "0"], "--count"),
    (["sample", "-m", "{M}", "-n", "-3"], "--count"),
    (["interpolate", "d.png", "d.png", "-m", "{M}", "--steps", "0"], "--steps"),
    (["interpolate", "d.png", "d.png", "-m", "{M}", "--steps", "-1"], "--steps"),
    (["train", "--dataset", "digits", "--epochs", "0"], "--epochs"),
    (["train", "--dataset", "digits", "--epochs", "-2"], "--epochs"),
    (["train", "--resume", "{M}", "--epochs", "0"], "--epochs"),
    (["train", "--dataset", "digits", "--batch-size", "0"], "--batch-size"),
    (["train", "--dataset", "digits", "--batch-size", "-8"], "--batch-size"),
    (["train", "--dataset", "digits", "--latent-dim", "0"], "--latent-dim"),
    (["train", "--dataset", "digits", "--latent-dim", "-4"], "--latent-dim"),
    (["train", "--dataset", "digits", "--lr", "0"], "--lr"),
    (["train", "--dataset", "digits", "--lr", "-0.001"], "--lr"),
    (["train", "--dataset", "digits", "--lr", "nan"], "--lr"),
    (["train", "--dataset", "digits", "--limit", "0"], "--limit"),
    (["eval", "-m", "{M}", "--iw-samples", "0"], "--iw-samples"),
    (["eval", "-m", "{M}", "--iw-samples", "-5"], "--iw-samples"),
    (["eval", "-m", "{M}", "--limit", "0"], "--limit"),
    (["project", "-m", "{M}", "--limit", "-1"], "--limit"),
]


@pytest.mark.parametrize(("args", "option"), BAD_NUMBERS, ids=lambda v: v if isinstance(v, str) else v[0])
def test_zero_or_negative_numbers_are_refused(cli, tiny_model, inputs, args, option):
    kept = keep_outputs(inputs, ["vae.safetensors", "interpolation.png", "latent.png"])
    result = cli(*[a.replace("{M}", str(tiny_model)) for a in args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert option in one_error_line(result)
    assert_untouched(kept)


@pytest.mark.parametrize("args", [
    ["train", "--dataset", "nope"],
    ["eval", "-m", "{M}", "--dataset", "nope"],
    ["project", "-m", "{M}", "--dataset", "nope"],
], ids=lambda a: a[0])
def test_unknown_dataset_lists_the_valid_names(cli, tiny_model, args):
    result = cli(*[a.replace("{M}", str(tiny_model)) for a in args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert "'nope'" in line and DATASETS in line, line


# --- tracebacks only on request ------------------------------------------------------------------------


def test_debug_flag_and_env_show_the_traceback_only_when_asked(cli):
    plain = cli("info", "missing.safetensors")
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    debug = cli("--debug", "info", "missing.safetensors")
    assert debug.exit_code == 2
    assert "Traceback" in debug.stderr and "CheckpointError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: missing.safetensors")
    env = cli("info", "missing.safetensors", env={"VAE_DEBUG": "1"})
    assert env.exit_code == 2 and "Traceback" in env.stderr
    # Neither leaks into the next invocation of the same process.
    again = cli("info", "missing.safetensors")
    assert "Traceback" not in again.stderr
    one_error_line(again)
