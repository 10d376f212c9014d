"""Resolve the `device` setting (auto, cpu, cuda[:N], mps) to a torch.device that really exists."""

from __future__ import annotations

import platform

import torch

from vaecli.config import DEVICE_CHOICES
from vaecli.errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """Pick cuda, then mps, then cpu for `auto`; refuse devices this machine lacks."""
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
                f"`device={name}`: no CUDA GPU is available here; use `device=cpu` or `device=auto`"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"`device={name}`: this machine has {torch.cuda.device_count()} CUDA device(s); "
                "pick an index below that"
            )
        return device
    if name == "mps":
        if not _mps_available():
            raise DeviceError(
                "`device=mps`: Apple's MPS backend is not available here; "
                "use `device=cpu` or `device=auto`"
            )
        return torch.device("mps")
    raise DeviceError(f"`device={name}`: unknown device; choose one of {', '.join(DEVICE_CHOICES)}")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def describe_machine(device: torch.device, processes: int = 1) -> str:
    """Where a run happened, as its records keep it: 'cpu: AMD EPYC, 2 threads', '4 x cuda: NVIDIA H200'."""
    if device.type == "cuda":
        where = f"cuda: {torch.cuda.get_device_name(device)}"
    elif device.type == "cpu":
        where = f"cpu: {cpu_name()}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"
    else:
        where = f"{device.type}: {cpu_name()}"
    return where if processes == 1 else f"{processes} x {where}"


def cpu_name() -> str:
    """The processor's model name where the OS tells it (Linux), else its architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model") and value.strip():
                    return " ".join(value.split())[:100]
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown processor"
