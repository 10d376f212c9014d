"""The hierarchical VAE (--arch hvae): its estimator against a closed form, training, resume, every command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vaecli.config import ModelConfig
from vaecli.model.hierarchical import HVAE
from vaecli.model.networks import build_model
from vaecli.store.checkpoint import load_checkpoint
from vaecli.training.evaluate import elbo_summary, iw_nll

from tests.helpers.cli_checks import one_error_line
from tests.helpers.images import digit

SIDE, WIDTH, SIGMA = 4, 3, 0.4  # 16 pixels; the top-down state has 3 channels at 1 x 1


def _linear_two_layer(seed: int = 0) -> HVAE:
    """An HVAE whose every map is linear: z1 ~ N(0, 1), z2 | z1 ~ N(a z1 + b, t^2), x | z ~ N(A z + c, s^2 I).

    Both latents are scalars, so q(z1|x) q(z2|x, z1) can hold the exact Gaussian posterior."""
    torch.manual_seed(seed)
    config = ModelConfig(arch="hvae", latent_dim=1, hidden=WIDTH, height=SIDE, width=SIDE, likelihood="gaussian",
                         groups=2, group_channels=1)
    model = HVAE(config)
    model.stem = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, WIDTH), nn.Unflatten(1, (WIDTH, 1, 1)))
    model.bottom_up = nn.ModuleList([nn.Identity()])
    model.top_encoder = nn.Sequential(nn.Flatten(), nn.Linear(WIDTH, 2))
    cell = model.cells[0]
    cell.prior, cell.posterior, cell.block = nn.Conv2d(WIDTH, 2, 1), nn.Conv2d(2 * WIDTH, 2, 1), nn.Identity()
    model.head = nn.Sequential(nn.Flatten(), nn.Linear(WIDTH, SIDE * SIDE), nn.Unflatten(1, (1, SIDE, SIDE)))
    with torch.no_grad():
        cell.prior.weight[1].zero_()  # the prior's log-variance does not depend on z1: a linear-Gaussian model
        cell.prior.bias[1] = math.log(0.6**2)
        model.decoder_logvar.fill_(math.log(SIGMA**2))
    return model


def _marginal(model: HVAE) -> torch.distributions.MultivariateNormal:
    """p(x) in closed form: x = H (s1 + M z2 + m) + h with s1 = D z1 + d and z2 = P s1 + p + t e2."""
    cell = model.cells[0]
    d_w, d_b = model.top_decoder[0].weight.detach(), model.top_decoder[0].bias.detach()  # (W, 1), (W,)
    p_w, p_b = cell.prior.weight[0, :, 0, 0].detach(), cell.prior.bias[0].detach()  # (W,), ()
    m_w, m_b = cell.merge.weight[:, 0, 0, 0].detach(), cell.merge.bias.detach()  # (W,), (W,)
    h_w, h_b = model.head[1].weight.detach(), model.head[1].bias.detach()  # (16, W), (16,)
    t2 = math.exp(float(cell.prior.bias[1].detach()))
    z1_gain = h_w @ (d_w[:, 0] + m_w * (p_w @ d_w[:, 0]))  # dx/dz1 through both paths
    z2_gain = h_w @ m_w  # dx/de2, times t
    mean = h_w @ (d_b + m_w * (p_w @ d_b + p_b) + m_b) + h_b
    covariance = torch.outer(z1_gain, z1_gain) + t2 * torch.outer(z2_gain, z2_gain) + SIGMA**2 * torch.eye(16)
    return torch.distributions.MultivariateNormal(mean, covariance)


def _fit_posterior(model: HVAE, x: torch.Tensor, steps: int) -> None:
    """Adam on the -ELBO over the inference network alone (it can hold the exact posterior), step size decaying."""
    from vaecli.model.objective import loss_terms

    inference = [*model.stem.parameters(), *model.top_encoder.parameters(), *model.cells[0].posterior.parameters()]
    optimizer = torch.optim.Adam(inference, lr=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-4)
    generator, many = torch.Generator().manual_seed(1), x.repeat(8, 1, 1, 1)  # 8 draws per image per step
    for _ in range(steps):
        recon, kls = loss_terms(model, model(many, generator=generator), many)
        optimizer.zero_grad()
        (recon + kls.sum(1)).mean().backward()
        optimizer.step()
        schedule.step()


@pytest.fixture(scope="module")
def two_layer():
    model = _linear_two_layer()
    marginal = _marginal(model)
    x = marginal.sample(torch.Size([128]))
    return model, x.view(-1, 1, SIDE, SIDE), -marginal.log_prob(x).double()


def test_the_bound_tightens_to_the_closed_form_likelihood_of_two_layers(two_layer):
    model, x, exact = two_layer
    errors = {}
    for k in (1, 30, 3000):
        errors[k] = float((iw_nll(model, x, k, torch.Generator().manual_seed(k)) - exact).mean())
        assert errors[k] > -0.05, errors  # a bound: never below -log p(x) by more than noise
    assert errors[1] > 0.5 and errors[1] > errors[30] > errors[3000], errors  # the untrained q leaves a gap
    assert abs(errors[3000]) < 0.03 * errors[1], errors


@pytest.mark.slow
def test_the_exact_posterior_of_both_layers_gives_the_likelihood_with_one_sample(two_layer):
    model, x, exact = two_layer
    fitted = _linear_two_layer()
    fitted.load_state_dict(model.state_dict())
    _fit_posterior(fitted, x, steps=1000)
    one = iw_nll(fitted, x, 1, torch.Generator().manual_seed(2))
    assert float((one - exact).mean()) == pytest.approx(0.0, abs=0.05)
    # The one-sample bound is then tight image by image, not only on average.
    assert float((one - exact).abs().max()) < 0.5


def test_the_layers_and_their_kl():
    model = build_model(ModelConfig(arch="hvae", latent_dim=5, hidden=8, groups=4, group_channels=2)).eval()
    assert isinstance(model, HVAE) and model.layers == 4 and len(model.cells) == 3
    assert model.noise_dims == 5 + 3 * 2 * 7 * 7
    x = torch.rand(3, 1, 28, 28)
    output, kls = model(x, generator=torch.Generator().manual_seed(0))[:2]
    assert output.shape == (3, 1, 28, 28) and kls.shape == (3, 4)
    # The lower posteriors start equal to their priors: only the top layer carries KL at first.
    assert torch.allclose(kls[:, 1:], torch.zeros(3, 3), atol=1e-3) and (kls[:, 0] > 0).all()
    mu, _ = model.encode(x)
    assert mu.shape == (3, 5) and model.decode(mu).shape == (3, 1, 28, 28)
    summary = elbo_summary(model, x)
    assert len(summary.kl_per_layer) == 4 and summary.kl == pytest.approx(sum(summary.kl_per_layer))
    assert len(summary.kl_per_dim) == 5  # the top layer's dimensions, for traverse and the report


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--arch", "hvae", "--groups", "1"], "stochastic layers must be between 2"),
    (["--arch", "cnn", "--groups", "3"], "--groups applies only to --arch hvae"),
    (["--arch", "hvae", "--conditional"], "--conditional is not available with --arch hvae"),
    (["--arch", "hvae", "--free-bits", "nan"], "--free-bits must be a finite number"),
    (["--arch", "hvae", "--grad-clip", "-1"], "--grad-clip must be a finite number"),
])
def test_bad_layouts_are_refused_in_one_line(cli, tmp_path, flags, fragment):
    result = cli("train", "--dataset", "digits", "--epochs", "1", "-o", tmp_path / "h.safetensors", *flags)
    assert result.exit_code == 2 and fragment in one_error_line(result)
    assert not (tmp_path / "h.safetensors").exists()


TRAIN = ["train", "--arch", "hvae", "--dataset", "digits", "--hidden", "8", "--latent-dim", "3", "--groups", "3",
         "--group-channels", "2", "--limit", "192", "--batch-size", "64", "--lr-schedule", "constant",
         "--free-bits", "0.05", "--grad-clip", "200", "--device", "cpu", "-q", "--no-report"]


@pytest.fixture(scope="module")
def hvae_model(tmp_path_factory):
    from tests.helpers.runner import run_cli

    path = tmp_path_factory.mktemp("hvae") / "h.safetensors"
    result = run_cli(*TRAIN, "--epochs", "2", "-o", path)
    assert result.exit_code == 0, result.stderr
    return path


def test_training_records_each_layer_and_the_layout(hvae_model):
    checkpoint = load_checkpoint(hvae_model)
    model = checkpoint.config.model
    assert (model.arch, model.groups, model.group_channels) == ("hvae", 3, 2)
    test = checkpoint.meta["history"][-1]["test"]
    assert len(test["kl_per_layer"]) == 3 and test["kl"] == pytest.approx(sum(test["kl_per_layer"]))
    assert "--groups 3 --group-channels 2 --free-bits 0.05 --grad-clip 200.0" in checkpoint.meta["command"]


def test_resume_continues_exactly(cli, hvae_model, tmp_path):
    straight = tmp_path / "straight.safetensors"
    assert cli(*TRAIN, "--epochs", "3", "-o", straight).exit_code == 0
    resumed = tmp_path / "resumed.safetensors"
    resumed.write_bytes(hvae_model.read_bytes())
    assert cli("train", "--resume", resumed, "--epochs", "3", "-q", "--no-report").exit_code == 0
    one, two = load_checkpoint(straight).model.state_dict(), load_checkpoint(resumed).model.state_dict()
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


def test_every_command_runs_on_it(cli, hvae_model, tmp_path):
    digit(tmp_path / "a.png")
    digit(tmp_path / "b.png", value=128)
    m = ["-m", str(hvae_model)]
    runs = [
        ["sample", *m, "-n", "4", "--seed", "1", "--grid", "s.png"],
        ["reconstruct", "a.png", *m, "--compare", "c.png"],
        ["interpolate", "a.png", "b.png", *m, "-o", "i.png"],
        ["encode", "a.png", "b.png", *m, "-o", "z.npy"],
        ["decode", "z.npy", *m, "--grid", "d.png"],
        ["traverse", *m, "--limit", "20", "-o", "t.png"],
        ["manifold", *m, "--limit", "20", "--size", "4", "-o", "mf.png"],
        ["project", *m, "--dataset", "digits", "--limit", "40", "-o", "p.png"],
        ["tour", *m, "--dataset", "digits", "-o", "tour"],
    ]
    for args in runs:
        result = cli(*args)
        assert result.exit_code == 0, (args, result.stderr)
    assert np.load(tmp_path / "z.npy").shape == (2, 3)  # the top layer's codes
    assert Image.open(tmp_path / "s.png").size[0] > 28
    evaluation = cli("eval", *m, "--dataset", "digits", "--limit", "30", "-k", "20", "--json")
    assert evaluation.exit_code == 0, evaluation.stderr
    report = json.loads(evaluation.stdout)
    assert report["nll"] <= report["neg_elbo"]["loss"] + 1.0
    scores = cli("score", *m, "--dataset", "digits", "--limit", "5", "-s", "nll,elbo,kl", "-k", "10",
                 "--format", "csv")
    assert scores.exit_code == 0, scores.stderr
    assert len(scores.stdout.strip().splitlines()) == 6  # a header and five images


def test_regret_needs_a_single_latent_and_refuses_it(cli, hvae_model):
    result = cli("score", "--dataset", "digits", "--limit", "5", "-s", "regret", "-m", hvae_model)
    line = one_error_line(result)
    assert result.exit_code == 2 and "--score regret works on the single latent" in line
    assert "-m mnist-resnet" in line  # the fix names a bundled model that has one


@pytest.mark.slow
def test_a_standard_mixture_at_the_top_gives_the_same_weights_as_n01(hvae_model):
    """One component at N(0, I) is the standard prior written as a mixture: the IW terms must agree."""
    from vaecli.model.objective import log_weights
    from vaecli.model.prior import MixturePrior

    model = load_checkpoint(hvae_model).model
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(0))
    plain = log_weights(model, x, 5, torch.Generator().manual_seed(1))
    model.prior = MixturePrior(1, model.config.latent_dim)
    mixed = log_weights(model, x, 5, torch.Generator().manual_seed(1))
    assert torch.allclose(plain, mixed, atol=1e-4)
    # The training KL of the top layer is then drawn at z_1, and averages to the exact one.
    noise = torch.randn((20000, model.noise_dims), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        drawn = model(x[:1].expand(20000, -1, -1, -1), noise=noise).kl[:, 0].mean()
        model.prior = None
        exact = model(x[:1], noise=noise[:1]).kl[0, 0]
    assert float(drawn) == pytest.approx(float(exact), abs=0.05)


def test_fit_prior_fits_the_top_layer_and_every_command_uses_it(cli, hvae_model, tmp_path):
    fitted = tmp_path / "fitted.safetensors"
    result = cli("fit-prior", "-m", hvae_model, "-o", fitted, "--components", "3", "--dataset", "digits",
                 "--limit", "192", "--json")
    assert result.exit_code == 0, result.stderr
    fit = json.loads(result.stdout)
    # The KL the fit reports is the top layer's: under N(0, I) that of training's last test.
    trained = load_checkpoint(hvae_model).meta["history"][-1]["test"]
    assert fit["test_kl_standard"] == pytest.approx(trained["kl_per_layer"][0], abs=1e-4)
    checkpoint = load_checkpoint(fitted)
    assert checkpoint.config.model.prior_components == 3 and checkpoint.model.prior is not None
    info = cli("info", fitted).stdout
    assert "mixture of 3 full-covariance Gaussians at the top, fitted to the top layer's codes" in info
    # Only the top layer's KL changes: the whole -ELBO moves by the difference.
    kl = trained["kl"] - fit["test_kl_standard"] + fit["test_kl_mixture"]
    assert f"{trained['recon'] + kl:.2f} nats (recon {trained['recon']:.2f}, KL {kl:.2f}, the top layer's" in info
    evaluation = cli("eval", "-m", fitted, "--dataset", "digits", "--limit", "30", "-k", "20", "--json")
    assert evaluation.exit_code == 0, evaluation.stderr
    assert json.loads(evaluation.stdout)["prior_components"] == 3
    for args in (["sample", "-n", "4", "--grid", "s.png"], ["traverse", "--limit", "20", "-o", "t.png"]):
        done = cli(*args, "-m", fitted)
        assert done.exit_code == 0, (args, done.stderr)
    resumed = cli("train", "--resume", fitted, "--epochs", "3", "-q", "--no-report")
    assert resumed.exit_code == 0, resumed.stderr
    assert load_checkpoint(fitted).meta["history"][-1]["test"]["kl_per_layer"][0] > 0


def test_sample_draws_the_lower_layers_seeded_and_prefix_stable(cli, hvae_model, tmp_path):
    def files(count: str, folder: str) -> list[bytes]:
        result = cli("sample", "-m", hvae_model, "-n", count, "--seed", "4", "-o", folder)
        assert result.exit_code == 0, result.stderr
        return [path.read_bytes() for path in sorted((tmp_path / folder).glob("sample-*.png"))]

    three, five = files("3", "a"), files("5", "b")
    assert three == five[:3]  # the first images do not depend on -n
    model = load_checkpoint(hvae_model).model
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, model.lower_dims, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        means = model.decode(z)
        assert torch.equal(model.decode(z, lower_noise=torch.zeros_like(noise)), means)  # noise 0: the prior means
        assert not torch.allclose(model.decode(z, lower_noise=noise), means)
