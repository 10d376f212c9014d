"""`vae traverse`: a row per latent dimension ordered by test KL, a column per value, the GIF, bad input."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vaecli.analysis.traversal import (
    decode_traversal,
    kl_order,
    split_kl_per_dim,
    sweep_codes,
    sweep_values,
    traversal_cells,
    traversal_frames,
)
from vaecli.data.datasets import load_dataset
from vaecli.data.images import CAPTION_PX, GRID_PAD_VALUE
from vaecli.store.checkpoint import load_checkpoint, save_checkpoint

from tests.helpers.cli_checks import one_error_line


def test_kl_order_is_largest_first_and_active_only_drops_the_inactive():
    kl = [0.5, 0.001, 3.0, 0.5, 0.0]
    assert kl_order(kl) == [2, 0, 3, 1, 4]  # ties keep the dimension order
    assert kl_order(kl, active_only=True) == [2, 0, 3]


def test_rows_follow_the_models_test_kl(tiny_model):
    checkpoint = load_checkpoint(tiny_model)
    data = load_dataset("digits", "test", shape=checkpoint.config.model.image_shape, limit=200)
    kl = split_kl_per_dim(checkpoint, data)
    assert len(kl) == 4
    assert kl_order(kl) == torch.argsort(torch.tensor(kl), descending=True, stable=True).tolist()


def test_sweep_sets_one_coordinate_per_row():
    bases = torch.tensor([[1.0, 2.0, 3.0]])
    values = sweep_values(-1.0, 1.0, 3)
    codes = sweep_codes(bases, [2, 0], values)
    assert codes.shape == (2, 1, 3, 3)
    assert codes[0, 0].tolist() == [[1, 2, -1], [1, 2, 0], [1, 2, 1]]
    assert codes[1, 0].tolist() == [[-1, 2, 3], [0, 2, 3], [1, 2, 3]]


def test_cells_and_frames_have_a_row_per_dimension_and_a_column_per_step(tiny_model):
    model = load_checkpoint(tiny_model).model
    decoded = decode_traversal(model, torch.zeros(2, 4), [3, 1, 0], sweep_values(-3, 3, 5))
    assert decoded.shape == (3, 2, 5, 1, 28, 28) and decoded.dtype == torch.uint8
    cells = traversal_cells(decoded)
    assert cells.shape == (3 * (5 + 1 + 5), 1, 28, 28)  # two sweeps and a blank cell between them, per row
    assert bool((cells[5] == GRID_PAD_VALUE).all()) and torch.equal(cells[6], decoded[0, 1, 0])
    frames = traversal_frames(decoded)
    assert frames.shape == (5 + 3, 1, 2 * 28 + 2, 3 * 28 + 2 * 2)  # there and back; a row per draw


def test_figure_gif_and_paths(cli, tiny_model, tmp_path):
    result = cli("traverse", "-m", tiny_model, "--device", "cpu", "--steps", "5", "--gif", "t.gif", "--scale", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["traverse.png", "t.gif"]
    assert "of 4 latent dimensions active" in result.stderr
    with Image.open(tmp_path / "t.gif") as gif:
        # Each frame under its caption strip (the swept value), which --scale leaves as it is.
        assert gif.n_frames == 5 + 3 and gif.size == (2 * (4 * 28 + 3 * 2), 2 * 28 + CAPTION_PX)
    with Image.open(tmp_path / "traverse.png") as figure:
        assert figure.format == "PNG" and figure.height > figure.width / 4


def _with_dead_dimension(tiny_model, path, dim: int) -> None:
    """The tiny model with latent dimension `dim` switched off: q(z_dim|x) = N(0, 1) = its prior, KL 0."""
    checkpoint = load_checkpoint(tiny_model)
    head = [m for m in checkpoint.model.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    latent = checkpoint.config.model.latent_dim
    with torch.no_grad():
        for row in (dim, latent + dim):  # its mean and its log-variance
            head.weight[row].zero_()
            head.bias[row].zero_()
    save_checkpoint(path, checkpoint.model, checkpoint.meta)


def test_active_only_drops_rows_and_the_figure_gets_shorter(cli, tiny_model, tmp_path):
    _with_dead_dimension(tiny_model, tmp_path / "dead.safetensors", 1)
    every = cli("traverse", "-m", "dead.safetensors", "--device", "cpu", "-o", "all.png")
    active = cli("traverse", "-m", "dead.safetensors", "--device", "cpu", "--active-only", "-o", "active.png")
    assert every.exit_code == active.exit_code == 0, every.stderr + active.stderr
    assert "3 of 4 latent dimensions active" in active.stderr
    with Image.open(tmp_path / "all.png") as four, Image.open(tmp_path / "active.png") as three:
        assert three.width == four.width and three.height < four.height


def test_a_seed_repeats_the_figure(cli, tiny_model, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        result = cli("traverse", "-m", tiny_model, "--device", "cpu", "-n", "2", "--seed", seed, "-o", f"{name}.png")
        assert result.exit_code == 0, result.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()


def test_an_image_base(cli, tiny_model, tmp_path):
    Image.new("L", (28, 28), 0).save(tmp_path / "black.png")
    result = cli("traverse", "black.png", "-m", tiny_model, "--device", "cpu", "--range", "-2", "2", "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["black.png", "-n", "2"], "not both"),
        (["--range", "3", "-3"], "--range"),
        (["--steps", "1"], "--steps"),
        (["-o", "-", "--gif", "t.gif"], "--gif"),
        (["missing.png"], "no such file"),
        (["-o", "folder"], "folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tiny_model, tmp_path, args, words):
    Image.new("L", (28, 28), 0).save(tmp_path / "black.png")
    (tmp_path / "folder").mkdir()
    result = cli("traverse", "-m", tiny_model, "--device", "cpu", *args)
    assert result.exit_code == 2, result.stderr
    assert words in one_error_line(result)
    assert result.stdout == ""
