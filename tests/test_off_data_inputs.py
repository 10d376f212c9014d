"""Every bundled model gives finite, bounded scores on images far from its data (issue 31).

The default model once scored a blank image at 3.8e12 nats: off the data its encoder asked for a posterior
e^55 times as wide as the prior, and every layer below extrapolated. Here each bundled model scores a
blank image, constant grey and white, inverted digits, uniform noise and one white corner pixel, the
way a user would (`vae score` on PNG files), and every number must be finite and under NATS_PER_DIM a
pixel. Measured with these images and -k 4 once the posteriors and the logits were bounded, the largest
was 11,300 nats (-log p(x) of the all-white image on mnist-resnet, whose decoder is certain an MNIST
border is black); before, 3.7e13 (nll) and 1.5e14 (elbo) on the blank image (mnist), 2e5 on an inverted
digit (mnist-resnet), 4e6 on one (mnist-conditional), 23,500 on one (fashion-mnist).
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaecli.commands.ood import TABLE_COLUMNS, table_lines
from vaecli.store.bundled import BUNDLED_MODELS, PRETRAINED_DIR
from vaecli.store.checkpoint import config_of, read_metadata

from tests.helpers.cli_checks import one_error_line
from tests.helpers.images import stroke

CPU = ["--device", "cpu"]
SCORES = ("nll", "elbo", "recon", "kl")
# 15,680 nats for a 28x28 grey image: about 1.4 times the worst measured (see the docstring).
NATS_PER_DIM = 20.0


def _mnist_digits(count: int) -> list[np.ndarray]:
    """The first MNIST test digits when $VAE_DATA_ROOT holds MNIST (read only), else drawn strokes."""
    raw = Path(os.environ.get("VAE_DATA_ROOT", "/nonexistent")) / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    if not raw.is_file():
        return [np.asarray(stroke()) for _ in range(count)]
    with gzip.open(raw) as handle:
        data = handle.read(16 + count * 28 * 28)
    return list(np.frombuffer(data, np.uint8, offset=16).reshape(count, 28, 28))


def _off_data_images(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Each kind of image (H, W, C) uint8 at the model's shape, digits resized to it."""
    channels, height, width = shape
    rng = np.random.default_rng(0)
    dot = np.zeros((height, width), np.uint8)
    dot[0, 0] = 255  # the default model's logit for that pixel of a blank image was about -44,000
    grey = {
        "blank": np.zeros((height, width), np.uint8),
        "grey-128": np.full((height, width), 128, np.uint8),
        "white": np.full((height, width), 255, np.uint8),
        "dot": dot,
        **{f"inverted-{i}": 255 - np.asarray(Image.fromarray(d).resize((width, height)))
           for i, d in enumerate(_mnist_digits(3))},
    }
    images = {name: np.repeat(a[..., None], channels, axis=2) for name, a in grey.items()}
    for i in range(2):
        images[f"noise-{i}"] = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return images


