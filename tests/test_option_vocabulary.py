"""One option vocabulary (issue 32, item 6): -o/--out is always the output, ood's sets are --known and --unusual,
the scoring commands' decoding chunk is --decode-rows, and the old spellings still work, with one warning each."""

from __future__ import annotations

import ast
import json
from collections import defaultdict
from pathlib import Path

import pytest
import typer
from PIL import Image

from vaecli.cli import app
from vaecli.commands.options import RENAMED, renamed_words

from tests.helpers.cli_checks import one_error_line

CPU = ["--device", "cpu"]
QUICK = ["--limit", "8", "-s", "nll", "-k", "2", *CPU]
COMMANDS = Path(__file__).resolve().parent.parent / "vaecli" / "commands"
COMPLETIONS = Path(__file__).resolve().parent.parent / "completions"


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def _ood(cli, model, *args):
    result = cli("ood", "-m", model, *args, *QUICK, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result


# --- the new names, end to end ----------------------------------------------------------------------------


def test_ood_reads_known_and_unusual_and_writes_the_figure_to_out(cli, tiny_model, tmp_path):
    for flag in ("-o", "--out"):
        figure = tmp_path / f"roc{flag}.png"
        report, result = _ood(cli, tiny_model, "--known", "digits", "--unusual", "digits", flag, figure)
        assert figure.read_bytes().startswith(b"\x89PNG") and report["roc"] == str(figure)
        assert (report["in"], report["out"], report["images_in"], report["images_out"]) == ("digits", "digits", 8, 8)
        assert _warnings(result) == []


SCORING = {
    "eval": ["eval", "--dataset", "digits", "--limit", "4", "-k", "8", "--json"],
    "score": ["score", "--dataset", "digits", "--limit", "4", "-s", "nll", "-k", "8", "--format", "jsonl"],
    "ood": ["ood", "--known", "digits", "--unusual", "digits", "--limit", "4", "-s", "nll", "-k", "8", "--json"],
}


@pytest.mark.parametrize("command", list(SCORING))
def test_decode_rows_chunks_the_scoring_commands_passes(cli, tiny_model, command):
    args = [*SCORING[command], "-m", tiny_model, *CPU]
    whole, chunked = cli(*args), cli(*args, "--decode-rows", "3")  # 32 rows in passes of 3: one image at a time
    assert chunked.exit_code == 0 and _warnings(chunked) == [], chunked.stderr
    # Other chunks draw other samples: the same estimate, not the same digits, so the option reached the work.
    first, second = (_nll(json.loads(result.stdout.splitlines()[0])) for result in (whole, chunked))
    assert second != first and second == pytest.approx(first, rel=0.05)


def _nll(report: dict) -> float:
    return report["scores"]["nll"]["mean_in"] if "scores" in report else report["nll"]


def test_a_too_large_decoding_chunk_is_refused_by_its_new_name(cli, tiny_model):
    result = cli("score", "-m", tiny_model, "--dataset", "digits", "-k", "1000000", "--decode-rows", "1048576", *CPU)
    assert result.exit_code == 2 and one_error_line(result).endswith("lower --decode-rows")


# --- the old spellings: still accepted for one release, one warning line each -------------------------------


OLD_OOD = [
    (["--in", "digits", "--unusual", "digits"], "--in", "--known"),
    (["--known", "digits", "--out", "digits"], "--out DATASET", "--unusual"),
    (["--known", "digits", "--unusual", "digits", "--batch-size", "3"], "--batch-size", "--decode-rows"),
]


@pytest.mark.parametrize(("args", "old", "new"), OLD_OOD, ids=[old for _, old, _ in OLD_OOD])
def test_each_old_ood_spelling_works_with_one_warning(cli, tiny_model, args, old, new):
    report, result = _ood(cli, tiny_model, *args)
    assert (report["in"], report["out"], report["images_out"]) == ("digits", "digits", 8)
    warnings = _warnings(result)
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {old} is renamed {new}")
    assert warnings[0].endswith("the old spelling goes in the next release")


def test_old_roc_writes_the_figure_with_one_warning(cli, tiny_model, tmp_path):
    figure = tmp_path / "old.png"
    report, result = _ood(cli, tiny_model, "--known", "digits", "--unusual", "digits", "--roc", figure)
    assert figure.read_bytes().startswith(b"\x89PNG") and report["roc"] == str(figure)
    assert len(_warnings(result)) == 1 and _warnings(result)[0].startswith("warning: --roc is renamed --out")


def test_an_old_script_runs_as_before(cli, tiny_model, tmp_path):
    """`--in A --out B -o roc.png`, as documented until now: B is the unusual set, -o the figure."""
    blank = tmp_path / "blank"
    blank.mkdir()
    for shade in range(3):
        Image.new("L", (8, 8), 90 * shade).save(blank / f"grey-{shade}.png")
    new, _ = _ood(cli, tiny_model, "--known", "digits", "--unusual", blank)
    old, result = _ood(cli, tiny_model, "--in", "digits", f"--out={blank}", "-o", tmp_path / "roc.png")
    assert (old["out"], old["images_out"]) == (str(blank), 3) and old["scores"] == new["scores"]
    assert (tmp_path / "roc.png").read_bytes().startswith(b"\x89PNG")
    assert [line.split(" is renamed")[0] for line in _warnings(result)] == ["warning: --in", "warning: --out DATASET"]


def test_an_old_spelling_given_twice_warns_once_and_quiet_silences_it(cli, tiny_model):
    _, twice = _ood(cli, tiny_model, "--in", "digits", "--in", "digits", "--unusual", "digits")
    assert len(_warnings(twice)) == 1
    _, quiet = _ood(cli, tiny_model, "--in", "digits", "--unusual", "digits", "-q")
    assert quiet.stderr == ""


@pytest.mark.parametrize("command", ["eval", "score"])
def test_old_batch_size_is_decode_rows_in_eval_and_score(cli, tiny_model, command):
    args = [*SCORING[command], "-m", tiny_model, *CPU]
    old, new = cli(*args, "--batch-size", "3"), cli(*args, "--decode-rows", "3")
    assert old.exit_code == 0, old.stderr
    assert _nll(json.loads(old.stdout.splitlines()[0])) == _nll(json.loads(new.stdout.splitlines()[0]))
    assert len(_warnings(old)) == 1 and "--batch-size is renamed --decode-rows" in _warnings(old)[0]


def test_train_batch_size_is_not_renamed(cli, tmp_path):
    result = cli("train", "--dataset", "digits", "--arch", "mlp", "--hidden", "4", "--latent-dim", "2", "--epochs",
                 "1", "--limit", "32", "--batch-size", "16", "--no-report", "-o", tmp_path / "t.safetensors", *CPU)
    assert result.exit_code == 0 and _warnings(result) == [], result.stderr


@pytest.mark.parametrize("args", [["--known", "digits", "--out", "roc.png"], ["--in", "digits", "--out", "R.PNG"]])
def test_out_png_without_unusual_is_ambiguous_one_line_and_exit_2(cli, tiny_model, tmp_path, args):
    result = cli("ood", "-m", tiny_model, *args, *QUICK)
    assert result.exit_code == 2 and result.stdout == ""
    line = one_error_line(result)
    assert "ambiguous" in line and "--unusual" in line
    assert list(tmp_path.iterdir()) == []


def test_a_value_that_looks_like_an_old_name_is_left_alone():
    counts = {"--dataset": 1, "-s": 1, "-q": 0, "--known": 1, "--unusual": 1, "--out": 1, "-o": 1}
    assert renamed_words("score", ["--dataset", "--batch-size", "-qs", "--in"], counts) == (
        ["--dataset", "--batch-size", "-qs", "--in"], [])
    words, warnings = renamed_words("ood", ["-o", "--in", "--in", "x", "--", "--roc"], counts)
    assert words == ["-o", "--in", "--known", "x", "--", "--roc"] and len(warnings) == 1


# --- one vocabulary: -o is always the output; every name declared in one module ------------------------------


def _commands() -> dict:
    return typer.main.get_command(app).commands


def test_o_is_where_output_goes_in_every_command_that_has_it():
    having = []
    for name, command in _commands().items():
        for param in command.params:
            if "-o" in param.opts or "--out" in param.opts:
                assert {"-o", "--out"} <= set(param.opts), (name, param.opts)
                assert param.help.startswith("Output: "), (name, param.help)
                having.append(name)
    assert {"train", "ood", "sample", "encode", "traverse"} <= set(having)


def test_old_spellings_are_in_no_help_and_no_completion_script(cli):
    fish = (COMPLETIONS / "vae.fish").read_text()
    for command, table in RENAMED.items():
        live = {opt for param in _commands()[command].params for opt in param.opts}
        listed = {word.rstrip(",") for line in cli(command, "--help").stdout.split("Options:")[1].splitlines()
                  for word in line.split()[:2]}
        for old, renamed in table.items():
            assert renamed.new in live and renamed.new in listed
            if old not in live:  # --out stays a live name of ood, with its new meaning
                assert old not in listed and f"__vae_using {command}' -l {old[2:]} " not in fish


def test_binarize_has_one_help_saying_both_protocols():
    helps = {next(p.help for p in command.params if p.name == "binarize")
             for name, command in _commands().items() if name in ("train", "eval", "score", "ood")}
    assert len(helps) == 1
    assert "every batch in train" in helps.pop()


def test_no_option_name_is_declared_in_two_command_modules():
    declared = defaultdict(set)
    for path in COMMANDS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("Option", "Argument"):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and str(arg.value).startswith("-"):
                        declared[arg.value].add(path.name)
    assert "--out" in declared and "--decode-rows" in declared  # the walk finds declarations
    assert {name: sorted(modules) for name, modules in declared.items() if len(modules) > 1} == {}
