"""Bad input, for every command that reads it: exit 2, one line naming the culprit, every file left as it was.

One table, CASES: a command joins by adding rows (a reader of checkpoints to CHECKPOINT_READERS, of images
to IMAGE_READERS, an output to UNWRITABLE...). The library's own refusals and the cases that need their own
set-up follow the table.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import typer.testing
from PIL import Image

from vaecli.data.datasets import DATASET_NAMES
from vaecli.errors import CheckpointError, InputError
from vaecli.store.checkpoint import load_checkpoint, read_metadata

from tests.helpers.cli_checks import assert_untouched, fill, keep_outputs, one_error_line
from tests.helpers.images import digit, stroke
from tests.helpers.probes import forbid_real_work, model_builds
from tests.helpers.safetensors_bytes import edit_metadata

BAD = "bad.safetensors"
DATASETS = "mnist, fashion-mnist, kmnist, digits"
# Arguments that make any training run tiny; commands add their own.
TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "4", "--batch-size", "64", "--limit", "128",
        "--device", "cpu", "--no-report", "-q"]


@dataclass(frozen=True)
class Setup:
    """What a case's `prepare` may use: the test's folder (also the working folder) and the tiny model."""

    root: Path
    model: Path
    monkeypatch: pytest.MonkeyPatch


@dataclass(frozen=True)
class Case:
    """One bad command line: `vae ARGV` ({M} is the tiny model) fails with CODE and an error line holding WORDS."""

    id: str
    argv: tuple[str, ...]
    words: tuple[str, ...]
    prepare: Callable[[Setup], None] | None = None
    keep: tuple[str, ...] = ()  # earlier outputs (sentinel bytes) that must survive
    code: int = 2


# --- bad checkpoints -----------------------------------------------------------------------------------


def set_fields(**changes: object) -> Callable[[dict], None]:
    """An edit for edit_metadata: set config fields, e.g. set_fields(**{"model.latent_dim": 10**9})."""

    def edit(meta: dict) -> None:
        for where, value in changes.items():
            *parents, last = where.split(".")
            node = meta if where == "format_version" else meta["config"]
            for key in parents:
                node = node[key]
            node[last] = value

    return edit


def foreign_safetensors(raw: bytes) -> bytes:
    import torch
    from safetensors.torch import save

    return save({"weight": torch.zeros(3, 3)}, metadata={"framework": "not vaecli"})


def flip_header_bytes(raw: bytes) -> bytes:
    return raw[:20] + bytes(b ^ 0xFF for b in raw[20:40]) + raw[40:]


def metadata_edit(edit: Callable[[dict], object]) -> Callable[[bytes], bytes]:
    return lambda raw: edit_metadata(raw, edit)


# Every size within its limit, but the model it declares would need ~200 GB.
OVERSIZED = set_fields(**{"model.arch": "mlp", "model.channels": 3, "model.height": 1024, "model.width": 1024,
                          "model.hidden": 16384})

# name -> (the bad file's bytes from the good one's, "folder", or None for no file; words the error holds).
CHECKPOINT_FAULTS = {
    "missing": (None, ("no such checkpoint",)),
    "folder": ("folder", ("is a folder",)),
    "empty": (lambda raw: b"", ("empty or truncated",)),
    "five_bytes": (lambda raw: raw[:5], ("empty or truncated",)),
    "half": (lambda raw: raw[: len(raw) // 2], ("truncated",)),
    "header_cut": (lambda raw: raw[:200], ("truncated",)),
    "header_flipped": (flip_header_bytes, ("not a readable checkpoint",)),
    "foreign": (foreign_safetensors, ("not a vaecli checkpoint",)),
    "bad_json": (metadata_edit(lambda m: '{"format_version": 1, "config": ['), ("not valid JSON",)),
    "json_list": (metadata_edit(lambda m: "[1, 2]"), ("not a JSON object",)),
    "unknown_arch": (metadata_edit(set_fields(**{"model.arch": "transformer"})),
                     ("unknown architecture", "transformer")),
    "huge_latent": (metadata_edit(set_fields(**{"model.latent_dim": 10**9})), ("latent dimension",)),
    "huge_image": (metadata_edit(set_fields(**{"model.height": 10**6, "model.width": 10**6})), ("image height",)),
    "string_number": (metadata_edit(set_fields(**{"model.latent_dim": "4"})), ("latent_dim",)),
    "oversized_model": (metadata_edit(OVERSIZED), ("do not match",)),
    "newer_format": (metadata_edit(set_fields(format_version=99)), ("newer vaecli",)),
    "no_version": (metadata_edit(lambda m: m.pop("format_version")), ("no format version",)),
}
ABSURD = ("huge_latent", "huge_image")  # refused from the metadata alone, before any model is built
WEIGHT_FAULTS = ("oversized_model",)  # found when the weights are read, so not by readers of the metadata only

# Every command that reads a checkpoint: args with {C} for the checkpoint, outputs made beforehand.
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
    "train": (["train", "--resume", "{C}", "--epochs", "5", "-o", "out.safetensors", "--no-report", "--force"],
              ["out.safetensors"]),
    "fit-prior": (["fit-prior", "-m", "{C}", "--dataset", "digits", "--limit", "16", "-o", "out.safetensors"],
                  ["out.safetensors"]),
    "score": (["score", "d.png", "-m", "{C}", "-k", "2"], []),
    "ood": (["ood", "-m", "{C}", "--known", "digits", "--unusual", "digits", "--limit", "4", "-k", "2",
             "-o", "out.png"], ["out.png"]),
    "traverse": (["traverse", "-m", "{C}", "--dataset", "digits", "--limit", "8", "-o", "out.png"], ["out.png"]),
    "manifold": (["manifold", "-m", "{C}", "--dataset", "digits", "--limit", "8", "-o", "out.png"], ["out.png"]),
}
METADATA_ONLY_READERS = ("info",)


def make_bad_checkpoint(fault: str, good: Path, path: Path) -> None:
    maker = CHECKPOINT_FAULTS[fault][0]
    if maker == "folder":
        path.mkdir()
    elif maker is not None:
        path.write_bytes(maker(good.read_bytes()))


def forbid_building(monkeypatch: pytest.MonkeyPatch) -> None:
    """Absurd sizes must be refused from the metadata, before any model exists (whoever builds it)."""
    from vaecli.model.networks import MODELS

    def build_model(config):
        raise AssertionError(f"build_model called for {config}")

    for arch in list(MODELS):
        monkeypatch.setitem(MODELS, arch, build_model)


def bad_checkpoint(fault: str) -> Callable[[Setup], None]:
    def prepare(setup: Setup) -> None:
        make_bad_checkpoint(fault, setup.model, setup.root / BAD)
        forbid_real_work(setup.monkeypatch)  # the checkpoint is refused before any data is read
        if fault in ABSURD:
            forbid_building(setup.monkeypatch)

    return prepare


def fault_per_command() -> list[tuple[str, str]]:
    """(fault, command) pairs going round both lists: every command meets a fault and every fault a command.

    Each fault meets the loaders that every command calls in test_checkpoint_loaders_raise_checkpoint_error;
    end to end, one fault per command shows that the command reads through them and prints their refusal."""
    faults, commands = list(CHECKPOINT_FAULTS), list(CHECKPOINT_READERS)
    pairs = [(faults[i % len(faults)], commands[i % len(commands)]) for i in range(max(len(faults), len(commands)))]
    assert not any(command in METADATA_ONLY_READERS and fault in WEIGHT_FAULTS for fault, command in pairs)
    return pairs


def checkpoint_cases() -> list[Case]:
    return [
        Case(f"checkpoint-{fault}-{command}", tuple(fill(CHECKPOINT_READERS[command][0], C=BAD)),
             (BAD, *CHECKPOINT_FAULTS[fault][1]), bad_checkpoint(fault), tuple(CHECKPOINT_READERS[command][1]))
        for fault, command in fault_per_command()
    ]


# --- bad images ----------------------------------------------------------------------------------------

IMAGE_FAULTS = {
    "missing": "no such file",
    "folder": "is a folder",
    "empty": "empty",
    "text": "not a readable image",
    "truncated_early": "not a readable image",
    "truncated": "not a readable image",
    "bomb": "safety limit",
    "bomb_warning": "safety limit",
}
CONTENT_FAULTS = ("empty", "text", "truncated_early", "truncated", "bomb", "bomb_warning")  # a file in a folder


def make_bad_image(fault: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if fault == "folder":
        path.mkdir()
    elif fault == "empty":
        path.write_bytes(b"")
    elif fault == "text":
        path.write_text("a shopping list, not a picture\n")
    elif fault == "truncated_early":
        path.write_bytes(digit(path.with_name("whole.png")).read_bytes()[:60])
        path.with_name("whole.png").unlink()
    elif fault == "truncated":
        # Noise compresses badly, so cutting the file here cuts through the pixel data itself.
        noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(noise).save(path.with_name("whole.png"))
        path.write_bytes(path.with_name("whole.png").read_bytes()[:400])
        path.with_name("whole.png").unlink()
    elif fault in ("bomb", "bomb_warning"):
        # Over the limit a warning, over twice the limit an error: both must refuse.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        stroke(size=(300, 300) if fault == "bomb" else (40, 40)).save(path)


# Commands that read images: args ({I} the bad image, {D} a folder holding it and a good one), outputs made
# beforehand, and the faults that apply.
IMAGE_READERS = {
    "reconstruct": (["reconstruct", "{I}", "-m", "{M}", "--compare", "out.png"], ["out.png"], list(IMAGE_FAULTS)),
    "encode": (["encode", "{I}", "-m", "{M}", "-o", "out.npy"], ["out.npy"], list(IMAGE_FAULTS)),
    "interpolate": (["interpolate", "d.png", "{I}", "-m", "{M}", "-o", "out.png"], ["out.png"], list(IMAGE_FAULTS)),
    "train-folder": (["train", *TINY[2:], "--dataset", "{D}", "--epochs", "1", "--force"], ["vae.safetensors"],
                     CONTENT_FAULTS),
    "score": (["score", "{I}", "-m", "{M}", "-k", "2"], [], list(IMAGE_FAULTS)),
    "traverse": (["traverse", "{I}", "-m", "{M}", "--dataset", "digits", "--limit", "8", "-o", "out.png"],
                 ["out.png"], list(IMAGE_FAULTS)),
    "ood-folder": (["ood", "-m", "{M}", "--known", "digits", "--unusual", "{D}", "--limit", "4", "-k", "2"], [],
                   CONTENT_FAULTS),
}


def bad_image(fault: str, in_folder: bool) -> Callable[[Setup], None]:
    def prepare(setup: Setup) -> None:
        folder = setup.root / "pictures" if in_folder else setup.root
        folder.mkdir(exist_ok=True)
        if in_folder:
            stroke().save(folder / "good.png")
        make_bad_image(fault, folder / "bad.png", setup.monkeypatch)

    return prepare


def image_cases() -> list[Case]:
    return [
        Case(f"image-{fault}-{command}", tuple(fill(args, I="bad.png", D="pictures")), ("bad.png", IMAGE_FAULTS[fault]),
             bad_image(fault, "{D}" in args), tuple(outputs))
        for command, (args, outputs, faults) in IMAGE_READERS.items()
        for fault in faults
    ]


# --- outputs that cannot be written --------------------------------------------------------------------

# Each writes under `blocker`, a regular file: no one, not even root, can create a path below it.
# id -> (args, the option the error names, or None where only the path is named).
UNWRITABLE = {
    "sample-out": (["sample", "-m", "{M}", "-o", "blocker/sub"], None),
    "sample-grid": (["sample", "-m", "{M}", "--grid", "blocker/grid.png"], None),
    "decode-out": (["decode", "codes.npy", "-m", "{M}", "-o", "blocker/sub"], None),
    "reconstruct-out": (["reconstruct", "d.png", "-m", "{M}", "-o", "blocker/sub"], None),
    "reconstruct-compare": (["reconstruct", "d.png", "-m", "{M}", "--compare", "blocker/c.png"], None),
    "interpolate-out": (["interpolate", "d.png", "d.png", "-m", "{M}", "-o", "blocker/strip.png"], None),
    "interpolate-frames": (["interpolate", "d.png", "d.png", "-m", "{M}", "--frames", "blocker/frames"], None),
    "interpolate-gif": (["interpolate", "d.png", "d.png", "-m", "{M}", "--gif", "blocker/a.gif"], None),
    "encode-out": (["encode", "d.png", "-m", "{M}", "-o", "blocker/codes.npy"], None),
    "project-out": (["project", "-m", "{M}", "--dataset", "digits", "--limit", "30", "-o", "blocker/p.png"], None),
    "project-points": (["project", "-m", "{M}", "--dataset", "digits", "--limit", "30", "--points", "blocker/p.csv"],
                       None),
    "tour-out": (["tour", "-m", "{M}", "-o", "blocker/tour"], None),
    "train-out": (["train", *TINY, "--epochs", "1", "-o", "blocker/x.safetensors"], "--out"),
    "train-out-deep": (["train", *TINY, "--epochs", "1", "-o", "blocker/sub/x.safetensors"], "--out"),
    "train-report": (["train", *TINY[:-2], "--epochs", "1", "--report", "blocker/report", "--force"], "--report"),
    "train-resume-out": (["train", "--resume", "{M}", "--epochs", "9", "-o", "blocker/x.safetensors"], "--out"),
    "train-snapshots": (["train", *TINY[:-2], "--epochs", "1", "--snapshots", "--report", "blocker/r", "--force"],
                        None),
    "fit-prior-out": (["fit-prior", "-m", "{M}", "--dataset", "digits", "-o", "blocker/p.safetensors"], None),
    "ood-roc": (["ood", "-m", "{M}", "--known", "digits", "--unusual", "digits", "--limit", "4",
                 "-o", "blocker/roc.png"], None),
    "traverse-out": (["traverse", "-m", "{M}", "--dataset", "digits", "--limit", "8", "-o", "blocker/t.png"], None),
    "traverse-gif": (["traverse", "-m", "{M}", "--dataset", "digits", "--limit", "8", "--gif", "blocker/t.gif"],
                     None),
    "manifold-out": (["manifold", "-m", "{M}", "--dataset", "digits", "--limit", "8", "-o", "blocker/m.png"], None),
    "tour-html": (["tour", "-m", "{M}", "--html", "-o", "blocker/tour"], None),
}


def output_checked_first(setup: Setup) -> None:
    forbid_real_work(setup.monkeypatch)  # no data read and no training before the output is checked


def unwritable_cases() -> list[Case]:
    return [
        Case(f"unwritable-{name}", tuple(args), ("blocker",) + ((option,) if option else ()), output_checked_first,
             ("blocker", "latent.png", "vae.safetensors"))
        for name, (args, option) in UNWRITABLE.items()
    ]


# --- binary data to a terminal -------------------------------------------------------------------------

BINARY_TO_STDOUT = [
    ["sample", "-m", "{M}", "-o", "-"],
    ["decode", "codes.npy", "-m", "{M}", "-o", "-"],
    ["reconstruct", "d.png", "-m", "{M}", "--compare", "-"],
    ["interpolate", "d.png", "d.png", "-m", "{M}", "-o", "-"],
    ["encode", "d.png", "-m", "{M}"],
    ["project", "-m", "{M}", "-o", "-"],
    ["traverse", "-m", "{M}", "--dataset", "digits", "--limit", "8", "-o", "-"],
    ["manifold", "-m", "{M}", "--dataset", "digits", "--limit", "8", "-o", "-"],
]


def stdout_is_a_terminal(setup: Setup) -> None:
    setup.monkeypatch.setattr(typer.testing._NamedTextIOWrapper, "isatty", lambda self: self.name == "<stdout>",
                              raising=False)


def terminal_cases() -> list[Case]:
    return [Case(f"terminal-{args[0]}", tuple(args), ("terminal", "-"), stdout_is_a_terminal)
            for args in BINARY_TO_STDOUT]


# --- option values -------------------------------------------------------------------------------------

BAD_NUMBERS = [
    (["sample", "-m", "{M}", "-n", "0"], "--count"),
    (["sample", "-m", "{M}", "-n", "-3"], "--count"),
    (["interpolate", "d.png", "d.png", "-m", "{M}", "--steps", "0"], "--steps"),
    (["interpolate", "d.png", "d.png", "-m", "{M}", "--steps", "-1"], "--steps"),
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
    (["train", "--dataset", "digits", "--ema", "1"], "--ema"),
    (["train", "--dataset", "digits", "--ema", "-0.5"], "--ema"),
    (["train", "--dataset", "digits", "--ema", "nan"], "--ema"),
    (["train", "--resume", "{M}", "--epochs", "9", "--ema", "0.9"], "--ema"),
    (["train", "--dataset", "digits", "--weight-decay", "-0.1"], "--weight-decay"),
    (["train", "--dataset", "digits", "--weight-decay", "nan"], "--weight-decay"),
    (["train", "--dataset", "digits", "--weight-decay", "600"], "--weight-decay"),
    (["train", "--resume", "{M}", "--epochs", "9", "--weight-decay", "0.1"], "--weight-decay"),
    (["train", "--dataset", "digits", "--limit", "0"], "--limit"),
    (["eval", "-m", "{M}", "--iw-samples", "0"], "--iw-samples"),
    (["eval", "-m", "{M}", "--iw-samples", "-5"], "--iw-samples"),
    (["eval", "-m", "{M}", "--limit", "0"], "--limit"),
    (["project", "-m", "{M}", "--limit", "-1"], "--limit"),
    (["score", "d.png", "-m", "{M}", "--iw-samples", "0"], "--iw-samples"),
    (["score", "d.png", "-m", "{M}", "--regret-steps", "0"], "--regret-steps"),
    (["ood", "-m", "{M}", "--known", "digits", "--unusual", "digits", "--limit", "0"], "--limit"),
    (["traverse", "-m", "{M}", "--steps", "1"], "--steps"),
    (["traverse", "-m", "{M}", "--limit", "0"], "--limit"),
    (["manifold", "-m", "{M}", "--size", "1"], "--size"),
]


# --label: {C} is a conditional model of the digits' classes 0 to 9, {M} an unconditional one.
UNKNOWN_CLASS, NO_LABEL, NOT_CONDITIONAL = ("--label", "not a class of"), ("give --label",), ("not conditional",
                                                                                            "drop --label")
LABEL_COMMANDS = {
    "sample": ["sample", "-n", "2", "--seed", "1", "-o", "out"],
    "decode": ["decode", "codes.npy", "-o", "out"],
    "encode": ["encode", "d.png", "-o", "z.npy"],
    "reconstruct": ["reconstruct", "d.png", "--compare", "compare.png"],
    "interpolate": ["interpolate", "d.png", "d.png", "-o", "interpolation.png"],
}
BAD_LABELS = [
    ("{C}", ["--label", "12"], UNKNOWN_CLASS),
    ("{C}", ["--label", "cat"], UNKNOWN_CLASS),
    ("{C}", [], NO_LABEL),
    ("{M}", ["--label", "3"], NOT_CONDITIONAL),
]


# Commands whose numbers need p(x) or p(z): a conditional model is refused.
NEEDS_UNCONDITIONAL = {
    "score": ["score", "--dataset", "digits"],
    "ood": ["ood", "--known", "digits", "--unusual", "digits"],
    "fit-prior": ["fit-prior", "-o", "out.safetensors"],
}
EVAL_LABELS = [
    (["eval", "-m", "{C}", "--label", "eleven", "-k", "2"], ("--label 'eleven': not a class of",)),
    (["eval", "-m", "{M}", "--dataset", "digits", "--label", "eleven", "-k", "2"],
     ("--label 'eleven': not a class of digits", "0 to 9")),
]
KEPT = ("out/sample-0001.png", "z.npy", "compare.png", "interpolation.png", "out.png", "out.safetensors")


def label_cases() -> list[Case]:
    label_commands = {**LABEL_COMMANDS, "traverse": ["traverse", "--limit", "8", "-o", "out.png"],
                      "manifold": ["manifold", "--limit", "8", "-o", "out.png"]}
    return [
        *(Case(f"label-{name}-{'conditional' if model == '{C}' else 'plain'}-{extra[-1] if extra else 'none'}",
               (*args, "-m", model, *extra), words, keep=KEPT)
          for name, args in label_commands.items() for model, extra, words in BAD_LABELS),
        *(Case(f"conditional-refused-{name}", (*args, "-m", "{C}"), (f"`vae {name}` needs an unconditional model",),
               keep=KEPT) for name, args in NEEDS_UNCONDITIONAL.items()),
        *(Case(f"label-eval-{args[2].strip('{}')}", tuple(args), words, keep=KEPT) for args, words in EVAL_LABELS),
    ]


def number_cases() -> list[Case]:
    return [
        Case(f"number-{args[0]}{'-resume' if '--resume' in args else ''}{option}={args[-1]}", tuple(args), (option,),
             keep=("vae.safetensors", "interpolation.png", "latent.png"))
        for args, option in BAD_NUMBERS
    ]


def dataset_cases() -> list[Case]:
    """An unknown dataset name is quoted back with the list of valid ones."""
    return [
        Case(f"dataset-{args[0]}", tuple(args), ("'cifar-11'", DATASETS, *DATASET_NAMES), keep=("vae.safetensors",))
        for args in (["train", "--dataset", "cifar-11"], ["eval", "-m", "{M}", "--dataset", "cifar-11"],
                     ["project", "-m", "{M}", "--dataset", "cifar-11"])
    ]


CASES = [*checkpoint_cases(), *image_cases(), *unwritable_cases(), *terminal_cases(), *number_cases(),
         *dataset_cases(), *label_cases()]


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every file under `root` with its bytes: inputs, bad files and earlier outputs alike must survive."""
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_fails_in_one_line(cli, tiny_model, tiny_conditional, monkeypatch, tmp_path, case):
    digit(tmp_path / "d.png")  # the good inputs that commands read beside the bad one
    np.save(tmp_path / "codes.npy", np.zeros((2, 4), dtype=np.float32))
    if case.prepare is not None:
        case.prepare(Setup(tmp_path, tiny_model, monkeypatch))
    keep_outputs(tmp_path, list(case.keep))
    before = snapshot(tmp_path)
    result = cli(*fill(list(case.argv), M=tiny_model, C=tiny_conditional))
    assert result.exit_code == case.code, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = one_error_line(result)
    assert all(word in line for word in case.words), line
    assert_untouched(before)


