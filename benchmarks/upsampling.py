"""The decoder's upsampling: a resize and a convolution (the default) against the stride-2 transposed convolution.

Usage: python benchmarks/upsampling.py [--rounds 3] [--steps 20]
Prints, per architecture and image shape, training steps' images/s and decoding's images/s for both ways,
alternating in one process, and the ratio resize / transpose. The models are built and placed as `vae train`
and the commands place them (channels-last on the CPU); decoding goes through inference_decoder.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vaecli.config import ModelConfig
from vaecli.model.networks import build_model, inference_decoder, place
from vaecli.model.objective import loss_terms

SHAPES = {"grey 28": (1, 28, 28, "bernoulli"), "RGB 32": (3, 32, 32, "logistic")}


def train_rate(config: ModelConfig, steps: int, batch: int = 128) -> float:
    """Images per second of forward, backward and an Adam step on random images."""
    torch.manual_seed(0)
    model = place(build_model(config), "cpu").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, *config.image_shape).to(memory_format=torch.channels_last)
    noise = torch.randn(batch, model.noise_dims)

    def step() -> None:
        recon, kls = loss_terms(model, model(x, noise=noise), x)
        optimizer.zero_grad(set_to_none=True)
        (recon + kls.sum(1)).mean().backward()
        optimizer.step()

    step()  # warm-up: oneDNN picks its kernels on the first call
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def decode_rate(config: ModelConfig, steps: int, batch: int = 64) -> float:
    """Images per second decoded from codes, as sample and decode run it."""
    model = place(build_model(config), "cpu").eval()
    decoder = inference_decoder(model)
    z = torch.randn(batch, config.latent_dim)
    with torch.inference_mode():
        decoder(z)
        started = time.perf_counter()
        for _ in range(steps):
            decoder(z)
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--arch", nargs="+", default=["cnn", "resnet"])
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.rounds} alternating rounds")
    print(f"{'model':<16} {'what':<7} {'resize img/s':>13} {'transpose img/s':>16} {'ratio':>6}")
    for arch in args.arch:
        for shape_name, (channels, height, width, likelihood) in SHAPES.items():
            configs = {how: ModelConfig(arch=arch, channels=channels, height=height, width=width,
                                        likelihood=likelihood, upsampling=how) for how in ("resize", "transpose")}
            for what, rate in (("train", train_rate), ("decode", decode_rate)):
                runs: dict[str, list[float]] = {"resize": [], "transpose": []}
                for _ in range(args.rounds):
                    for how, config in configs.items():
                        runs[how].append(rate(config, args.steps))
                resize, transpose = (statistics.median(runs[how]) for how in ("resize", "transpose"))
                print(f"{arch + ' ' + shape_name:<16} {what:<7} {resize:>13.0f} {transpose:>16.0f} "
                      f"{resize / transpose:>6.2f}")


if __name__ == "__main__":
    main()
