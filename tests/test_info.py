"""`vae info`: whole values off a terminal, wrapped ones on it, a short history, a fitted model's own loss."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import typer.testing

from vaecli.store.bundled import BUNDLED_MODELS, resolve_model
from vaecli.store.checkpoint import read_metadata
from vaecli.store.metadata import CheckpointMeta
from vaecli.store.summary import summary_rows

from tests.helpers.safetensors_bytes import edit_metadata

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _history_epochs(text: str) -> list[int]:
    """The epochs listed under the history title: rows whose first word is a number."""
    table = text[text.index("history (test split)"):].splitlines()[1:]
    return [int(line.split()[0]) for line in table if line.split() and line.split()[0].isdigit()]


def _recorded_commands(name: str) -> list[tuple[str, str]]:
    """`vae info`'s rows of the bundled model's recipe (a fitted prior in its past), else of its one command."""
    meta = read_metadata(resolve_model(name)[0])
    if meta.get("recipe"):
        return [(f"recipe step {step}", command) for step, command in enumerate(meta["recipe"], 1)]
    return [("command", meta["command"])]


def test_piped_output_is_never_cut(tmp_path):
    # A real file as stdout, and a narrow COLUMNS that rich would otherwise take as the width.
    with open(tmp_path / "info.txt", "w") as out:
        done = subprocess.run([sys.executable, "-m", "vaecli", "info", "mnist"], stdout=out, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "COLUMNS": "40"})
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "info.txt").read_text()
    assert "…" not in text and "\x1b" not in text
    lines = text.splitlines()
    for key, command in _recorded_commands("mnist"):
        assert any(line.startswith(f"{key} ") and line[len(key):].strip() == command for line in lines)


def test_long_values_wrap_on_a_narrow_terminal(cli, monkeypatch):
    monkeypatch.setattr(typer.testing._NamedTextIOWrapper, "isatty", lambda self: self.name == "<stdout>",
                        raising=False)
    monkeypatch.setattr("shutil.get_terminal_size", lambda *args, **kwargs: os.terminal_size((60, 24)))
    result = cli("info", "mnist")
    assert result.exit_code == 0, result.stderr
    text = ANSI.sub("", result.stdout)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 60
    # Wrapped at spaces: with the line breaks and the key column's padding gone, each command is whole.
    flowing = " ".join(text.split())
    for _, command in _recorded_commands("mnist"):
        assert command in flowing


def test_history_shows_the_best_and_last_epochs_unless_asked_for_all(cli):
    history = read_metadata(resolve_model("mnist")[0])["history"]
    best = min(history, key=lambda record: record["test"]["loss"])["epoch"]
    summary = cli("info", "mnist")
    assert summary.exit_code == 0, summary.stderr
    assert _history_epochs(summary.stdout) == sorted({best, len(history)})
    assert "--history" in summary.stdout and len(summary.stdout.splitlines()) < 40
    every = cli("info", "mnist", "--history")
    assert _history_epochs(every.stdout) == list(range(1, len(history) + 1))


@pytest.mark.slow
def test_a_fitted_model_shows_its_own_test_loss(cli, tiny_model, tmp_path):
    fitted = tmp_path / "fitted.safetensors"
    result = cli("fit-prior", "-m", tiny_model, "-o", fitted, "--components", "3", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    meta = read_metadata(fitted)
    last, fit = meta["history"][-1]["test"], meta["prior"]
    line = _row(cli("info", fitted).stdout, "test loss")
    # The fit keeps the decoder, so the recon term stays and the KL is the one to the new prior.
    assert line.startswith(f"{last['recon'] + fit['test_kl_mixture']:.2f} nats")
    assert line.endswith(f"{last['loss']:.2f} before the fit")

    # Trained on afterwards, the last epoch's loss is the model's own again.
    trained = tmp_path / "trained.safetensors"
    result = cli("train", "--resume", fitted, "--epochs", str(meta["epochs_done"] + 1), "-o", trained,
                 "--device", "cpu", "-q", "--no-report")
    assert result.exit_code == 0, result.stderr
    last = read_metadata(trained)["history"][-1]["test"]
    assert _row(cli("info", trained).stdout, "test loss") == (
        f"{last['loss']:.2f} nats (recon {last['recon']:.2f}, KL {last['kl']:.2f})")


def test_the_bundled_mnist_model_shows_its_headline_likelihood(cli):
    record = read_metadata(resolve_model("mnist")[0]).get("full_evaluation")
    if record is None:
        pytest.skip("the bundled mnist file does not record its whole-test-split evaluation yet "
                    "(scripts/export_pretrained.py mnist --full-eval ...)")
    headline = _row(cli("info", "mnist").stdout, "-log p(x)")  # the first such row: the whole test split
    assert headline.startswith(f"{record['nll']:.2f} nats (K = 1000, 10000 binarized mnist test images); "
                               f"-ELBO {record['neg_elbo']['loss']:.2f}")


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_metadata_holds_no_path_of_the_machine_it_was_made_on(cli, name):
    text = cli("info", name, "--json").stdout
    assert not re.search(r"/(work|home|root|Users|tmp)/", text)
    evaluations = [meta for key, meta in json.loads(text).items() if key.endswith("evaluation")]
    assert evaluations and all(record["model"] == name for record in evaluations)


def test_odd_evaluation_records_are_left_out(cli, tiny_model, tmp_path):
    def plant(meta):
        meta["evaluation"] = {"nll": "80.98", "command": "vae eval"}
        meta["full_evaluation"] = [1, 2]

    (tmp_path / "m.safetensors").write_bytes(edit_metadata(tiny_model.read_bytes(), plant))
    result = cli("info", tmp_path / "m.safetensors")
    assert result.exit_code == 0, result.stderr
    assert "-log p(x)" not in result.stdout


def _row(text: str, key: str) -> str:
    """The value of the first summary row named `key`."""
    return next(line[len(key):].strip() for line in text.splitlines() if line.startswith(key + " "))


def test_rows_name_settings_and_info_shows_the_flags(cli, tiny_model, tmp_path):
    path = tmp_path / "ema.safetensors"
    path.write_bytes(edit_metadata(tiny_model.read_bytes(), lambda meta: meta["config"].update(ema=0.999)))
    rows = dict(summary_rows(str(path), CheckpointMeta.from_dict(read_metadata(path))))
    assert rows["weights"].endswith("decay 0.999 (`ema`); `resume` goes on from the weights as trained")
    shown = cli("info", path).stdout
    assert "decay 0.999 (--ema); --resume goes on from the weights as trained" in shown and "`" not in shown
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 (--label)" in cli("info", "mnist-conditional").stdout


def test_info_reads_the_header_without_importing_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom vaecli.cli import app\n"
            "r = CliRunner().invoke(app, ['info', 'mnist'])\nassert r.exit_code == 0, r.output\n"
            "print(' '.join(m for m in ('torch', 'safetensors', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
