"""Hostile option values and names (issue 30): one line and exit 2, or the work done; score's rows stay parseable."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vaecli.analysis.scores
from vaecli.config import ModelConfig, TrainConfig
from vaecli.errors import SettingError, UsageError
from vaecli.model.networks import build_model
from vaecli.store.checkpoint import build_metadata, save_checkpoint
from vaecli.terminal.console import as_flags, printable

from tests.helpers.cli_checks import one_error_line
from tests.helpers.images import digit
from tests.helpers.runner import run_cli


def _fabricate(path: Path, class_names: list[str] | None = None, scale: float = 1.0, **model: object) -> Path:
    """A seeded, untrained mlp of the digits set (weights times `scale`): loads and decodes in milliseconds."""
    config = TrainConfig(model=ModelConfig(arch="mlp", latent_dim=2, hidden=8, **model), dataset="digits")
    torch.manual_seed(0)
    vae = build_model(config.model)
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.mul_(scale)
    info = {"dataset_info": {"n_train": 10, "n_test": 10, "class_names": class_names}} if class_names else {}
    save_checkpoint(path, vae, build_metadata(config, epochs_done=0, history=[], **info))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "plain": _fabricate(root / "plain.safetensors"),
        "cond": _fabricate(root / "cond.safetensors", classes=10),
        # Weights of 1e15 are finite, so the file loads, but every activation overflows float32 to inf or NaN.
        "overflow": _fabricate(root / "overflow.safetensors", scale=1e15),
    }


@pytest.fixture
def inputs(tmp_path) -> Path:
    """An image and a .npy of codes in the working folder, for the commands that read them."""
    digit(tmp_path / "d.png", value=200)
    np.save(tmp_path / "z.npy", np.zeros((2, 2), dtype=np.float32))
    return tmp_path


def _run(*args: object, models: dict[str, Path]):
    return run_cli(*(str(arg).format(**models) if str(arg).startswith("{") else arg for arg in args))


def _refused(result, option: str | None = None) -> str:
    """Exit 2 and one short line (naming `option` when given), never 'unexpected' nor a traceback."""
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result)
    assert "unexpected" not in line and len(line) < 400, line
    if option:
        assert option in line, line
    return line


# --- every number option: hostile values give one line and exit 2, or the work is done -------------------

HUGE_INT = str(10**30)
# What an attacker (or a slip of the finger) gives a number option; an int option reads the floats as bad text.
HOSTILE = ["0", "-1", "nan", "inf", "-1e308", "1e39", HUGE_INT, "-" + HUGE_INT, "9" * 5000]
CPU = ["--device", "cpu"]
TRAIN = ["train", "--dataset", "digits", "--arch", "mlp", "--hidden", "4", "--latent-dim", "2", "--epochs", "1",
         "--limit", "64", "--no-report", "-q", "-o", "t.safetensors", *CPU]
HVAE = [*TRAIN[:3], "--arch", "hvae", *TRAIN[5:]]
SCORE = ["score", "d.png", "-m", "{plain}", "-s", "elbo", "-k", "1", "--regret-steps", "1", "-q", *CPU]
OOD = ["ood", "-m", "{plain}", "--known", "digits", "--unusual", "digits", "--limit", "8", "-s", "elbo", "-k", "1",
       "-q", *CPU]
# (command line, option): the option is appended with each hostile value.
OPTIONS = [
    *((TRAIN, option) for option in ("--latent-dim", "--hidden", "--channels", "--image-size", "--epochs",
                                     "--batch-size", "--lr", "--beta", "--warmup", "--free-bits", "--grad-clip",
                                     "--ema", "--weight-decay", "--seed", "--limit")),
    ([*TRAIN, "--likelihood", "logistic"], "--mixtures"),
    (HVAE, "--groups"),
    (HVAE, "--group-channels"),
    *((["sample", "-m", "{plain}", "--grid", "g.png", *CPU], option)
      for option in ("-n", "--temperature", "--nrow", "--scale", "--seed")),
    (["sample", "-m", "{plain}", "-o", "out", *CPU], "-n"),
    *((["reconstruct", "d.png", "-m", "{plain}", "--compare", "c.png", *CPU], option)
      for option in ("--nrow", "--scale")),
    *((["interpolate", "d.png", "d.png", "-m", "{plain}", *CPU], option) for option in ("--steps", "--scale")),
    *((["decode", "z.npy", "-m", "{plain}", "--grid", "g.png", *CPU], option) for option in ("--nrow", "--scale")),
    *((["eval", "-m", "{plain}", "--limit", "8", "-k", "1", *CPU], option)
      for option in ("--limit", "-k", "--decode-rows")),
    *((["fit-prior", "-m", "{plain}", "-o", "p.safetensors", "-c", "2", "--limit", "64", *CPU], option)
      for option in ("-c", "--samples")),
    (["project", "-m", "{plain}", "--limit", "16", *CPU], "--limit"),
    *((SCORE, option) for option in ("-k", "--regret-steps", "--decode-rows", "--seed")),
    *((OOD, option) for option in ("--limit", "-k", "--regret-steps", "--decode-rows")),
    *((["traverse", "-m", "{plain}", "--limit", "16", *CPU], option)
      for option in ("-n", "--steps", "--scale", "--limit")),
    *((["manifold", "-m", "{plain}", "--limit", "16", *CPU], option) for option in ("--size", "--limit")),
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(("args", "option"), OPTIONS, ids=[f"{a[0]}{o}" for a, o in OPTIONS])
def test_every_number_option_refuses_a_hostile_value_in_one_line_or_works(models, inputs, args, option, value):
    result = _run(*args, option, value, models=models)
    if result.exit_code != 0:
        _refused(result)


# --- float options: what float32 cannot hold, and what is not finite, is refused by name --------------------

NOT_FLOAT32 = ["nan", "inf", "-inf", "1e308", "1e39", "-1e39"]
FLOAT_OPTIONS = [
    *((TRAIN, option) for option in ("--lr", "--beta", "--free-bits", "--grad-clip", "--ema", "--weight-decay")),
    (["sample", "-m", "{plain}", "--grid", "g.png", *CPU], "--temperature"),
]


@pytest.mark.parametrize("value", NOT_FLOAT32)
@pytest.mark.parametrize(("args", "option"), FLOAT_OPTIONS, ids=[f"{a[0]}{o}" for a, o in FLOAT_OPTIONS])
def test_a_float_option_refuses_what_float32_cannot_hold(models, inputs, args, option, value):
    _refused(_run(*args, option, value, models=models), option)
    assert not Path("g.png").exists() and not Path("t.safetensors").exists()


@pytest.mark.parametrize("sweep", [("-1e308", "1e308"), ("-1e39", "1e39"), ("nan", "1"), ("-1", "inf"),
                                   ("-inf", "inf"), ("-1001", "0")])
def test_traverse_range_refuses_ends_past_its_bound_in_one_line(models, sweep):
    line = _refused(_run("traverse", "-m", "{plain}", "--limit", "16", "--range", *sweep, *CPU, models=models),
                    "--range")
    assert "1000" in line
    assert not Path("traverse.png").exists()


def test_traverse_range_at_its_bound_works(models):
    result = _run("traverse", "-m", "{plain}", "--limit", "16", "--range", "-1000", "1000", "-q", *CPU, models=models)
    assert result.exit_code == 0, result.stderr
    assert Path("traverse.png").stat().st_size > 0


# --- --label: only ASCII digits are a number; a refusal stays short; a name that is a number wins, aloud -----

LABEL_COMMANDS = {
    "sample": ["sample", "-m", "{cond}", "-n", "2", "--seed", "1", "-o", "out"],
    "decode": ["decode", "z.npy", "-m", "{cond}", "-o", "out"],
    "traverse": ["traverse", "-m", "{cond}", "--limit", "16", "-o", "t.png"],
    "eval": ["eval", "-m", "{cond}", "--limit", "8", "-k", "1"],
    "eval-plain": ["eval", "-m", "{plain}", "--limit", "8", "-k", "1"],  # a class of the dataset, not the model
}
# Characters str.isdigit accepts (int() refuses the first four and reads the Arabic-Indic 3), and 5,000 digits.
ODD_DIGITS = ["\u00b2", "\u00b3", "\u2460", "\u00b9", "\u0663", "9" * 5000, "0" * 4999 + "1"]


@pytest.mark.parametrize("label", ODD_DIGITS, ids=["sup2", "sup3", "circled1", "sup1", "arabic3", "nines", "zeros"])
@pytest.mark.parametrize("command", LABEL_COMMANDS)
def test_a_label_that_is_not_ascii_digits_is_not_a_class(models, inputs, command, label):
    line = _refused(_run(*LABEL_COMMANDS[command], "--label", label, *CPU, models=models), "--label")
    assert "not a class of" in line
    assert not Path("out").exists() and not Path("t.png").exists()


def test_a_refused_label_lists_a_few_short_names(models, tmp_path):
    # A checkpoint may hold 1,000 classes with names of 64 K characters: the refusal stays one short line.
    names = ["n" * 60_000, *(f"class-{i}" for i in range(1, 1000))]
    model = _fabricate(tmp_path / "many.safetensors", class_names=names, classes=1000)
    line = _refused(run_cli("sample", "-m", model, "--label", "nothing", "-n", "1", "--grid", "g.png", *CPU))
    assert "(1,000 classes)" in line and "class-1, " in line and "class-999" not in line


def test_a_class_named_like_another_classes_number_is_taken_by_name_with_a_note(tmp_path):
    model = _fabricate(tmp_path / "named.safetensors", class_names=["1", "cat", "dog"], classes=3)

    def grid(label: str):
        out = tmp_path / f"{label}.png"
        result = run_cli("sample", "-m", model, "--label", label, "-n", "2", "--seed", "3", "--grid", out, *CPU)
        assert result.exit_code == 0, result.stderr
        return out.read_bytes(), result.stderr

    by_name, note = grid("1")
    assert by_name == grid("0")[0] != grid("cat")[0]  # "1" is the class named 1, number 0
    assert note.strip().splitlines() == [
        "--label '1': taking the class named '1' (number 0), not class number 1 (named 'cat'); "
        "a name wins over a number"]
    assert grid("2")[1] == ""  # class number 2 ('dog'): no class is named 2, nothing to say


# --- vae score: names a terminal would obey are escaped, fields are quoted, and no score is NaN text -------

ODD_NAMES = ["new\nline.png", "tab\there.png", "\x1b[31mred.png", 'comma,"quote".png', "del\x7f\x9bc1.png"]


def _odd_images(folder: Path) -> list[str]:
    for name in ODD_NAMES:
        digit(folder / name, value=200)
    return ODD_NAMES


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_score_escapes_control_characters_and_quotes_csv_fields(models, tmp_path, fmt):
    result = _run("score", *_odd_images(tmp_path), "-m", "{plain}", "-k", "2", "--format", fmt, "-q", *CPU,
                  models=models)
    assert result.exit_code == 0, result.stderr
    assert not any(char in result.stdout for char in "\x1b\x7f\x9b\r\t" if fmt == "csv" or char != "\t")
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(result.stdout)))
    else:
        rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["path", "complexity", "nll"]
    assert [row[0] for row in rows[1:]] == [printable(name) for name in ODD_NAMES]
    assert all(len(row) == 3 and float(row[2]) > 0 for row in rows[1:])


def _strict_json(line: str) -> dict:
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(line, strict=True, parse_constant=refuse)


def test_score_jsonl_keeps_names_exact_as_json(models, tmp_path):
    result = _run("score", *_odd_images(tmp_path), "-m", "{plain}", "-k", "2", "--format", "jsonl", "-q", *CPU,
                  models=models)
    assert result.exit_code == 0, result.stderr
    assert not any(char in result.stdout for char in "\x1b\x7f\x9b\t")
    assert [_strict_json(line)["path"] for line in result.stdout.splitlines()] == ODD_NAMES


@pytest.mark.parametrize(("fmt", "written"), [("csv", ""), ("tsv", "n/a"), ("jsonl", None)])
def test_score_writes_every_line_then_exits_1_when_the_model_overflows(models, inputs, fmt, written):
    digit(inputs / "e.png", value=90)
    result = _run("score", "d.png", "e.png", "-m", "{overflow}", "-k", "2", "--format", fmt, "-q", *CPU,
                  models=models)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "2 of 2 images have no finite score" in line and "every line was written" in line
    if fmt == "jsonl":
        rows = [_strict_json(text) for text in result.stdout.splitlines()]
        assert [(row["path"], row["complexity"], row["nll"]) for row in rows] == [
            ("d.png", written, written), ("e.png", written, written)]
    else:
        rows = list(csv.reader(io.StringIO(result.stdout), delimiter="," if fmt == "csv" else "\t"))
        assert rows == [["path", "complexity", "nll"], ["d.png", written, written], ["e.png", written, written]]


def test_score_counts_only_the_images_without_a_finite_score_and_sorts_them_last(models, inputs, monkeypatch):
    real = vaecli.analysis.scores.score_images

    def one_bad(*args, **kwargs):  # the second image's nll is NaN, the third's infinite
        values = real(*args, **kwargs)
        values["nll"][1], values["nll"][2] = float("nan"), float("inf")
        return values

    monkeypatch.setattr(vaecli.analysis.scores, "score_images", one_bad)
    for name in ("a.png", "b.png", "c.png", "e.png"):
        digit(inputs / name, value=200)
    result = _run("score", "a.png", "b.png", "c.png", "e.png", "-m", "{plain}", "-s", "nll", "-k", "2", "--sort",
                  "--format", "jsonl", "-q", *CPU, models=models)
    assert result.exit_code == 1
    assert "2 of 4 images have no finite score (written as null)" in one_error_line(result)
    rows = [_strict_json(text) for text in result.stdout.splitlines()]
    assert [row["path"] for row in rows][2:] == ["c.png", "b.png"]  # infinite, then no number at all
    assert rows[2]["nll"] is None and isinstance(rows[0]["nll"], float)


@pytest.mark.parametrize(("settings", "said", "shown"), [
    ({"lr": 0.0}, "learning rate must be in (0, 10), not 0.0 (`lr`)",
     "learning rate must be in (0, 10), not 0.0 (--lr)"),
    ({"model": ModelConfig(height=2)}, "image height must be between 4 and 1024, not 2 (`height`)",
     "image height must be between 4 and 1024, not 2 (--image-size)"),
    ({"model": ModelConfig(arch="hvae", classes=10)}, "`conditional` is not available with `arch=hvae`; use mlp, "
     "cnn or resnet", "--conditional is not available with --arch hvae; use mlp, cnn or resnet"),
])
def test_a_config_refused_from_python_names_the_keyword_and_the_terminal_the_flag(settings, said, shown):
    with pytest.raises(SettingError) as caught:
        TrainConfig(**settings).validate()
    assert not isinstance(caught.value, UsageError)  # the command line's own error, never the library's
    assert caught.value.message == said and as_flags(said) == shown
