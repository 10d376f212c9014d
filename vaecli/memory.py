"""Memory estimates made before the work: a run that cannot fit is refused with one line, not killed later."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vaecli.errors import UsageError
from vaecli.files import describe_size

if TYPE_CHECKING:
    import torch

    from vaecli.config import ModelConfig

# Fraction of the free memory a run may plan to use: the estimates leave out allocator slack,
# the framework's own buffers and whatever else the machine runs.
USABLE_FRACTION = 0.7
# Bytes of activations per image, per pixel and per unit of width, that no architecture here exceeds
# (measured on the meta device: at most 32 for mlp, cnn and resnet at widths 4 to 128 and sizes 8 to 64).
ROUGH_ACTIVATION_BYTES = 64
ROUGH_ENOUGH = 4 << 30  # below this bound a step cannot matter, so the exact count is not worth its second
MEMINFO = "/proc/meminfo"  # Linux's view of free memory (reclaimable cache counts); elsewhere sysconf


def available_bytes(device: torch.device | None = None) -> int:
    """Memory free for a new allocation: the GPU's free memory, else the system's available RAM."""
    if device is not None and device.type == "cuda":
        import torch

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
    """Refuse a run whose estimated memory exceeds what is free, naming the option that fixes it."""
    free = int(available_bytes(device) * USABLE_FRACTION)
    if needed > free:
        where = "the GPU" if device is not None and device.type == "cuda" else "this machine"
        raise UsageError(
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
    import torch

    from vaecli.models import build_model

    with torch.device("meta"):
        model = build_model(config)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    rough = ROUGH_ACTIVATION_BYTES * batch * (
        max(config.hidden, config.channels) * config.height * config.width + config.latent_dim
    )
    activations = rough if rough * 3 <= ROUGH_ENOUGH else _activation_bytes(model, config, batch)
    # Training keeps every activation for the backward pass and a gradient of each beside it.
    step = weights * 4 + activations * 3 if training else weights + activations * 2
    return Estimate(weights=weights, step=step)


def _activation_bytes(model: torch.nn.Module, config: ModelConfig, batch: int) -> int:
    """The bytes of every layer's output in one forward pass of a meta-device model."""
    import torch

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
