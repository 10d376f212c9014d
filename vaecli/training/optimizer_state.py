"""Adam's state as named tensors: what a checkpoint stores, checks on loading, and gives back on resuming."""

from __future__ import annotations

from pathlib import Path

import numpy
import torch

from vaecli.errors import CheckpointError

ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


def optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's moments and step counts as named tensors, keyed by parameter name."""
    tensors = {}
    for name, param in model.named_parameters():
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"{name}.{key}"] = torch.as_tensor(value).detach()
    return tensors


def restore_optimizer(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> None:
    """Give each of model's parameters its stored Adam state, laid out as the optimizer expects."""
    for name, param in model.named_parameters():
        state = {}
        for key in ADAM_KEYS:
            value = tensors.get(f"{name}.{key}")
            if value is not None:
                if key == "step":
                    state[key] = value.clone().to(param.device if optimizer.defaults.get("fused") else "cpu")
                else:
                    # Fused Adam walks the moments' memory in the weight's order, so they must share
                    # its layout (channels-last convolution weights), not just its shape.
                    state[key] = torch.empty_like(param).copy_(value)
        if state:
            optimizer.state[param] = state


def check_optimizer_state(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Adam's step and moments must fit their weights and be finite, or resuming would crash or diverge."""
    shapes = {name: param.shape for name, param in model.named_parameters()}
    kinds: dict[str, set[str]] = {}
    for key, value in state.items():
        name, _, kind = key.rpartition(".")
        fits = name in shapes and kind in ADAM_KEYS and value.is_floating_point()
        fits = fits and (value.numel() == 1 if kind == "step" else value.shape == shapes[name])
        if not fits:
            raise CheckpointError(f"{path}: its optimizer state {key[:60]!r} is damaged; retrain or use another file")
        values = value.float().numpy()
        # The second moment is a mean of squares and the step a count: neither is ever negative.
        if not numpy.isfinite(values).all() or (kind != "exp_avg" and (values < 0).any()):
            raise CheckpointError(
                f"{path}: its optimizer state {key[:60]!r} holds NaN, Inf or a negative value; "
                "use an earlier checkpoint or retrain"
            )
        kinds.setdefault(name, set()).add(kind)
    partial = next((name for name, found in kinds.items() if len(found) < len(ADAM_KEYS)), None)
    if partial is not None:
        raise CheckpointError(
            f"{path}: its optimizer state for {partial[:60]!r} is incomplete; retrain or use another file"
        )
