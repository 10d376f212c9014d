"""Building blocks that several architectures share: the residual block and the bounded log-variance."""

from __future__ import annotations

import torch
from torch import nn

# Bounds a predicted log-variance smoothly so exp() can neither overflow nor underflow to 0.
LOGVAR_BOUND = 15.0


def bounded_logvar(raw: torch.Tensor) -> torch.Tensor:
    """LOGVAR_BOUND * tanh(raw / LOGVAR_BOUND): about raw near 0, never past the bound."""
    return LOGVAR_BOUND * torch.tanh(raw / LOGVAR_BOUND)


class ResidualBlock(nn.Module):
    """x + f(x) with two 3x3 convolutions (pre-activation, He et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
