"""Memory estimates made before the work: a run that cannot fit is refused with one line, not killed later."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vaecli.data.images import GRID_PADDING, grid_size
from vaecli.errors import SettingError
from vaecli.figures.plots import DPI, labelled_tile_inches, manifold_inches
from vaecli.model.networks import build_model
from vaecli.store.files import describe_size

if TYPE_CHECKING:
    from vaecli.config import ModelConfig
    from vaecli.model.interface import VAEModel

# Fraction of the free memory a run may plan to use: the estimates leave out allocator slack,
# the framework's own buffers and whatever else the machine runs.
USABLE_FRACTION = 0.7
# Bytes of activations per image, per pixel and per unit of width, that no architecture here exceeds
# (measured on the meta device: at most 32 for mlp, cnn and resnet at widths 4 to 128 and sizes 8 to 64).
ROUGH_ACTIVATION_BYTES = 64
ROUGH_ENOUGH = 4 << 30  # below this bound a step cannot matter, so the exact count is not worth its second
# float32 values per subpixel (and per mixture component) that a likelihood's loss holds at its peak, the
# decoder's output included: (with gradients, without). Measured from ru_maxrss on 32x32x3 batches:
# the logistic mixture 37.1 to 37.8 with (the output's gradient, 3, kept as a leaf's would not be in
# training), 19.9 to 22.0 without (its log-prob builds about twenty (N, M, C, H, W) tensors);
# Gaussian 10 and 5; Bernoulli 4 and 4.
LOSS_FLOATS = {"bernoulli": (4, 4), "gaussian": (10, 5), "logistic": (35, 22)}
# Each code lives a few times over in a pass: the noise, z, its reshaped copy, the log-densities' terms.
CODE_COPIES = 4
# A matplotlib figure's peak bytes per pixel of the drawn PNG, and per pixel of the image tile it shows
# (imshow resamples to the canvas in floats). Measured from ru_maxrss over labelled_tile_png: at most 85
# and 65 for grey and RGB tiles from 0.8 to 20 million figure pixels.
FIGURE_BYTES_PER_PIXEL = 90
TILE_BYTES_PER_PIXEL = 70
# A GIF's bytes per subpixel of its frames: PIL keeps every enlarged frame (scale^2 each) while it encodes,
# beside the frames as tensors. Measured at most 2.7 (grey) and 6.5 (RGB) per enlarged pixel at `scale=4`,
# 6.7 and 14.2 at `scale=1`: bounded by channels x (3 scale^2 + 8).
GIF_BYTES_PER_SCALED_SUBPIXEL = 3
GIF_BYTES_PER_SUBPIXEL = 8
# The largest fixed figure of `vae tour` (the samples' 6 x 6.4 in grid, the rows of 9.6 x 2.5 in) and
# the most images one of them shows (the 8 x 8 samples).
TOUR_FIGURE_INCHES = (10.0, 7.0)
TOUR_FIGURE_IMAGES = 64
MEMINFO = "/proc/meminfo"  # Linux's view of free memory (reclaimable cache counts); elsewhere sysconf


def available_bytes(device: torch.device | None = None) -> int:
    """Memory free for a new allocation: the GPU's free memory, else the system's available RAM."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open(MEMINFO) as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no such counter here (macOS): trust the other checks
        return 1 << 62


def check_fits(needed: int, device: torch.device | None, what: str, fix: str) -> None:
    """Refuse a run whose estimated memory exceeds what is free; `fix` says what to change."""
    free = int(available_bytes(device) * USABLE_FRACTION)
    if needed > free:
        where = "the GPU" if device is not None and device.type == "cuda" else "this machine"
        raise SettingError(
            f"{what} needs about {describe_size(needed)}, more than {where} has free "
            f"({describe_size(free)} usable); {fix}"
        )


@dataclass
class Estimate:
    """Bytes a model needs: its weights alone, and one step (weights, their extras, activations)."""

    weights: int
    step: int


def model_bytes(config: ModelConfig, batch: int, training: bool) -> int:
    """Estimated bytes of one step: weights (with gradients and Adam's moments when training) and activations."""
    return estimate(config, batch, training).step


def estimate(config: ModelConfig, batch: int, training: bool) -> Estimate:
    """The model's weight bytes and one step's bytes, from one model built on PyTorch's meta device.

    Small models get a safe bound on activations at once; larger ones run on the meta device, which
    computes shapes without allocating anything (but costs a second or more the first time).
    """
    with torch.device("meta"):
        model = build_model(config)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    rough = ROUGH_ACTIVATION_BYTES * batch * (
        max(config.hidden, config.channels) * config.height * config.width + config.latent_dim
    )
    activations = rough if rough * 3 <= ROUGH_ENOUGH else _activation_bytes(model, config, batch)
    activations += CODE_COPIES * 4 * batch * model.noise_dims
    # Training keeps every activation for the backward pass and a gradient of each beside it; the loss's
    # own tensors (the likelihood's parameters and their arithmetic) were measured as they are.
    step = weights * 4 + activations * 3 if training else weights + activations * 2
    return Estimate(weights=weights, step=step + likelihood_bytes(config, batch, training))


