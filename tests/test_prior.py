"""The mixture prior: its density, its samples, its fit, and `vae fit-prior` end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaecli.analysis.latent import sample_prior
from vaecli.config import ModelConfig, TrainConfig
from vaecli.model.gaussian import standard_log_density as standard_normal_log_prob
from vaecli.model.networks import build_model
from vaecli.model.prior import MixturePrior, fit_mixture
from vaecli.store.checkpoint import build_metadata, load_checkpoint, save_checkpoint


def _random_prior(components: int = 3, latent: int = 4, seed: int = 0) -> MixturePrior:
    gen = torch.Generator().manual_seed(seed)
    prior = MixturePrior(components, latent)
    prior.log_weights.copy_(torch.rand(components, generator=gen).add(0.2).log().log_softmax(0))
    prior.means.copy_(2 * torch.randn(components, latent, generator=gen))
    factors = torch.randn(components, latent, latent, generator=gen) * 0.3 + torch.eye(latent)
    covariances = factors @ factors.mT + 0.1 * torch.eye(latent)
    prior.precision_cholesky.copy_(torch.linalg.inv(torch.linalg.cholesky(covariances)).mT)
    return prior


def _reference(prior: MixturePrior) -> torch.distributions.Distribution:
    covariances = torch.linalg.inv(prior.precision_cholesky @ prior.precision_cholesky.mT)
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=prior.log_weights),
        torch.distributions.MultivariateNormal(prior.means, covariance_matrix=covariances),
    )


def test_log_prob_matches_torch_distributions():
    prior = _random_prior()
    z = torch.randn(2, 50, 4) * 3
    assert prior.log_prob(z).shape == (2, 50)
    assert torch.allclose(prior.log_prob(z), _reference(prior).log_prob(z), atol=1e-4)


def test_untouched_mixture_is_the_standard_normal():
    z = torch.randn(20, 5)
    assert torch.allclose(MixturePrior(4, 5).log_prob(z), standard_normal_log_prob(z), atol=1e-5)


def test_samples_follow_the_mixture_and_are_prefix_stable():
    prior = _random_prior()
    draws = prior.sample(40_000, 1.0, torch.Generator().manual_seed(1)).double()
    reference = _reference(prior)
    assert torch.allclose(draws.mean(0), reference.mean.double(), atol=0.06)
    assert torch.allclose(torch.cov(draws.T), _covariance(reference), atol=0.15)
    # Held-out samples score as well under the model as its own draws do (a wrong sampler would not).
    own = reference.sample(torch.Size([20_000]))
    assert float(reference.log_prob(draws.float()).mean()) == pytest.approx(float(reference.log_prob(own).mean()),
                                                                              abs=0.05)


@pytest.mark.parametrize("components", [0, 3])
@pytest.mark.parametrize("latent", [4, 10, 32, 33])
def test_first_samples_do_not_depend_on_count(components, latent):
    model = build_model(ModelConfig(arch="mlp", latent_dim=latent, hidden=16, prior_components=components))
    if components:
        model.prior = _random_prior(components, latent)
    draws = {count: sample_prior(model, count, 0.8, torch.Generator().manual_seed(3)) for count in (1, 5, 50)}
    assert torch.equal(draws[1], draws[50][:1]) and torch.equal(draws[5], draws[50][:5])


def _covariance(mixture: torch.distributions.MixtureSameFamily) -> torch.Tensor:
    weights = mixture.mixture_distribution.probs.double()
    means = mixture.component_distribution.mean.double()
    covariances = mixture.component_distribution.covariance_matrix.double()
    centre = weights @ means
    second = (weights[:, None, None] * (covariances + means[:, :, None] * means[:, None, :])).sum(0)
    return second - centre[:, None] * centre[None, :]


def test_zero_temperature_gives_component_means():
    prior = _random_prior()
    draws = prior.sample(30, 0.0, torch.Generator().manual_seed(0))
    distances = torch.cdist(draws, prior.means).min(1).values
    assert float(distances.max()) < 1e-5


def test_fit_recovers_a_known_mixture():
    truth = _random_prior(components=2, latent=3, seed=4)
    data = _reference(truth).sample(torch.Size([6000]))
    fitted = fit_mixture(data[:5000], 2, seed=0)
    held_out = data[5000:]
    assert float(fitted.log_prob(held_out).mean()) == pytest.approx(float(truth.log_prob(held_out).mean()), abs=0.05)
    assert float(fitted.log_prob(held_out).mean()) > float(standard_normal_log_prob(held_out).mean()) + 1.0


def test_prior_is_saved_and_rebuilt(tmp_path):
    model = build_model(ModelConfig(arch="mlp", latent_dim=4, hidden=16, prior_components=3))
    model.prior = _random_prior()
    config = TrainConfig(model=model.config)
    save_checkpoint(tmp_path / "m.safetensors", model, build_metadata(config))
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    z = torch.randn(10, 4)
    assert loaded.config.model.prior_components == 3
    assert torch.allclose(loaded.model.log_prior(z), model.log_prior(z))


@pytest.mark.slow
def test_fit_prior_cli(cli, tiny_model, tmp_path):
    out = tmp_path / "fitted.safetensors"
    result = cli("fit-prior", "-m", tiny_model, "-o", out, "--components", "3", "--limit", "300", "--json",
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["checkpoint"] == str(out) and report["components"] == 3 and report["codes"] == 600
    # Fitted to the training codes, the mixture is closer to the test posteriors than N(0, I) is.
    assert report["test_kl_mixture"] < report["test_kl_standard"]
    meta = json.loads(cli("info", out, "--json").stdout)
    assert meta["config"]["model"]["prior_components"] == 3
    assert meta["prior"]["command"].startswith(f"vae fit-prior -m {tiny_model} -o {out} ")
    assert meta["recipe"][0].startswith("vae train ")
    assert meta["recipe"][0].endswith(f"-o {tiny_model}") and meta["recipe"][1] == meta["prior"]["command"]
    assert "mixture of 3" in cli("info", out).stdout

    # eval's KL is now taken against the mixture; the decoder, so the reconstruction term, is unchanged.
    args = ["eval", "--dataset", "digits", "--limit", "100", "-k", "50", "--json", "--device", "cpu"]
    before = json.loads(cli(*args, "-m", tiny_model).stdout)
    after = json.loads(cli(*args, "-m", out).stdout)
    assert after["neg_elbo"]["recon"] == pytest.approx(before["neg_elbo"]["recon"])
    assert after["neg_elbo"]["kl"] != pytest.approx(before["neg_elbo"]["kl"], abs=1e-3)
    assert math.isfinite(after["nll"]) and after["nll"] <= after["neg_elbo"]["loss"] + 1.0
    assert (before["prior_components"], after["prior_components"]) == (0, 3)

    # Samples come from the mixture: the same seed gives other images than N(0, I) does.
    grids = {}
    for name, model in (("plain", tiny_model), ("fitted", out)):
        grid = tmp_path / f"{name}.png"
        assert cli("sample", "-m", model, "-n", "8", "--grid", grid, "--device", "cpu").exit_code == 0
        grids[name] = (tmp_path / f"{name}.png").read_bytes()
    assert grids["plain"] != grids["fitted"]

    # Training goes on under the fixed mixture, and the file still says how the prior was fitted.
    trained = tmp_path / "trained.safetensors"
    epochs = json.loads(cli("info", tiny_model, "--json").stdout)["epochs_done"]
    result = cli("train", "--resume", out, "--epochs", str(epochs + 1), "-o", trained, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    fitted, resumed = load_checkpoint(out), load_checkpoint(trained)
    assert torch.equal(resumed.model.prior.means, fitted.model.prior.means)
    assert not torch.equal(resumed.model.decoder[0].weight, fitted.model.decoder[0].weight)
    assert resumed.meta["prior"] == fitted.meta["prior"] and resumed.epochs_done == epochs + 1
    assert resumed.meta["recipe"][:2] == fitted.meta["recipe"]
    assert resumed.meta["recipe"][2].startswith(f"vae train --resume {out} --epochs {epochs + 1}")
    assert "recipe step 3" in cli("info", trained).stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--components", "0"], "--components must be between 1"),
    (["--samples", "0"], "--samples must be between 1 and 1000"),
    (["--components", "500", "--limit", "100"], "more than the 200 codes"),
])
def test_fit_prior_refuses_bad_options(cli, tiny_model, tmp_path, args, message):
    result = cli("fit-prior", "-m", tiny_model, "-o", tmp_path / "x.safetensors", *args, "--device", "cpu")
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.slow
def test_loading_a_mixture_model_stays_light():
    # Building the prior's buffers on the meta device once pulled in sympy: a second per command.
    import subprocess
    import sys

    code = ("import sys; from vaecli.store.bundled import resolve_model; "
            "from vaecli.store.checkpoint import load_checkpoint; "
            "load_checkpoint(resolve_model('mnist')[0]); print('sympy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
