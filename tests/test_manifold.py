"""`vae manifold`: prior quantiles for a 2-D latent, the principal plane of the test codes otherwise."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from vaecli.analysis.traversal import PLANE_SPREAD, pca_plane, prior_plane, quantiles
from vaecli.model.prior import MixturePrior
from vaecli.store.checkpoint import load_checkpoint

from tests.helpers.cli_checks import one_error_line
from tests.helpers.runner import run_cli


def _train(folder, latent: int):
    out = folder / f"latent{latent}.safetensors"
    result = run_cli("train", "--dataset", "digits", "--arch", "mlp", "--hidden", "32", "--latent-dim", latent,
                     "--epochs", "1", "--limit", "300", "--device", "cpu", "--seed", "1", "-q", "--no-report",
                     "-o", out)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def two_d_model(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("manifold"), 2)


def test_quantiles_are_kingma_and_wellings():
    normal = torch.distributions.Normal(0.0, 1.0)
    levels = normal.cdf(quantiles(4).float())
    assert torch.allclose(levels, torch.tensor([0.125, 0.375, 0.625, 0.875]), atol=1e-6)


def test_a_2d_latent_is_gridded_at_prior_quantiles(two_d_model):
    model = load_checkpoint(two_d_model).model
    plane = prior_plane(model, 5)
    q = quantiles(5).tolist()
    assert plane.x == q and plane.y == q[::-1]  # the top row is the largest z2
    assert plane.codes.shape == (25, 2)
    assert plane.codes[0].tolist() == pytest.approx([q[0], q[-1]])  # top left
    assert plane.codes[6].tolist() == pytest.approx([q[1], q[-2]])  # row 1, column 1


def test_a_fitted_prior_is_gridded_at_its_own_marginal_quantiles(two_d_model):
    model = load_checkpoint(two_d_model).model
    prior = MixturePrior(1, 2)
    prior.means.copy_(torch.tensor([[1.0, -2.0]]))
    prior.precision_cholesky.copy_(torch.diag(torch.tensor([1 / 0.5, 1 / 3.0])).unsqueeze(0))  # sd 0.5 and 3
    model.prior = prior
    plane = prior_plane(model, 4)
    q = quantiles(4)
    assert plane.x == pytest.approx((1.0 + 0.5 * q).tolist(), abs=1e-6)
    assert plane.y == pytest.approx((-2.0 + 3.0 * q).flip(0).tolist(), abs=1e-6)


def test_larger_latents_use_the_principal_plane_through_the_mean():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(500, 5, generator=generator) * torch.tensor([3.0, 1.0, 0.1, 0.1, 0.1]) + 7.0
    plane = pca_plane(codes, 3)
    assert plane.origin.tolist() == pytest.approx(codes.double().mean(0).tolist(), abs=1e-9)
    assert abs(float(plane.axes[0, 0])) == pytest.approx(1.0, abs=0.01)  # the widest direction first
    assert abs(float(plane.axes[1, 1])) == pytest.approx(1.0, abs=0.01)
    spread = codes.double().std(0)[0].item()
    assert plane.x[-1] == pytest.approx(PLANE_SPREAD * spread, rel=0.05) and plane.x[1] == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(plane.codes[4].double(), plane.origin, atol=1e-5)  # the centre of a 3 x 3 grid
    grid = torch.cartesian_prod(torch.tensor(plane.y), torch.tensor(plane.x)).flip(1)  # (x, y) row by row
    assert torch.allclose(plane.coordinates(plane.codes).float(), grid, atol=1e-4)


def test_cli_2d_with_codes_and_4d(cli, two_d_model, tiny_model, tmp_path):
    result = cli("manifold", "-m", two_d_model, "--device", "cpu", "--size", "6")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["manifold.png"]
    both = cli("manifold", "-m", two_d_model, "--device", "cpu", "--size", "6", "--with-codes", "-o", "both.png")
    pca = cli("manifold", "-m", tiny_model, "--device", "cpu", "--size", "6", "--limit", "100", "-o", "-")
    assert both.exit_code == pca.exit_code == 0, both.stderr + pca.stderr
    assert pca.stdout_bytes.startswith(b"\x89PNG")
    with Image.open(tmp_path / "manifold.png") as alone, Image.open(tmp_path / "both.png") as beside:
        assert beside.width > 1.5 * alone.width  # the scatter sits beside the grid
        assert math.isclose(alone.width, alone.height, rel_tol=0.35)


@pytest.mark.parametrize(("args", "words"), [(["--size", "1"], "--size"), (["-o", "folder"], "folder")])
def test_bad_input_is_one_line_and_exit_2(cli, tiny_model, tmp_path, args, words):
    (tmp_path / "folder").mkdir()
    result = cli("manifold", "-m", tiny_model, "--device", "cpu", *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert words in one_error_line(result)


def test_a_1d_latent_is_refused(cli, tmp_path):
    result = cli("manifold", "-m", _train(tmp_path, 1), "--device", "cpu")
    assert result.exit_code == 2
    assert "1-D" in one_error_line(result)