# --- the library's own refusals ------------------------------------------------------------------------

LOADERS = {
    "load_checkpoint": lambda path: load_checkpoint(path, training_state=True),
    "read_metadata": read_metadata,
}


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_checkpoint_loaders_raise_checkpoint_error(tiny_model, monkeypatch, tmp_path, loader, fault):
    if loader == "read_metadata" and fault in WEIGHT_FAULTS:
        pytest.skip("read_metadata reads the metadata only; the weights' shapes are checked when loading")
    make_bad_checkpoint(fault, tiny_model, tmp_path / BAD)
    if fault in ABSURD:
        forbid_building(monkeypatch)
    built_on = model_builds(monkeypatch)
    with pytest.raises(CheckpointError) as caught:
        LOADERS[loader](tmp_path / BAD)
    assert set(built_on) <= {"meta"}, f"weights allocated for a bad checkpoint, on {built_on}"
    message = caught.value.message
    assert BAD in message and all(word in message for word in CHECKPOINT_FAULTS[fault][1]), message
    assert "\n" not in message


@pytest.mark.parametrize("hidden", [4096, 16384])  # a ~50 GB and a ~200 GB model, each size within its limit
def test_weights_that_do_not_fit_the_declared_model_are_refused_unallocated(tiny_model, tmp_path, monkeypatch,
                                                                           hidden):
    """Declared shapes are compared with the file's on the meta device, never with real weights."""
    (tmp_path / BAD).write_bytes(edit_metadata(tiny_model.read_bytes(), set_fields(**{
        "model.arch": "mlp", "model.channels": 3, "model.height": 1024, "model.width": 1024, "model.hidden": hidden,
    })))
    devices = model_builds(monkeypatch)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / BAD)
    assert devices == ["meta"]