def likelihood_bytes(config: ModelConfig, rows: int, training: bool) -> int:
    """Peak bytes of the likelihood's loss on `rows` decoder outputs: its parameters and intermediates."""
    with_grad, without = LOSS_FLOATS[config.likelihood]
    components = config.mixtures if config.likelihood == "logistic" else 1
    return 4 * rows * components * (with_grad if training else without) * math.prod(config.image_shape)


def _activation_bytes(model: VAEModel, config: ModelConfig, batch: int) -> int:
    """The bytes of every layer's output in one forward pass of a meta-device model."""
    activations = 0

    def count(module: torch.nn.Module, inputs: object, output: object) -> None:
        nonlocal activations
        outputs = output if isinstance(output, tuple) else (output,)
        activations += sum(o.numel() * o.element_size() for o in outputs if isinstance(o, torch.Tensor))

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    with torch.device("meta"), torch.no_grad():
        labels = torch.zeros(batch, dtype=torch.int64) if config.classes else None
        model(torch.empty(batch, *config.image_shape), noise=torch.empty(batch, model.noise_dims), labels=labels)
    for hook in hooks:
        hook.remove()
    return activations


# --- the outputs of the drawing commands: figures, grids and GIFs of decoded images ----------------------


def figure_bytes(inches: tuple[float, float], tile_pixels: int) -> int:
    """Peak bytes of drawing a figure of (width, height) inches that shows a tile of `tile_pixels` pixels."""
    width, height = inches
    return int(FIGURE_BYTES_PER_PIXEL * width * height * DPI * DPI + TILE_BYTES_PER_PIXEL * tile_pixels)


def tile_pixels(config: ModelConfig, rows: int, columns: int) -> int:
    """Pixels of a tile of rows x columns decoded images, with the grid's padding."""
    return rows * (config.height + GRID_PADDING) * columns * (config.width + GRID_PADDING)


def traversal_bytes(config: ModelConfig, rows: int, bases: int, steps: int, gif_scale: int | None) -> int:
    """`vae traverse`: the swept codes, the decoded images, then the figure and (with gif_scale) the GIF."""
    images = rows * bases * steps
    decoded = images * math.prod(config.image_shape)
    codes = images * config.latent_dim * 4
    columns = bases * steps + bases - 1
    # The figure's tile holds the decoded images twice over (the cells, then the grid).
    figure = 2 * decoded + figure_bytes(labelled_tile_inches(rows, columns), tile_pixels(config, rows, columns))
    gif = 0 if gif_scale is None else gif_frames_bytes(config, 2 * steps - 2, tile_pixels(config, bases, rows),
                                                       gif_scale)
    return decoded + max(codes, figure, gif)


def gif_frames_bytes(config: ModelConfig, frames: int, frame_pixels: int, scale: int) -> int:
    """A GIF of `frames` frames of `frame_pixels` pixels each, enlarged `scale` times, as images.gif_bytes makes it."""
    per_subpixel = GIF_BYTES_PER_SCALED_SUBPIXEL * scale * scale + GIF_BYTES_PER_SUBPIXEL
    return frames * frame_pixels * config.channels * per_subpixel


def manifold_bytes(config: ModelConfig, size: int, with_codes: bool) -> int:
    """`vae manifold`: a size x size grid of codes, their decoded images and the figure showing them."""
    images = size * size
    decoded = images * math.prod(config.image_shape)
    figure = figure_bytes(manifold_inches(size, with_codes), tile_pixels(config, size, size))
    return images * config.latent_dim * 4 + 2 * decoded + figure


def tour_bytes(config: ModelConfig, html_steps: int, html_size: int) -> int:
    """`vae tour`: its largest figure; with html_steps (the page's traversal) and html_size (its manifold), theirs."""
    fixed = figure_bytes(TOUR_FIGURE_INCHES, TOUR_FIGURE_IMAGES * tile_pixels(config, 1, 1))
    if not html_steps:
        return fixed
    page = traversal_bytes(config, config.latent_dim, 1, html_steps, None)
    return max(fixed, page, manifold_bytes(config, html_size, True) if config.latent_dim >= 2 else 0)


def grid_png_bytes(config: ModelConfig, count: int, nrow: int | None, scale: int) -> int:
    """images.png_bytes of a grid of `count` images enlarged `scale` times, the images held twice before it."""
    height, width = grid_size(count, nrow, config.height, config.width)
    subpixels = height * width * config.channels
    # The enlarged copies (two repeats, a contiguous transpose), PIL's image at 4 bytes a pixel, the PNG.
    enlarged = height * width * scale * scale * (3 * config.channels + 4 + config.channels)
    return 2 * count * math.prod(config.image_shape) + subpixels + enlarged
