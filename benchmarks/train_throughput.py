"""Training throughput: vaecli's loop against a textbook DataLoader loop, and the FLOP rate.

Usage: python benchmarks/train_throughput.py [--arch mlp cnn] [--batch-size 128] [--rounds 2]
       [--device cuda] [--precision bf16] [--compile]
Prints images/s of both loops (alternating runs in one process), their ratio, the model's
training FLOPs per image, the machine's fp32 matmul peak, and the fraction of it achieved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from vaecli.config import ModelConfig, TrainConfig
from vaecli.data.datasets import load_dataset
from vaecli.model.networks import build_model
from vaecli.model.objective import loss_terms
from vaecli.runtime.device import resolve_device
from vaecli.training.loop import Outputs, fit, start_run

from _common import data_root, matmul_peak_gflops, private_mnist_copy


def vaecli_epoch(config: TrainConfig, train_set, test_set, device, out: Path) -> float:
    """One epoch through vaecli's own loop; images/s of the training part."""
    run = start_run(config, device)
    fit(config, run, train_set, test_set, Outputs(out))
    return run.history[-1].images_per_s


def textbook_epoch(config: TrainConfig, mnist_copy: Path, device) -> float:
    """One epoch the way tutorials write it: ToTensor per image, a shuffling DataLoader."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    dataset = datasets.MNIST(str(mnist_copy), train=True, download=True, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True)
    model.train()
    start = time.perf_counter()
    for x, _ in loader:
        x = x.to(device)
        recon, kls = loss_terms(model, model(x), x)
        loss = (recon + kls.sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()  # the GPU may still be working through queued steps
    return len(dataset) / (time.perf_counter() - start)


def training_flops_per_image(config: TrainConfig, device) -> float:
    """Forward plus backward FLOPs of one training step, per image (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(config.model).to(device)
    x = torch.rand(config.batch_size, *config.model.image_shape, device=device)
    with FlopCounterMode(display=False) as counter:
        recon, kls = loss_terms(model, model(x), x)
        (recon + kls.sum(1)).mean().backward()
    return counter.get_total_flops() / config.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each loop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time vaecli's loop with --compile")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="vaecli's loop in fp32 or bf16 autocast (the textbook loop stays fp32)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    mnist_copy = private_mnist_copy()
    train_set = load_dataset("mnist", "train", data_root=data_root())
    test_set = load_dataset("mnist", "test", data_root=data_root(), limit=1000)
    # The fraction of peak is taken against the peak of the arithmetic vaecli's loop runs in.
    peak = matmul_peak_gflops(device=str(device), dtype_name=args.precision)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.precision} matmul peak {peak:.0f} GFLOP/s, batch {args.batch_size}")
    for arch in args.arch:
        config = TrainConfig(model=ModelConfig(arch=arch), epochs=1, batch_size=args.batch_size,
                             precision=args.precision)
        ours, textbook = [], []
        for _ in range(args.rounds):
            ours.append(vaecli_epoch(config, train_set, test_set, device, mnist_copy / "bench.safetensors"))
            textbook.append(textbook_epoch(config, mnist_copy, device))
        flops = training_flops_per_image(config, device)
        best = max(ours)
        achieved = flops * best / 1e9
        print(
            f"{arch:4s} vaecli {best:8.0f} img/s (runs {', '.join(f'{v:.0f}' for v in ours)})  "
            f"textbook {max(textbook):8.0f} img/s (runs {', '.join(f'{v:.0f}' for v in textbook)})  "
            f"ratio {best / max(textbook):.2f}x  |  {flops / 1e6:.1f} MFLOP/image, "
            f"{achieved:.0f} GFLOP/s = {achieved / peak:.0%} of peak  "
            f"(median ratio {statistics.median(ours) / statistics.median(textbook):.2f}x)"
        )
        if args.compile:
            # Compilation happens in the first epoch, so time a second one after a warm-up epoch.
            config2 = TrainConfig(model=config.model, epochs=2, batch_size=args.batch_size,
                                  precision=args.precision)
            run = start_run(config2, device)
            fit(config2, run, train_set, test_set, Outputs(mnist_copy / "bench.safetensors"), compile_model=True)
            compiled = run.history[-1].images_per_s
            print(f"{arch:4s} with --compile: {compiled:.0f} img/s after a warm-up epoch "
                  f"(first epoch, compiling: {run.history[0].images_per_s:.0f}); {compiled / best:.2f}x eager")


if __name__ == "__main__":
    main()