@pytest.mark.parametrize("fault", list(IMAGE_FAULTS))
def test_open_image_raises_input_error(tmp_path, monkeypatch, fault):
    from vaecli.data.images import image_to_tensor, open_image

    path = tmp_path / "bad.png"
    make_bad_image(fault, path, monkeypatch)
    with pytest.raises(InputError) as caught:
        image_to_tensor(open_image(path), 1, 28, 28)
    message = caught.value.message
    assert "bad.png" in message and IMAGE_FAULTS[fault] in message, message


@pytest.mark.parametrize(("mode", "fmt"), [
    ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("1", "PNG"),
    ("CMYK", "JPEG"), ("RGB", "JPEG"),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_unusual_image_modes_are_converted(tmp_path, mode, fmt, channels):
    from vaecli.data.images import image_to_tensor, open_image

    path = tmp_path / f"odd.{fmt.lower()}"
    stroke(mode).save(path, format=fmt)
    image = open_image(path)
    assert image.mode == mode or (mode == "I" and image.mode.startswith("I")), image.mode
    pixels = image_to_tensor(image, channels, 28, 28)
    assert pixels.dtype.is_floating_point is False and tuple(pixels.shape) == (channels, 28, 28)
    # The stroke stays light and the background dark, whatever the mode's depth or palette.
    assert int(pixels[:, 14, 14].min()) > 200 and int(pixels[:, 1, 1].max()) < 40


def test_sixteen_bit_image_is_scaled_not_clipped(tmp_path):
    from vaecli.data.images import image_to_tensor, open_image

    digit(tmp_path / "deep.png", "I;16")
    pixels = image_to_tensor(open_image(tmp_path / "deep.png"), 1, 28, 28)
    assert int(pixels.max()) == 255 and int(pixels.min()) == 0


# --- cases with their own set-up -----------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"),
                                           ("LA", "PNG"), ("1", "PNG")])
