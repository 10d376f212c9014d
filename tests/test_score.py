"""`vae score`: per-image scores that agree with `vae eval`, a named coder, parseable formats, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

from vaecli.analysis.scores import ScoreSettings, score_images
from vaecli.data.datasets import load_dataset, to_pixels
from vaecli.store.checkpoint import load_checkpoint
from vaecli.training.evaluate import evaluate_split

from tests.helpers.cli_checks import one_error_line

CPU = ["--device", "cpu"]


def _digits_pixels(model_path, limit: int) -> tuple[torch.nn.Module, torch.Tensor]:
    checkpoint = load_checkpoint(model_path, torch.device("cpu"))
    data = load_dataset("digits", "test", shape=checkpoint.config.model.image_shape, limit=limit)
    return checkpoint.model, to_pixels(data.images)


def test_mean_nll_is_evals_nll_exactly(tiny_model):
    model, pixels = _digits_pixels(tiny_model, 40)
    scores = score_images(model, pixels, ("nll",), ScoreSettings(iw_samples=7, seed=3, rows=16))
    evaluation = evaluate_split(model, pixels, 7, 3, rows=16)
    assert float(scores["nll"].mean()) == evaluation.nll


def test_cli_mean_nll_matches_vae_eval(cli, tiny_model):
    common = ["-m", tiny_model, "--dataset", "digits", "--limit", "30", "-k", "6", "--seed", "5", *CPU]
    scored = cli("score", *common, "--score", "nll", "--format", "jsonl")
    evaluated = cli("eval", *common, "--json")
    assert scored.exit_code == 0 and evaluated.exit_code == 0, scored.stderr + evaluated.stderr
    rows = [json.loads(line) for line in scored.stdout.splitlines()]
    assert len(rows) == 30 and rows[0]["index"] == 0 and isinstance(rows[0]["label"], str)
    mean = sum(row["nll"] for row in rows) / len(rows)
    assert mean == pytest.approx(json.loads(evaluated.stdout)["nll"], abs=1e-5)  # jsonl keeps 6 decimals


def _png_nats(array) -> float:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", compress_level=9)
    return len(buffer.getvalue()) * 8 * math.log(2)


def _write_images(tmp_path, shape, count: int = 4) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        array = torch.randint(0, 256, shape[1:], generator=generator, dtype=torch.uint8).numpy()
        array[:, : i + 1] = 0  # a dark border on the left, so --invert auto leaves them alone
        path = tmp_path / f"img{i}.png"
        Image.fromarray(array, mode="L").save(path)
        paths.append(str(path))
    return paths


def test_complexity_is_nll_minus_the_png_code_length(cli, tiny_model, tmp_path):
    shape = load_checkpoint(tiny_model, torch.device("cpu")).config.model.image_shape
    paths = _write_images(tmp_path, shape)
    result = cli("score", *paths, "-m", tiny_model, "-s", "nll,complexity", "-k", "3", "--invert", "no",
                 "--format", "jsonl", *CPU)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["path"] for row in rows] == paths
    for row, path in zip(rows, paths, strict=True):
        code = _png_nats(numpy.array(Image.open(path)))
        assert row["complexity"] == pytest.approx(row["nll"] - code, abs=2e-6)


def test_csv_parses_and_sort_puts_the_most_unusual_last(cli, tiny_model):
    result = cli("score", "-m", tiny_model, "--dataset", "digits", "--limit", "25", "-s", "elbo,recon,kl",
                 "--format", "csv", "--sort", *CPU)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["index", "label", "elbo", "recon", "kl"] and len(rows) == 25
    elbo = [float(row["elbo"]) for row in rows]
    assert elbo == sorted(elbo)
    for row in rows:
        assert float(row["elbo"]) == pytest.approx(float(row["recon"]) + float(row["kl"]), abs=2e-4)


def test_tsv_has_a_header_and_bits_per_dim_scale_nats(cli, tiny_model):
    args = ["score", "-m", tiny_model, "--dataset", "digits", "--limit", "5", "-s", "nll", "-k", "2", *CPU]
    nats, bits = cli(*args), cli(*args, "--units", "bpd")
    assert nats.exit_code == 0 and bits.exit_code == 0, nats.stderr + bits.stderr
    assert nats.stdout.splitlines()[0] == "index\tlabel\tnll"
    dims = math.prod(load_checkpoint(tiny_model, torch.device("cpu")).config.model.image_shape)
    for a, b in zip(nats.stdout.splitlines()[1:], bits.stdout.splitlines()[1:], strict=True):
        assert float(b.split("\t")[2]) == pytest.approx(float(a.split("\t")[2]) / (dims * math.log(2)), abs=1e-4)


def test_regret_is_deterministic_for_a_seed_and_stdin_is_an_image(cli, tiny_model, tmp_path):
    shape = load_checkpoint(tiny_model, torch.device("cpu")).config.model.image_shape
    path = _write_images(tmp_path, shape, 1)[0]
    args = ["score", "-", "-m", tiny_model, "-s", "regret", "--regret-steps", "5", "--format", "jsonl", *CPU]
    first = cli(*args, input=Path(path).read_bytes())
    second = cli(*args, input=Path(path).read_bytes())
    assert first.exit_code == 0, first.stderr
    assert first.stdout == second.stdout
    row = json.loads(first.stdout)
    assert row["path"] == "-" and math.isfinite(row["regret"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give image files"),
        (["a.png", "--dataset", "digits"], "not both"),
        (["--dataset", "digits", "-s", "nll,bogus"], "--score bogus"),
        (["--dataset", "digits", "-k", "0"], "--iw-samples"),
        (["--dataset", "digits", "--regret-steps", "0"], "--regret-steps"),
        (["--dataset", "digits", "--limit", "0"], "--limit"),
        (["missing.png"], "no such file"),
        (["--dataset", "no-such-set"], "unknown dataset"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tiny_model, args, message):
    result = cli("score", "-m", tiny_model, *args, *CPU)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert result.stdout == ""
