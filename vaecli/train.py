"""The training loop over in-memory uint8 tensors; reports through callbacks, never prints."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from vaecli.checkpoint import Checkpoint, build_metadata, save_checkpoint
from vaecli.config import TrainConfig
from vaecli.data import ImageSet
from vaecli.distributed import SINGLE_PROCESS, World, barrier, shard, sum_across
from vaecli.errors import TrainingError
from vaecli.models import VAE, build_model, place, reparameterize
from vaecli.objective import kl_per_dimension, kl_to_standard_normal, log_posterior, reconstruction_nll

EVAL_SEED = 2024  # test-loss noise is drawn from its own fixed stream, apart from training's
EVAL_BATCH = 1000
ACTIVE_UNIT_NATS = 0.01  # a latent dimension whose average KL is above this is "active"


@dataclass
class Progress:
    """A snapshot during an epoch, for progress bars."""

    epoch: int
    epochs: int
    images_done: int
    images_total: int
    running_loss: float
    elapsed_s: float


@dataclass
class TrainingRun:
    """Everything that changes as training goes on; saved in every checkpoint."""

    model: VAE
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    history: list[dict] = field(default_factory=list)

    @property
    def epochs_done(self) -> int:
        return len(self.history)


def start_run(config: TrainConfig, device: torch.device, resume: Checkpoint | None = None) -> TrainingRun:
    """A fresh seeded run, or one restored exactly from a checkpoint's training state."""
    if resume is None:
        torch.manual_seed(config.seed)
        model = place(build_model(config.model), device)
    else:
        model = place(resume.model, device)
    optimizer = make_optimizer(model, config, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    run = TrainingRun(model=model, optimizer=optimizer, generator=generator)
    if resume is not None:
        from vaecli.checkpoint import restore_generator

        run.history = list(resume.meta.get("history", []))
        if resume.optimizer_state:
            restore_optimizer(run, resume.optimizer_state)
        if resume.rng_state is not None:
            # The state's length and contents depend on the device's generator: checked against this one.
            restore_generator(generator, resume)
    return run


def make_optimizer(model: VAE, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # One fused kernel per weight: on the CPU a step of the default CNN's Adam takes 0.6 ms
    # instead of 1.6 ms, about 6% of a training step.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)


def optimizer_tensors(run: TrainingRun) -> dict[str, torch.Tensor]:
    """Adam's moments and step counts as named tensors, keyed by parameter name."""
    tensors = {}
    for name, param in run.model.named_parameters():
        for key, value in run.optimizer.state.get(param, {}).items():
            tensors[f"{name}.{key}"] = torch.as_tensor(value).detach()
    return tensors


def restore_optimizer(run: TrainingRun, tensors: dict[str, torch.Tensor]) -> None:
    for name, param in run.model.named_parameters():
        state = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            value = tensors.get(f"{name}.{key}")
            if value is not None:
                if key == "step":
                    state[key] = value.clone().to(param.device if run.optimizer.defaults.get("fused") else "cpu")
                else:
                    # Fused Adam walks the moments' memory in the weight's order, so they must share
                    # its layout (channels-last convolution weights), not just its shape.
                    state[key] = torch.empty_like(param).copy_(value)
        if state:
            run.optimizer.state[param] = state


def learning_rate(config: TrainConfig, progress: float) -> float:
    """The schedule at a fraction `progress` of the run: constant, or cosine down to lr/10."""
    if config.lr_schedule == "constant":
        return config.lr
    floor = config.lr / 10
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def kl_weight(config: TrainConfig, epoch_progress: float) -> float:
    """beta, ramped linearly from 0 over the first `warmup` epochs."""
    if config.warmup <= 0:
        return config.beta
    return config.beta * min(1.0, epoch_progress / config.warmup)


def to_pixels(batch: torch.Tensor) -> torch.Tensor:
    return batch.float().div_(255.0)


def fit(
    config: TrainConfig,
    run: TrainingRun,
    train_set: ImageSet,
    test_set: ImageSet,
    out: Path,
    *,
    extra_meta: dict | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    progress_every_s: float = 0.2,
    world: World = SINGLE_PROCESS,
    best_out: Path | None = None,
    compile_model: bool = False,
) -> TrainingRun:
    """Train until `config.epochs`, writing the checkpoint atomically after every epoch.

    With best_out, the epoch with the lowest test loss so far is also written there.

    Under torchrun every rank runs this on its shard of each global batch; rank 0 alone tests and saves.
    """
    model, optimizer, generator = run.model, run.optimizer, run.generator
    device = next(model.parameters()).device
    net = model if not world.distributed else _data_parallel(model, device)
    if compile_model:
        net = torch.compile(net)  # the first steps pay for compilation
    bf16 = config.precision == "bf16"
    images = train_set.images.to(device)
    n = images.shape[0]
    batch = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total_steps = steps_per_epoch * config.epochs
    test_pixels = eval_pixels(config, test_set, device) if world.is_main else None

    for epoch in range(run.epochs_done, config.epochs):
        model.train()
        started = time.perf_counter()
        last_report = started
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        seen = 0
        order = torch.randperm(n, generator=generator, device=device)
        for step in range(steps_per_epoch):
            index = order[step * batch : (step + 1) * batch]
            x = to_pixels(images[index])
            if config.binarize:
                x = torch.bernoulli(x, generator=generator)
            # Noise for the whole global batch from the stream all ranks share: a sharded step
            # then computes what one process would, and the generator states stay equal.
            noise = torch.randn((x.shape[0], config.model.latent_dim), generator=generator, device=device)
            global_count = x.shape[0]
            mine = shard(x, world)
            x, noise = x[mine], noise[mine]
            global_step = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, global_step / total_steps)
            beta = kl_weight(config, epoch + step / steps_per_epoch)

            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                output, mu, logvar = net(x, noise=noise)
            # The loss is summed over 784 pixels per image: in fp32 whatever the forward pass ran in.
            output, mu, logvar = output.float(), mu.float(), logvar.float()
            recon, kl = reconstruction_nll(model, output, x), kl_to_prior(model, mu, logvar, noise)
            total = (recon + beta * kl).sum()
            # DDP averages gradients over ranks, so each rank scales its sum to the global mean.
            loss = total * (world.size / global_count)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            with torch.no_grad():
                sums += torch.stack([recon.sum(), kl.sum(), total]).double()
            seen += x.shape[0]
            if not math.isfinite(float(total.detach())):
                raise TrainingError(
                    f"the loss became {float(total.detach())} at epoch {epoch + 1}, step {step + 1}; "
                    f"the checkpoint keeps the last good epoch. Try a lower --lr (now {config.lr:g})"
                )
            now = time.perf_counter()
            if on_progress is not None and (now - last_report >= progress_every_s or step + 1 == steps_per_epoch):
                last_report = now
                done = min((step + 1) * batch, n)
                on_progress(Progress(epoch + 1, config.epochs, done, n, float(sums[2]) / max(seen, 1), now - started))
        # The loss check sees each update only at the next step: the epoch's last one is checked here,
        # so non-finite weights never replace the last good checkpoint.
        if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
            raise TrainingError(
                f"the weights became NaN or Inf at epoch {epoch + 1}, step {steps_per_epoch}; "
                f"the checkpoint keeps the last good epoch. Try a lower --lr (now {config.lr:g})"
            )
        train_seconds = time.perf_counter() - started
        sums = sum_across(sums, world)
        recon_sum, kl_sum, loss_sum = (float(v) / n for v in sums)
        record = {
            "epoch": epoch + 1,
            "elapsed_s": round(time.perf_counter() - started, 3),
            "images_per_s": round(n / train_seconds, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "beta": beta,
            "train": {"recon": recon_sum, "kl": kl_sum, "loss": loss_sum},
            "test": evaluate(model, test_pixels) if world.is_main else None,
        }
        run.history.append(record)
        if world.is_main:
            meta = build_metadata(config, epochs_done=run.epochs_done, history=run.history, **(extra_meta or {}))
            save_checkpoint(out, model, meta, optimizer_tensors(run), generator.get_state())
            if best_out is not None and _is_best(run.history):
                save_checkpoint(best_out, model, meta, optimizer_tensors(run), generator.get_state())
            if on_epoch is not None:
                on_epoch(record)
        barrier(world)
    return run


def kl_to_prior(model: VAE, mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per image: analytic for N(0, I); for a fitted mixture, at z = mu + sigma * noise.

    A fitted prior stays fixed while the encoder and decoder train under it."""
    if model.prior is None:
        return kl_to_standard_normal(mu, logvar)
    z = mu + noise * torch.exp(0.5 * logvar)
    return log_posterior(z, mu, logvar) - model.log_prior(z)


def _is_best(history: list[dict]) -> bool:
    """Whether the last epoch has the lowest test loss so far (earlier runs of a resumed file count)."""
    losses = [record["test"]["loss"] for record in history if record.get("test")]
    return bool(losses) and losses[-1] <= min(losses)


def _data_parallel(model: VAE, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def eval_pixels(config: TrainConfig, test_set: ImageSet, device: torch.device) -> torch.Tensor:
    """A split as the model is tested on it: pixels in [0, 1], binarized once if it trained binarized."""
    pixels = to_pixels(test_set.images.to(device))
    if config.binarize:
        pixels = binarize_fixed(pixels)
    return pixels


def binarize_fixed(pixels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One fixed Bernoulli draw of every pixel: the same binarized set on every run."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(pixels.cpu(), generator=generator).to(pixels.device)


@torch.no_grad()
def evaluate(model: VAE, pixels: torch.Tensor, seed: int = EVAL_SEED) -> dict:
    """One-sample negative ELBO averaged over images, with its parts and the active units."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=pixels.device).manual_seed(seed)
    sums = torch.zeros(2, dtype=torch.float64, device=pixels.device)
    kl_dims = torch.zeros(model.config.latent_dim, dtype=torch.float64, device=pixels.device)
    for start in range(0, pixels.shape[0], EVAL_BATCH):
        x = pixels[start : start + EVAL_BATCH]
        mu, logvar = model.encode(x)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        recon = reconstruction_nll(model, model.decode(reparameterize(mu, logvar, noise=noise)), x)
        # Per dimension, the KL to N(0, 1) picks the active units whatever the prior; the total is
        # the KL to the model's own prior (one-sample, like recon, for a mixture).
        per_dim = kl_per_dimension(mu, logvar)
        kl = kl_to_prior(model, mu, logvar, noise)
        sums += torch.stack([recon.sum(), kl.sum()]).double()
        kl_dims += per_dim.sum(0).double()
    model.train(was_training)
    n = max(pixels.shape[0], 1)
    recon, kl = (float(v) / n for v in sums)
    kl_dims = (kl_dims / n).tolist()
    return {
        "recon": recon,
        "kl": kl,
        "loss": recon + kl,
        "kl_per_dim": kl_dims,
        "active_units": sum(k > ACTIVE_UNIT_NATS for k in kl_dims),
    }
