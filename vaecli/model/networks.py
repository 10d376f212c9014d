"""VAE architectures, built for any image shape. Imports torch only."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TypeGuard, TypeVar

import torch
from torch import nn

from vaecli.config import ModelConfig, halved_sizes
from vaecli.model.blocks import (
    BoundedLogits,
    ResidualBlock,
    gaussian_decoder_logvar,
    posterior_logvar,
    posterior_offset,
    upsampler,
)
from vaecli.model.hierarchical import hierarchical_model
from vaecli.model.interface import Draw, VAEModel, repeat_rows
from vaecli.model.prior import MixturePrior


class VAE(VAEModel):
    """q(z|x) = N(mu, diag(exp(logvar))), p(z) = N(0, I) or a mixture, p(x|z) given by decoder logits."""

    def __init__(self, config: ModelConfig, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.config = config
        self.encoder = encoder  # (B, C, H, W) -> (B, 2 * latent)
        self.decoder = decoder  # (B, latent) -> (B, C, H, W) logits or means; (B, P * C, H, W) for logistic
        if config.likelihood == "gaussian":
            # One learned log-variance per channel for p(x|z) (a fixed variance would need tuning).
            self.decoder_logvar = gaussian_decoder_logvar(config.channels)
        self.prior = MixturePrior(config.prior_components, config.latent_dim) if config.prior_components else None

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (B, latent); a conditional model needs the labels (B,)."""
        out = self.encoder(x) if not self.config.classes else self.encoder(x, self._one_hot(labels))
        mu, raw_logvar = out.chunk(2, dim=1)
        return posterior_offset(mu), posterior_logvar(raw_logvar)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None,
               lower_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output for z: Bernoulli logits or Gaussian means (B, C, H, W); logistic: (B, P * C, H, W)."""
        return run_decoder(self, self.decoder, z, labels)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, samples: int = 1, decoder: nn.Module | None = None) -> Draw:
        """`samples` draws z ~ q(z|x) per image (one encoder pass), decoded, with the KL and log p(z)/q(z|x)."""
        mu, logvar = self.encode(x, labels)
        rows_mu, rows_logvar = repeat_rows(mu, samples), repeat_rows(logvar, samples)
        z = reparameterize(rows_mu, rows_logvar, generator, noise)
        output = run_decoder(self, self.decoder if decoder is None else decoder, z, repeat_rows(labels, samples))
        kl, log_ratio = self.top_terms(z, rows_mu, rows_logvar)
        return Draw(output, kl.unsqueeze(1), log_ratio, mu, logvar)

    def posterior_mean_layers(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every layer at its posterior mean given x, as HVAE's: here the one z, [(B, latent)]."""
        return [self.encode(x, labels)[0]]

    def decode_layers(self, layers: list[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output for [z], posterior_mean_layers' form."""
        return self.decode(layers[0], labels)

    def fast_decoder(self) -> nn.Module | None:
        """inference_decoder's copy: the transposed convolutions rewritten, which pays for a one-layer decoder."""
        return inference_decoder(self)

    def _one_hot(self, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError("a conditional model needs the images' labels")
        return nn.functional.one_hot(labels.long(), self.config.classes).float()


def run_decoder(model: VAE, decoder: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The model's decoder, or an equivalent copy (inference_decoder), on codes (B, latent) and labels (B,)."""
    if not model.config.classes:
        return decoder(z)
    return decoder(torch.cat([z, model._one_hot(labels).to(z.dtype)], dim=1))


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """z = mu + sigma * eps (Kingma and Welling 2014, eq. 10); eps is drawn on mu's device unless given."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype) if noise is None else noise
    return mu + eps * torch.exp(0.5 * logvar)


def output_channels(config: ModelConfig) -> int:
    """The decoder's output channels: one map per subpixel, or the logistic's parameters (logistic.py)."""
    return config.channels * config.output_params


def build_mlp(config: ModelConfig) -> tuple[nn.Sequential, nn.Sequential]:
    """Two hidden layers each way, widths hidden and hidden/2."""
    wide = config.hidden
    narrow = max(wide // 2, 1)
    pixels = config.channels * config.height * config.width
    outputs = output_channels(config) * config.height * config.width
    encoder = nn.Sequential(
        nn.Flatten(),
        nn.Linear(pixels, wide),
        nn.SiLU(),
        nn.Linear(wide, narrow),
        nn.SiLU(),
        nn.Linear(narrow, 2 * config.latent_dim),
    )
    decoder = nn.Sequential(
        nn.Linear(config.latent_dim, narrow),
        nn.SiLU(),
        nn.Linear(narrow, wide),
        nn.SiLU(),
        nn.Linear(wide, outputs),
        nn.Unflatten(1, (output_channels(config), config.height, config.width)),
    )
    return encoder, decoder


def conv_stage_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 stage, halving (rounding up) down to about 4 pixels."""
    times = 1
    while times < 5 and max(halved_sizes(height, width, times)[-1]) > 4:
        times += 1
    return halved_sizes(height, width, times)


def build_cnn(config: ModelConfig) -> tuple[nn.Sequential, nn.Sequential]:
    """Stride-2 3x3 convolutions (channels doubling per stage), a dense bottleneck, and a mirror."""
    base = config.hidden
    sizes = conv_stage_sizes(config.height, config.width)
    stages = len(sizes) - 1
    widths = [config.channels] + [min(base * 2**i, 512) for i in range(stages)]
    dense = 256
    last_h, last_w = sizes[-1]
    flat = widths[-1] * last_h * last_w

    encoder_layers: list[nn.Module] = []
    for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
        encoder_layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.SiLU()]
    encoder = nn.Sequential(
        *encoder_layers,
        nn.Flatten(),
        nn.Linear(flat, dense),
        nn.SiLU(),
        nn.Linear(dense, 2 * config.latent_dim),
    )

    decoder_layers: list[nn.Module] = [
        nn.Linear(config.latent_dim, dense),
        nn.SiLU(),
        nn.Linear(dense, flat),
        nn.SiLU(),
        nn.Unflatten(1, (widths[-1], last_h, last_w)),
    ]
    out_widths = [output_channels(config), *widths[1:]]
    for stage in range(stages, 0, -1):
        decoder_layers.append(
            upsampler(out_widths[stage], out_widths[stage - 1], sizes[stage], sizes[stage - 1], config.upsampling)
        )
        if stage > 1:
            decoder_layers.append(nn.SiLU())
    return encoder, nn.Sequential(*decoder_layers)


def build_resnet(config: ModelConfig) -> tuple[nn.Sequential, nn.Sequential]:
    """Stride-2 convolutions down to about 8 pixels, a residual block after each, and a mirror."""
    base = config.hidden
    sizes = [(config.height, config.width)]
    while len(sizes) < 2 or (max(sizes[-1]) > 8 and len(sizes) <= 4):
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    stages = len(sizes) - 1
    widths = [config.channels] + [base * min(2**i, 4) for i in range(stages)]
    last_h, last_w = sizes[-1]
    flat = widths[-1] * last_h * last_w
    dense = 256

    encoder_layers: list[nn.Module] = []
    for stage in range(1, stages + 1):
        encoder_layers += [
            nn.Conv2d(widths[stage - 1], widths[stage], 3, stride=2, padding=1),
            ResidualBlock(widths[stage]),
            nn.SiLU(),
        ]
    encoder = nn.Sequential(
        *encoder_layers, nn.Flatten(), nn.Linear(flat, dense), nn.SiLU(), nn.Linear(dense, 2 * config.latent_dim),
    )
    decoder_layers: list[nn.Module] = [
        nn.Linear(config.latent_dim, dense), nn.SiLU(), nn.Linear(dense, flat),
        nn.Unflatten(1, (widths[-1], last_h, last_w)),
    ]
    out_widths = [output_channels(config), *widths[1:]]
    for stage in range(stages, 0, -1):
        decoder_layers += [
            ResidualBlock(widths[stage]),
            nn.SiLU(),
            upsampler(widths[stage], out_widths[stage - 1], sizes[stage], sizes[stage - 1], config.upsampling),
        ]
    return encoder, nn.Sequential(*decoder_layers)


# One-layer architectures: name -> builder of (encoder, decoder), wrapped by one_layer_model (see MODELS).
BUILDERS: dict[str, Callable[[ModelConfig], tuple[nn.Sequential, nn.Sequential]]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "resnet": build_resnet,
}

# Taps of a 3x3, stride-2, padding-1 transposed convolution, per output parity: an even output
# row reads kernel row 1 at input offset 0; an odd one reads row 2 at offset 0 and row 0 at offset 1.
_PARITY_TAPS = {0: ((0, 1),), 1: ((0, 2), (1, 0))}


class SubPixelConvTranspose(nn.Module):
    """The same function as a 3x3 stride-2 ConvTranspose2d, as a 2x2 convolution and a pixel shuffle.

    For inference only: oneDNN runs the transposed convolution's scattered writes far slower than
    a plain convolution that writes all four output parities as channels.
    """

    def __init__(self, layer: nn.ConvTranspose2d):
        super().__init__()
        weight = layer.weight.detach()  # (in, out, 3, 3)
        c_in, c_out = weight.shape[:2]
        kernel = weight.new_zeros(c_out, 2, 2, c_in, 2, 2)  # out, parity y, parity x, in, dy, dx
        for py, taps_y in _PARITY_TAPS.items():
            for px, taps_x in _PARITY_TAPS.items():
                for dy, ky in taps_y:
                    for dx, kx in taps_x:
                        kernel[:, py, px, :, dy, dx] = weight[:, :, ky, kx].T
        self.weight = nn.Parameter(kernel.reshape(4 * c_out, c_in, 2, 2), requires_grad=False)
        bias = layer.bias.detach() if layer.bias is not None else weight.new_zeros(c_out)
        self.bias = nn.Parameter(bias.repeat_interleave(4), requires_grad=False)
        self.output_padding = tuple(layer.output_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        y = nn.functional.conv2d(nn.functional.pad(x, (0, 1, 0, 1)), self.weight, self.bias)
        y = nn.functional.pixel_shuffle(y, 2)
        return y[..., : 2 * height - 1 + self.output_padding[0], : 2 * width - 1 + self.output_padding[1]]


def _is_subpixel_compatible(layer: nn.Module) -> TypeGuard[nn.ConvTranspose2d]:
    return (
        isinstance(layer, nn.ConvTranspose2d)
        and layer.kernel_size == (3, 3)
        and layer.stride == (2, 2)
        and layer.padding == (1, 1)
        and layer.dilation == (1, 1)
        and layer.groups == 1
    )


def inference_decoder(model: VAE) -> nn.Module:
    """A frozen copy of the decoder computing the same function faster (transposed convolutions rewritten)."""
    decoder = copy.deepcopy(model.decoder)
    for module in list(decoder.modules()):
        for child_name, child in list(module.named_children()):
            if _is_subpixel_compatible(child):
                setattr(module, child_name, SubPixelConvTranspose(child))
    decoder.requires_grad_(False).eval()
    if next(decoder.parameters()).device.type == "cpu":
        decoder = decoder.to(memory_format=torch.channels_last)
    return decoder


Placed = TypeVar("Placed", bound=nn.Module)


def place(model: Placed, device: torch.device | str) -> Placed:
    """Move a model to its device; on the CPU, channels-last weights run oneDNN's convolutions faster."""
    model = model.to(device)
    if torch.device(device).type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def build_model(config: ModelConfig) -> VAEModel:
    """Build an untrained model from its config (validated first), by MODELS[config.arch]."""
    config.validate()
    return MODELS[config.arch](config)


def one_layer_model(config: ModelConfig) -> VAE:
    """A VAE with one latent vector around the architecture's encoder and decoder (BUILDERS)."""
    encoder: nn.Module  # a Sequential, or a LabelledEncoder around one
    encoder, decoder = BUILDERS[config.arch](config)
    if config.classes:
        encoder, decoder = LabelledEncoder(encoder, config.classes), widen_input(decoder, config.classes)
    if config.likelihood == "bernoulli":
        decoder.append(BoundedLogits())  # no weights: every checkpoint loads as before
    return VAE(config, encoder, decoder)


# Every architecture's model: a new one joins with one entry here and its name in config.ARCHITECTURES, which
# lists the names without importing torch (tests/test_models.py checks they agree).
MODELS: dict[str, Callable[[ModelConfig], VAEModel]] = {
    **{name: one_layer_model for name in BUILDERS}, "hvae": hierarchical_model,
}


class LabelledEncoder(nn.Module):
    """q(z|x,y): the one-hot label joins the encoder's first dense layer (Sohn et al. 2015 feed it to
    the input; for convolutional encoders this is where a label is no longer a constant image plane)."""

    def __init__(self, encoder: nn.Sequential, classes: int):
        super().__init__()
        first_dense = next(i for i, layer in enumerate(encoder) if isinstance(layer, nn.Linear))
        self.features = encoder[:first_dense]
        self.dense = widen_input(encoder[first_dense:], classes)

    def forward(self, x: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        return self.dense(torch.cat([self.features(x).flatten(1), one_hot.to(x.dtype)], dim=1))


def widen_input(layers: nn.Sequential, extra: int) -> nn.Sequential:
    """The same layers, the first (a Linear) taking `extra` more inputs: p(x|z,y) reads [z, one-hot y]."""
    first = layers[0]
    assert isinstance(first, nn.Linear), "a conditional model's label joins at a dense layer"
    layers[0] = nn.Linear(first.in_features + extra, first.out_features)
    return layers
