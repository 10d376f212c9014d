"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """MNIST's folder: $VAE_DATA_ROOT, else ../shared/data beside the repo."""
    root = Path(os.environ.get("VAE_DATA_ROOT") or REPO.parent / "shared" / "data")
    if not (root / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found under {root}: set VAE_DATA_ROOT to a folder holding MNIST/raw")
    return root


def private_mnist_copy() -> Path:
    """A writable copy of MNIST's raw files (torchvision unpacks them beside the originals)."""
    tmp = Path(tempfile.mkdtemp(prefix="vae-bench-"))
    shutil.copytree(data_root() / "MNIST", tmp / "MNIST")
    return tmp


def matmul_peak_gflops(size: int = 2048, repeats: int = 20, device: str = "cpu", dtype_name: str = "fp32") -> float:
    """Best matmul rate of this device (fp32 or bf16), in GFLOP/s, measured now."""
    import time

    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    if device != "cpu":
        size *= 4  # a GPU needs far larger products to reach its peak
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