def test_unusual_image_modes_reconstruct_from_the_cli(cli, tiny_model, tmp_path, mode, fmt):
    name = f"odd.{fmt.lower()}"
    digit(tmp_path / name, mode, fmt)
    assert Image.open(tmp_path / name).mode == mode
    result = cli("reconstruct", name, "-m", tiny_model, "-o", "out", "--invert", "no")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "out/recon-odd.png\n"
    assert Image.open(tmp_path / "out/recon-odd.png").size == (28, 28)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_fails_before_any_work(cli, monkeypatch, tmp_path):
    import vaecli.training.loop

    monkeypatch.setattr(vaecli.training.loop, "fit", lambda *a, **k: pytest.fail("training started"))
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = cli("train", *TINY, "--epochs", "1", "-o", folder / "x.safetensors")
    finally:
        folder.chmod(0o700)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "locked" in one_error_line(result)


# name -> (what is on disk, the command): a missing checkpoint, and a 4-byte one read by two commands.
TRACEBACK_CASES = {
    "info-missing": (None, ["info", "missing.safetensors"]),
    "info": (BAD, ["info", BAD]),
    "train-resume": (BAD, ["train", "--resume", BAD]),
}


@pytest.mark.parametrize("case", list(TRACEBACK_CASES))
def test_traceback_only_with_debug(cli, case):
    written, args = TRACEBACK_CASES[case]
    if written:
        Path(written).write_bytes(b"\0" * 4)
    plain = cli(*args)
    assert plain.exit_code == 2
    one_error_line(plain)
    for debug in (cli("--debug", *args), cli(*args, env={"VAE_DEBUG": "1"})):
        assert debug.exit_code == 2
        assert "Traceback" in debug.stderr and "CheckpointError" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1].startswith(f"error: {args[-1]}")
    one_error_line(cli(*args))  # neither sticks to the next in-process call
