"""Training speed by image shape: 28x28 grey (the baseline) against 32x32 and 64x64 RGB.

Usage: python benchmarks/colour_throughput.py [--arch cnn resnet] [--images 2048] [--rounds 2] [--device cpu]
Trains one epoch of random uint8 images through vaecli's own loop per shape and architecture, at each
shape's default width (grey: Bernoulli; RGB: the discretized logistic), and prints images/s, the
parameter count and the ratio to the 28x28x1 run of the same architecture measured in the same process,
which stays meaningful on a shared machine where absolute rates drift.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from vaecli.config import ModelConfig, TrainConfig
from vaecli.data.datasets import ImageSet
from vaecli.model.networks import build_model
from vaecli.runtime.device import resolve_device
from vaecli.training.loop import Outputs, fit, start_run

SHAPES = ((1, 28, 28), (3, 32, 32), (3, 64, 64))


def random_set(shape: tuple[int, int, int], count: int, seed: int) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=generator)
    return ImageSet(images, torch.zeros(count, dtype=torch.long), ["none"])


def config_for(arch: str, shape: tuple[int, int, int], batch: int) -> TrainConfig:
    channels, height, width = shape
    likelihood = "bernoulli" if channels == 1 else "logistic"
    model = ModelConfig(arch=arch, channels=channels, height=height, width=width, likelihood=likelihood)
    return TrainConfig(model=model, epochs=1, batch_size=batch, dataset="random")


def images_per_s(config: TrainConfig, images: int, device: torch.device, out: Path) -> float:
    """One epoch through vaecli's loop (fit); images/s of its training part."""
    train_set = random_set(config.model.image_shape, images, 0)
    test_set = random_set(config.model.image_shape, 64, 1)
    run = start_run(config, device)
    fit(config, run, train_set, test_set, Outputs(out))
    return run.history[-1].images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["cnn", "resnet"])
    parser.add_argument("--images", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="epochs per shape; the best is kept")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.images} images per epoch, "
          f"batch {args.batch_size}")
    print(f"{'arch':<7} {'shape':<9} {'hidden':>6} {'params':>10} {'img/s':>9} {'vs 28x28x1':>10}")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "bench.safetensors"
        for arch in args.arch:
            baseline = None
            for shape in SHAPES:
                config = config_for(arch, shape, args.batch_size)
                rate = max(images_per_s(config, args.images, device, out) for _ in range(args.rounds))
                baseline = baseline or rate
                params = sum(p.numel() for p in build_model(config.model).parameters())
                print(f"{arch:<7} {'x'.join(map(str, shape)):<9} {config.model.hidden:>6} {params:>10,} "
                      f"{rate:>9,.0f} {rate / baseline:>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