def _write_pngs(folder: Path, images: dict[str, np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in images.items():
        paths.append(folder / f"{name}.png")
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(paths[-1])
    return paths


def _model_config(name: str):
    path = PRETRAINED_DIR / f"{name}.safetensors"
    return config_of(path, read_metadata(path)).model


def _check(where: str, scores: dict[str, float], limit: float) -> None:
    for score, value in scores.items():
        assert value is not None and math.isfinite(value), f"{where}: {score} is {value}"
        assert 0 <= value < limit, f"{where}: {score} = {value:,.1f} nats, past {limit:,.0f}"


@pytest.mark.parametrize("name", [m for m in BUNDLED_MODELS if m != "mnist-conditional"])
def test_every_score_is_finite_and_bounded_off_the_data(cli, tmp_path, name):
    config = _model_config(name)
    assert not config.classes, "a conditional model is scored through `vae eval` below"
    paths = _write_pngs(tmp_path / "images", _off_data_images(config.image_shape))
    # --invert no: auto would turn the white and inverted images back into dark-background ones.
    result = cli("score", "-m", name, *paths, "-s", ",".join(SCORES), "-k", "4", "--invert", "no",
                 "--format", "jsonl", "-q", *CPU)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(p) for p in paths]
    limit = NATS_PER_DIM * math.prod(config.image_shape)
    for row in rows:
        _check(f"{name} on {Path(row['path']).stem}", {s: row[s] for s in SCORES}, limit)


def test_a_conditional_model_is_bounded_too_through_eval(cli, tmp_path):
    """`vae score` refuses a conditional model (its numbers would be p(x|y)); `vae eval` on a folder whose
    class is 0 gives -log p(x|y=0) and the -ELBO, one image kind at a time."""
    name = "mnist-conditional"
    config = _model_config(name)
    images = _off_data_images(config.image_shape)
    refused = cli("score", "-m", name, *_write_pngs(tmp_path / "all", images), *CPU)
    assert refused.exit_code == 2 and "conditional" in one_error_line(refused)
    limit = NATS_PER_DIM * math.prod(config.image_shape)
    for kind, array in images.items():
        folder = tmp_path / kind
        _write_pngs(folder / "0", {kind: array})
        result = cli("eval", "-m", name, "--dataset", folder, "-k", "4", "--json", "-q", *CPU)
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["conditional"] and report["images"] == 1
        _check(f"{name} on {kind}", {"nll": report["nll"], **report["neg_elbo"]}, limit)


def test_ood_table_columns_stay_apart_for_huge_means():
    """A mean of 7.7e9 nats once ran into its neighbours; now it is written as 7.700e+09 and every column
    still ends where its heading does."""
    metrics = {"auroc": 0.5, "auprc": 0.25, "fpr_at_95_tpr": 1.0}
    report = {
        "scores": {"nll": {**metrics, "mean_in": 80.12, "mean_out": 7.7e9},
                   "complexity": {**metrics, "mean_in": -2571.55, "mean_out": -123456.78},
                   "kl": {**metrics, "mean_in": 29.81, "mean_out": 1.5e14}},
        "score_seconds": {"nll": 123456.7, "elbo": 1.0},
    }
    lines = table_lines(report, ("nll", "complexity", "kl"))
    assert "7.700e+09" in lines[1] and "1.500e+14" in lines[3] and "-123456.78" in lines[2]
    ends, start = [], 0
    for heading, _ in TABLE_COLUMNS[1:]:
        start = lines[0].index(heading, start) + len(heading)
        ends.append(start)
    for line in lines[1:]:
        # Seven cells, each number ending under its heading's last letter, a space before the next.
        assert len(line) == len(lines[0]) and len(line.split()) == len(TABLE_COLUMNS)
        assert all(line[end - 1] != " " for end in ends) and all(line[end] == " " for end in ends[:-1])


def test_the_bounds_are_the_identity_inside_their_knee_and_keep_a_zero_layer_learning():
    """Inside the knee nothing changes (the bundled models' posteriors on their data are all inside); past it
    the value bends toward the limit; at 0, where a zero-initialized posterior layer starts, the slope is 1."""
    import torch

    from vaecli.model.blocks import LOGVAR_LIMIT, MEAN_KNEE, MEAN_LIMIT, posterior_logvar, posterior_offset, soft_clamp

    inside = torch.linspace(-MEAN_KNEE, MEAN_KNEE, 101)
    assert torch.equal(soft_clamp(inside, MEAN_KNEE, MEAN_LIMIT), inside)
    outside = torch.tensor([-1e30, -50.0, 11.0, 1e4, float("inf")])
    bounded = soft_clamp(outside, MEAN_KNEE, MEAN_LIMIT)
    assert (bounded.abs() <= MEAN_LIMIT).all() and (bounded.abs() > MEAN_KNEE).all()
    # In the prior's units: an offset of 1e3 from a prior of standard deviation 0.1 stops at 1.2.
    assert float(posterior_offset(torch.tensor([1e3]), torch.tensor([2 * math.log(0.1)]))) <= 0.1 * MEAN_LIMIT
    assert float(posterior_logvar(torch.tensor([55.0]))) <= LOGVAR_LIMIT  # the blank image's e^55
    zero = torch.zeros(3, requires_grad=True)
    (posterior_offset(zero, torch.zeros(3)) + posterior_logvar(zero)).sum().backward()
    assert torch.equal(zero.grad, torch.full((3,), 2.0))
