"""Resolve `--device auto|cpu|cuda[:N]|mps` to a torch.device that really exists."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaecli.errors import DeviceError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str) -> torch.device:
    """Pick cuda, then mps, then cpu for `auto`; refuse devices this machine lacks."""
    import torch

    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name}: no CUDA GPU is available here; use --device cpu or --device auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                "pick an index below that"
            )
        return device
    if name == "mps":
        if not _mps_available():
            raise DeviceError(
                "--device mps: Apple's MPS backend is not available here; "
                "use --device cpu or --device auto"
            )
        return torch.device("mps")
    raise DeviceError(f"--device {name}: unknown device; choose one of {', '.join(DEVICE_CHOICES)}")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
