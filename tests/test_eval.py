"""`vae eval` and the importance-weighted estimator, checked against a closed-form likelihood."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from vaecli.config import ModelConfig
from vaecli.data.datasets import binarize_fixed
from vaecli.model.blocks import LOGVAR_BOUND
from vaecli.model.gaussian import kl_divergence
from vaecli.model.interface import VAEModel
from vaecli.model.networks import VAE
from vaecli.model.prior import MixturePrior
from vaecli.training.evaluate import evaluate_split, iw_nll

SIDE, LATENT, SIGMA = 4, 2, 0.5  # 16 pixels, a 2-D latent, decoder noise std


def _linear_gaussian(exact_posterior: bool, images: int = 64) -> tuple[VAEModel, torch.Tensor, torch.Tensor]:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I); the marginal is N(b, W W^T + s^2 I)."""
    gen = torch.Generator().manual_seed(0)
    dims = SIDE * SIDE
    # Orthogonal columns make the true posterior diagonal, so a linear encoder can be exact.
    q, _ = torch.linalg.qr(torch.randn(dims, LATENT, generator=gen))
    weight = q * torch.tensor([2.0, 0.7])
    bias = torch.randn(dims, generator=gen) * 0.3
    config = ModelConfig(arch="mlp", latent_dim=LATENT, height=SIDE, width=SIDE, likelihood="gaussian")
    decoder = nn.Sequential(nn.Linear(LATENT, dims), nn.Unflatten(1, (1, SIDE, SIDE)))
    encoder_linear = nn.Linear(dims, 2 * LATENT)
    encoder = nn.Sequential(nn.Flatten(), encoder_linear)
    model = VAE(config, encoder, decoder)
    with torch.no_grad():
        decoder[0].weight.copy_(weight)
        decoder[0].bias.copy_(bias)
        model.decoder_logvar.fill_(math.log(SIGMA**2))
        precision = torch.eye(LATENT) + weight.T @ weight / SIGMA**2
        post_cov = torch.linalg.inv(precision)  # diagonal here
        gain = post_cov @ weight.T / SIGMA**2  # mu = gain (x - b)
        logvar = torch.log(torch.diagonal(post_cov))
        if not exact_posterior:  # a deliberately poor encoder: shrunk means, too-wide variances
            gain, logvar = gain * 0.6, logvar + 1.0
        encoder_linear.weight.zero_()
        encoder_linear.weight[:LATENT] = gain
        encoder_linear.bias[:LATENT] = -gain @ bias
        # The encoder bounds its log-variance as B tanh(raw / B); invert that to hit logvar exactly.
        encoder_linear.bias[LATENT:] = LOGVAR_BOUND * torch.atanh(logvar / LOGVAR_BOUND)
    covariance = weight @ weight.T + SIGMA**2 * torch.eye(dims)
    x = bias + torch.randn(images, dims, generator=gen) @ torch.linalg.cholesky(covariance).T
    exact_nll = -torch.distributions.MultivariateNormal(bias, covariance).log_prob(x)
    return model, x.view(-1, 1, SIDE, SIDE), exact_nll


def test_exact_posterior_gives_the_exact_likelihood_even_with_one_sample():
    model, x, exact = _linear_gaussian(exact_posterior=True)
    estimate = iw_nll(model, x, 1, torch.Generator().manual_seed(1))
    assert torch.allclose(estimate, exact.double(), atol=1e-3)


@pytest.mark.slow
def test_estimate_converges_to_the_exact_likelihood_as_k_grows():
    model, x, exact = _linear_gaussian(exact_posterior=False)
    errors = {}
    for k in (1, 10, 100, 2000):
        estimate = iw_nll(model, x, k, torch.Generator().manual_seed(k))
        errors[k] = float((estimate - exact.double()).mean())
        # A bound: never below the exact -log p(x) by more than Monte Carlo noise.
        assert errors[k] > -0.05, errors
    assert errors[1] > 0.5  # the poor encoder leaves a real gap at K = 1 (the ELBO)
    assert errors[1] > errors[10] > errors[100]
    assert abs(errors[2000]) < 0.01 * errors[1]  # within noise of the exact value


@pytest.mark.slow
def test_estimate_converges_under_a_mixture_prior():
    """p(z) = sum_c w_c N(m_c, S_c) makes p(x) = sum_c w_c N(W m_c + b, W S_c W^T + s^2 I)."""
    model, _, _ = _linear_gaussian(exact_posterior=False)
    weights = torch.tensor([0.3, 0.7])
    means = torch.tensor([[1.2, -0.4], [-0.5, 0.3]])
    covariances = torch.stack([torch.tensor([[0.5, 0.2], [0.2, 0.4]]), torch.tensor([[0.3, -0.1], [-0.1, 0.6]])])
    prior = MixturePrior(2, LATENT)
    prior.log_weights.copy_(weights.log())
    prior.means.copy_(means)
    # U with U U^T = S^-1, upper triangular: the transposed inverse of S's lower Cholesky factor.
    prior.precision_cholesky.copy_(torch.linalg.inv(torch.linalg.cholesky(covariances)).mT)
    model.prior = prior
    weight, bias = model.decoder[0].weight.detach(), model.decoder[0].bias.detach()
    marginal = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(weights),
        torch.distributions.MultivariateNormal(
            means @ weight.T + bias, weight @ covariances @ weight.T + SIGMA**2 * torch.eye(SIDE * SIDE)
        ),
    )
    torch.manual_seed(5)
    x = marginal.sample(torch.Size([64]))
    exact = -marginal.log_prob(x).double()
    x = x.view(-1, 1, SIDE, SIDE)
    errors = {}
    for k in (1, 100, 3000):
        errors[k] = float((iw_nll(model, x, k, torch.Generator().manual_seed(k)) - exact).mean())
        assert errors[k] > -0.05, errors
    assert errors[1] > 0.5 and errors[1] > errors[100]
    assert abs(errors[3000]) < 0.02 * errors[1], errors


