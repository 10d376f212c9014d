"""Every model family shows one surface (model/interface.py): a joint draw from q gives the ELBO's terms and the
importance weights, so the code above the model never asks which kind it holds."""

from __future__ import annotations

import pytest
import torch

from vaecli.config import ARCHITECTURES, ModelConfig
from vaecli.model.interface import Draw, VAEModel
from vaecli.model.networks import build_model
from vaecli.model.objective import log_weights, loss_terms
from vaecli.model.prior import MixturePrior


def _model(arch: str, prior: bool = False) -> VAEModel:
    torch.manual_seed(0)
    config = ModelConfig(arch=arch, latent_dim=3, hidden=8, height=12, width=12)
    model = build_model(config).eval()
    if prior:
        model.prior = MixturePrior(2, 3)
        model.prior.means.copy_(torch.tensor([[1.0, 0.0, -1.0], [-1.0, 0.5, 0.0]]))
    return model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_draw_has_the_same_shape_for_every_family(arch):
    model = _model(arch)
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        draw = model(x, generator=torch.Generator().manual_seed(0), samples=3)
    assert isinstance(draw, Draw) and isinstance(model, VAEModel)
    assert draw.output.shape[0] == 6 and draw.kl.shape == (6, model.layers) and draw.log_ratio.shape == (6,)
    assert draw.mu.shape == draw.logvar.shape == (2, 3)
    assert model.noise_dims == 3 + model.lower_dims and (model.layers == 1) == (model.lower_dims == 0)


@pytest.mark.parametrize("prior", [False, True], ids=["standard", "mixture"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_kl_is_the_mean_of_log_q_over_p_so_the_elbo_and_the_weights_agree(arch, prior):
    # One pass gives both: E_q[KL terms] = E_q[log q(z|x) - log p(z)] = -E_q[log_ratio], layer by layer summed.
    model = _model(arch, prior)
    x = torch.bernoulli(torch.full((1, 1, 12, 12), 0.4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        draw = model(x, generator=torch.Generator().manual_seed(2), samples=4000)
        recon, kls = loss_terms(model, draw, x.expand(4000, -1, -1, -1))
        weights = log_weights(model, x, 4000, torch.Generator().manual_seed(3))
    elbo = -(recon + kls.sum(1)).mean()
    assert float(kls.sum(1).mean()) == pytest.approx(float(-draw.log_ratio.mean()), abs=0.05)
    assert float(weights.mean()) == pytest.approx(float(elbo), abs=0.1)
    # The importance-weighted bound is above the ELBO.
    assert float(torch.logsumexp(weights, 1) - torch.log(torch.tensor(4000.0))) >= float(elbo) - 0.05


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_layer_decodes_back_through_decode_layers(arch):
    model = _model(arch)
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        layers = model.posterior_mean_layers(x)
        assert len(layers) == model.layers and layers[0].shape == (2, 3)
        assert model.decode_layers(layers).shape[0] == 2
        fast = model.fast_decoder()
        if fast is not None:  # an equivalent decoder: the same weights for the same draws
            noise = model.draw_noise(2, torch.Generator().manual_seed(0), x.device)
            torch.testing.assert_close(model(x, noise=noise, decoder=fast).output, model(x, noise=noise).output,
                                       rtol=1e-4, atol=1e-4)