def _exact_negative_elbo(model: VAEModel, x: torch.Tensor) -> torch.Tensor:
    """-ELBO in closed form: E_q[(x - Wz - b)^2] = (x - W mu - b)^2 + sum_j W_ij^2 var_j."""
    with torch.no_grad():
        mu, logvar = model.encode(x)
        weight = model.decoder[0].weight
        residual = (x.flatten(1) - model.decode(mu).flatten(1)).square().sum(1)
        spread = (weight.square().sum(0) * logvar.exp()).sum(1)
        recon = 0.5 * (x[0].numel() * math.log(2 * math.pi * SIGMA**2) + (residual + spread) / SIGMA**2)
        return recon + kl_divergence(mu, logvar)


@pytest.mark.slow
def test_split_summary_brackets_the_exact_likelihood():
    model, x, exact = _linear_gaussian(exact_posterior=False, images=1024)
    neg_elbo = float(_exact_negative_elbo(model, x).mean())
    result = evaluate_split(model, x, 200, seed=0)
    # The reported -ELBO (one sample per image, analytic KL) matches its closed form within noise
    # (its standard deviation over seeds is about 0.12 nats for 1024 images)...
    assert result.elbo_loss == pytest.approx(neg_elbo, abs=0.5)
    assert result.elbo_loss == pytest.approx(result.recon + result.kl)
    # ...and the IW figure lies between the exact -log p(x) and -ELBO, near the former.
    gap = neg_elbo - float(exact.mean())
    assert gap > 1.0
    assert -0.05 < result.nll - float(exact.mean()) < 0.05 * gap
    assert result.nll <= result.elbo_loss + 0.05
    assert result.bits_per_dim == pytest.approx(result.nll / (SIDE * SIDE * math.log(2)))
    assert result.images == 1024 and result.iw_samples == 200
    assert model.training  # the model's mode is given back


def test_chunked_samples_match_one_pass():
    model, x, _ = _linear_gaussian(exact_posterior=False)
    whole = iw_nll(model, x, 300, torch.Generator().manual_seed(3))
    chunked = iw_nll(model, x, 300, torch.Generator().manual_seed(3), rows=64)  # 5 chunks, one image a pass
    # Other chunks draw other samples, so the two agree to Monte Carlo noise, not bit for bit.
    assert abs(float(whole.mean() - chunked.mean())) < 0.05
    assert not torch.equal(whole, chunked)


def test_eval_cli_json(cli, tiny_model):
    result = cli("eval", "-m", tiny_model, "--dataset", "digits", "--limit", "40", "--iw-samples", "20", "--json",
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 40 and report["iw_samples"] == 20 and report["binarized"] is False
    elbo = report["neg_elbo"]
    assert elbo["loss"] == pytest.approx(elbo["recon"] + elbo["kl"])
    assert report["nll"] <= elbo["loss"] + 1.0
    assert report["bits_per_dim"] == pytest.approx(report["nll"] / (784 * math.log(2)))


def test_eval_cli_text_and_binarize_is_repeatable(cli, tiny_model):
    args = ["eval", "-m", tiny_model, "--dataset", "digits", "--limit", "30", "-k", "5", "--binarize", "--json",
            "--device", "cpu"]
    first, second = (json.loads(cli(*args).stdout) for _ in range(2))
    for report in (first, second):
        report.pop("elapsed_s")
    assert first == second and first["binarized"] is True
    text = cli("eval", "-m", tiny_model, "--dataset", "digits", "--limit", "10", "-k", "3", "--device", "cpu")
    assert text.exit_code == 0 and "-log p(x)" in text.stdout and "bits per dim" in text.stdout


def test_binarized_test_set_is_fixed():
    pixels = torch.rand(50, 1, 28, 28)
    a, b = binarize_fixed(pixels), binarize_fixed(pixels.clone())
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(a.mean()) - float(pixels.mean())) < 0.01


def test_small_batches_bound_memory_without_changing_the_estimate(cli, tiny_model):
    args = ["eval", "-m", tiny_model, "--dataset", "digits", "--limit", "6", "-k", "50", "--json", "--device", "cpu"]
    whole = json.loads(cli(*args).stdout)
    result = cli(*args, "--decode-rows", "16")  # 50 samples in 4 chunks, one image a pass
    assert result.exit_code == 0, result.stderr
    chunked = json.loads(result.stdout)
    assert chunked["neg_elbo"] == whole["neg_elbo"]  # the ELBO pass does not depend on it
    assert chunked["nll"] == pytest.approx(whole["nll"], abs=1.0)  # other draws, same estimate


@pytest.mark.parametrize("option", ["--iw-samples", "--decode-rows"])
@pytest.mark.parametrize("bad", ["0", "-3"])
def test_bad_counts_are_usage_errors(cli, tiny_model, option, bad):
    result = cli("eval", "-m", tiny_model, option, bad)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and option in result.stderr
