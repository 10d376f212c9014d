"""The training loop over in-memory uint8 tensors; reports through callbacks, never prints."""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim import optimizer as torch_optimizer

from vaecli.config import TrainConfig, train_command_line
from vaecli.data.datasets import ImageSet, eval_pixels, to_pixels
from vaecli.errors import TrainingError
from vaecli.model.interface import VAEModel
from vaecli.model.networks import build_model, place
from vaecli.model.objective import loss_terms, with_free_bits
from vaecli.runtime.device import describe_machine
from vaecli.store.checkpoint import Checkpoint, restore_generator, save_checkpoint
from vaecli.store.metadata import CheckpointMeta, DatasetInfo, EpochRecord, Losses
from vaecli.training.distributed import SINGLE_PROCESS, World, barrier, shard, sum_across
from vaecli.training.evaluate import elbo_summary
from vaecli.training.optimizer_state import optimizer_tensors, restore_optimizer


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

    model: VAEModel
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    history: list[EpochRecord] = field(default_factory=list)
    average: VAEModel | None = None  # under `ema`: the moving average of the weights, tested and saved
    # False when a resumed run moved to another kind of device: its random stream was seeded afresh.
    same_random_stream: bool = True

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def saved_model(self) -> VAEModel:
        """The weights each epoch is tested with and users get: the average under `ema`, else the model."""
        return self.model if self.average is None else self.average


@dataclass
class Outputs:
    """Where fit writes after every epoch: the checkpoint, and with `best` a copy of the best epoch."""

    path: Path
    meta: CheckpointMeta | None = None  # what to record besides the config; fit fills in the epochs
    best: Path | None = None  # the lowest test loss so far is also written here


@dataclass
class Hooks:
    """How fit reports: a progress snapshot every `progress_every_s` seconds, and each finished epoch."""

    on_progress: Callable[[Progress], None] | None = None
    on_epoch: Callable[[EpochRecord], None] | None = None
    progress_every_s: float = 0.2
    # Called with the model and the epochs done (a fraction within the first), on rank 0 only: after
    # every epoch, and before the first epoch's steps at these fractions of it.
    on_snapshot: Callable[[VAEModel, float], None] | None = None
    first_epoch_snapshots: tuple[float, ...] = ()


@dataclass
class Sums:
    """Running sums over an epoch's images, kept on the device so a step need not wait for them."""

    recon: torch.Tensor
    kl: torch.Tensor
    loss: torch.Tensor  # recon + beta * kl

    @classmethod
    def zeros(cls, device: torch.device) -> Sums:
        return cls(*(torch.zeros((), dtype=torch.float64, device=device) for _ in range(3)))

    def add(self, recon: torch.Tensor, kl: torch.Tensor, loss: torch.Tensor) -> None:
        self.recon += recon.double()
        self.kl += kl.double()
        self.loss += loss.double()


@dataclass
class LossWatch:
    """The first step of an epoch whose loss was not finite, and that loss, recorded on the device.

    Reading a device value waits for the device, so the loop looks at these only every
    CHECK_EVERY_S seconds and at the end of the epoch, not after every step."""

    first_bad: torch.Tensor  # the step's index, -1 while every loss was finite
    bad_loss: torch.Tensor

    @classmethod
    def start(cls, device: torch.device) -> LossWatch:
        return cls(torch.full((), -1, dtype=torch.int64, device=device),
                   torch.zeros((), dtype=torch.float64, device=device))

    def note(self, total: torch.Tensor, step: int) -> None:
        fresh = ~torch.isfinite(total) & (self.first_bad < 0)
        self.bad_loss = torch.where(fresh, total.detach().double(), self.bad_loss)
        self.first_bad.masked_fill_(fresh, step)

    def check(self, config: TrainConfig, epoch: int) -> None:
        step = int(self.first_bad)
        if step >= 0:
            raise TrainingError(
                f"the loss became {float(self.bad_loss)} at epoch {epoch + 1}, step {step + 1}; "
                f"the checkpoint keeps the last good epoch. Try a lower `lr` (now {config.lr:g})"
            )


CHECK_EVERY_S = 0.25  # how often the loop waits for the device to see whether the loss stayed finite


@dataclass
class Epoch:
    """What one pass over the training set leaves: its sums, the last step's beta, and its duration."""

    sums: Sums
    beta: float
    train_seconds: float


def start_run(config: TrainConfig, device: torch.device, resume: Checkpoint | None = None) -> TrainingRun:
    """A fresh seeded run, or one restored exactly from a checkpoint's training state."""
    allow_tf32(device)
    if resume is None:
        torch.manual_seed(config.seed)
        model = place(build_model(config.model), device)
    else:
        model = place(resume.model, device)
    # A resumed file's model.* holds the average so far; the weights as trained come back beside it.
    average = copy.deepcopy(model).requires_grad_(False) if config.ema else None
    if average is not None and resume is not None and resume.training_weights:
        model.load_state_dict({**model.state_dict(), **resume.training_weights})
    optimizer = make_optimizer(model, config, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    run = TrainingRun(model=model, optimizer=optimizer, generator=generator, average=average)
    if resume is not None:
        run.history = [EpochRecord.from_dict(record) for record in resume.meta.get("history", [])]
        if resume.optimizer_state:
            restore_optimizer(model, optimizer, resume.optimizer_state)
        if resume.rng_state is not None:
            # The state's length and contents depend on the device's generator: checked against this one.
            run.same_random_stream = restore_generator(generator, resume)
    return run


def new_run_metadata(config: TrainConfig, train_set: ImageSet, test_set: ImageSet) -> CheckpointMeta:
    """What a fresh run's checkpoints record besides the weights and the history: the data and the command."""
    return CheckpointMeta(
        config,
        dataset_info=DatasetInfo(len(train_set), len(test_set), train_set.class_names),
        command=train_command_line(config),
        torch_version=torch.__version__,
    )


def allow_tf32(device: torch.device) -> None:
    """On CUDA, float32 matmuls and convolutions may run in TF32 (10-bit mantissa, fp32 range): the
    tensor cores' speed for a loss summed in fp32 anyway. The checkpoint records it (_runs_tf32)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def make_optimizer(model: VAEModel, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # One fused kernel per weight: on the CPU a step of the default CNN's Adam takes 0.6 ms
    # instead of 1.6 ms, about 6% of a training step.
    fused = device.type in ("cpu", "cuda")
    skip_dynamo_import()
    if not config.weight_decay:
        return torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
    # Biases (and the Gaussian likelihood's log-variance) set offsets, not capacity: decaying them
    # toward 0 would only bias the model.
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, fused=fused)


def skip_dynamo_import() -> None:
    """Let the optimizer's methods run without importing torch._dynamo (and sympy): 1 s of every start.

    torch wraps zero_grad, add_param_group and (load_)state_dict so that their first call imports
    torch._dynamo to mark them "not to be traced". vaecli never traces the optimizer (`compile`
    compiles the model only), so the mark is set to the plain function beforehand; if torch changes
    how it marks them, this does nothing and the import happens as before. `optimizer_step` does
    the same for step.
    """
    for method in vars(torch.optim.Optimizer).values():
        code = getattr(method, "__code__", None)
        plain = getattr(method, "__wrapped__", None)
        if (code is not None and plain is not None and code.co_filename.endswith("_compile.py")
                and getattr(plain, "__dynamo_disable", None) is None):
            plain.__dynamo_disable = plain


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.step(), without its wrappers' import of torch._dynamo (a second of start-up) when nothing
    needs them: with a step hook registered (on this optimizer or globally), torch's own step runs the hooks.

    The wrappers add profiler hooks and a no-grad block with a graph break that matters only under tracing;
    the update itself is the same function."""
    if _has_step_hooks(optimizer):
        optimizer.step()
        return
    kind = type(optimizer)
    step = _PLAIN_STEPS.get(kind) or _PLAIN_STEPS.setdefault(kind, inspect.unwrap(kind.step))
    with torch.no_grad():
        step(optimizer)


def _has_step_hooks(optimizer: torch.optim.Optimizer) -> bool:
    # If torch renames these, getattr finds nothing there and the hooks still fire: torch's step is taken.
    found = [getattr(optimizer, "_optimizer_step_pre_hooks", None), getattr(optimizer, "_optimizer_step_post_hooks",
             None), getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
             getattr(torch_optimizer, "_global_optimizer_post_hooks", None)]
    return any(hooks is None or len(hooks) > 0 for hooks in found)


# Each optimizer class's step without torch's wrappers, found once per class.
_PLAIN_STEPS: dict[type[torch.optim.Optimizer], Callable[[torch.optim.Optimizer], object]] = {}


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


@dataclass
class _Loop:
    """What every epoch of one fit shares: the data on the device, the batching, and who reports."""

    config: TrainConfig
    run: TrainingRun
    net: torch.nn.Module  # the model, or its DDP or compiled wrapper
    images: torch.Tensor  # uint8 (N, C, H, W) on the model's device
    labels: torch.Tensor | None  # int64 (N,) on the device for a conditional model, else None
    batch: int
    steps_per_epoch: int
    world: World
    hooks: Hooks
    machine: str  # device.describe_machine, kept in each epoch's record
    test_labels: torch.Tensor | None = None  # the test split's, for a conditional model

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs


def fit(
    config: TrainConfig,
    run: TrainingRun,
    train_set: ImageSet,
    test_set: ImageSet,
    outputs: Outputs,
    *,
    hooks: Hooks | None = None,
    world: World = SINGLE_PROCESS,
    compile_model: bool = False,
) -> TrainingRun:
    """Train until `config.epochs`, writing the checkpoint atomically after every epoch.

    Under torchrun every rank runs this on its shard of each global batch; rank 0 alone tests and saves.
    """
    device = next(run.model.parameters()).device
    net = run.model if not world.distributed else _data_parallel(run.model, device)
    if compile_model:
        # The first steps pay for compilation. A module compiles to a module (OptimizedModule); the stubs say Callable.
        net = cast("torch.nn.Module", torch.compile(net))
    images = train_set.images.to(device)
    batch = min(config.batch_size, images.shape[0])
    loop = _Loop(config, run, net, images, model_labels(config, train_set, device), batch,
                 math.ceil(images.shape[0] / batch), world, hooks or Hooks(), describe_machine(device, world.size))
    test_pixels = eval_pixels(config, test_set, device) if world.is_main else None
    loop.test_labels = model_labels(config, test_set, device)

    for epoch in range(run.epochs_done, config.epochs):
        started = time.perf_counter()
        done = _train_epoch(loop, epoch, started)
        # The loss check sees each update only at the next step: the epoch's last one is checked here,
        # so non-finite weights never replace the last good checkpoint.
        _check_weights(run.model, config, epoch, loop.steps_per_epoch)
        record = _epoch_record(loop, epoch, done, started, test_pixels)
        run.history.append(record)
        if world.is_main:
            _save(run, config, outputs)
            if loop.hooks.on_snapshot is not None:
                loop.hooks.on_snapshot(run.saved_model, epoch + 1)
            if loop.hooks.on_epoch is not None:
                loop.hooks.on_epoch(record)
        barrier(world)
    return run


def _train_epoch(loop: _Loop, epoch: int, started: float) -> Epoch:
    """One shuffled pass over the training images, one optimizer step per batch, no wait for the device."""
    config, run, n = loop.config, loop.run, loop.images.shape[0]
    run.model.train()
    last_check = last_report = started
    sums, watch = Sums.zeros(loop.images.device), LossWatch.start(loop.images.device)
    seen, beta = 0, config.beta
    order = torch.randperm(n, generator=run.generator, device=loop.images.device)
    snapshot, snapshot_steps = loop.hooks.on_snapshot, _snapshot_steps(loop, epoch)
    for step in range(loop.steps_per_epoch):
        if snapshot is not None and step in snapshot_steps:
            snapshot(run.saved_model, epoch + step / loop.steps_per_epoch)
        picked = order[step * loop.batch : (step + 1) * loop.batch]
        x = to_pixels(loop.images[picked])
        y = None if loop.labels is None else loop.labels[picked]
        beta = kl_weight(config, epoch + step / loop.steps_per_epoch)
        recon, kl, total = _step(loop, x, y, epoch * loop.steps_per_epoch + step, beta)
        with torch.no_grad():
            sums.add(recon.sum(), kl.sum(), total)
            watch.note(total, step)
        seen += recon.shape[0]
        now, last = time.perf_counter(), step + 1 == loop.steps_per_epoch
        if last or now - last_check >= CHECK_EVERY_S:
            watch.check(config, epoch)
            last_check = now
        hooks = loop.hooks
        if hooks.on_progress is not None and (last or now - last_report >= hooks.progress_every_s):
            last_report = now
            images_done = min((step + 1) * loop.batch, n)
            hooks.on_progress(Progress(epoch + 1, config.epochs, images_done, n,
                                       float(sums.loss) / max(seen, 1), now - started))
    return Epoch(sums, beta, time.perf_counter() - started)


def _snapshot_steps(loop: _Loop, epoch: int) -> set[int]:
    hooks, steps = loop.hooks, loop.steps_per_epoch
    if epoch != 0 or hooks.on_snapshot is None or not loop.world.is_main:
        return set()
    return {min(round(point * steps), steps - 1) for point in hooks.first_epoch_snapshots}


def _step(
    loop: _Loop, x: torch.Tensor, y: torch.Tensor | None, global_step: int, beta: float
) -> tuple[torch.Tensor, ...]:
    """One optimizer step on a global batch of pixels: this rank's (recon, kl) per image and its loss sum."""
    config, model, optimizer, generator = loop.config, loop.run.model, loop.run.optimizer, loop.run.generator
    device = x.device
    if config.binarize:
        x = torch.bernoulli(x, generator=generator)
    # Noise for the whole global batch from the stream all ranks share: a sharded step
    # then computes what one process would, and the generator states stay equal.
    noise = torch.randn((x.shape[0], model.noise_dims), generator=generator, device=device)
    global_count = x.shape[0]
    mine = shard(x, loop.world)
    x, noise, y = x[mine], noise[mine], None if y is None else y[mine]
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, global_step / loop.total_steps)

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        result = loop.net(x, noise=noise, labels=y)
    # The loss is summed over 784 pixels per image: in fp32 whatever the forward pass ran in.
    recon, kls = loss_terms(model, result, x)
    kl = kls.sum(1)
    total = (recon + beta * kl).sum()
    pushed = total if config.free_bits <= 0 else (recon + beta * with_free_bits(kls, config.free_bits)).sum()
    # DDP averages gradients over ranks, so each rank scales its sum to the global mean.
    loss = pushed * (loop.world.size / global_count)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=True)
    optimizer_step(optimizer)
    if loop.run.average is not None:
        update_average(loop.run.average, model, config.ema, global_step)
    return recon, kl, total


def update_average(average: VAEModel, model: VAEModel, decay: float, step: int) -> None:
    """Polyak averaging: move the average toward the new weights. The decay ramps up as (1 + step) /
    (10 + step), so the random initial weights fade within the first steps whatever the decay."""
    rate = 1.0 - min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(list(average.parameters()), list(model.parameters()), rate)
        for kept, current in zip(average.buffers(), model.buffers(), strict=True):
            kept.copy_(current)


def model_labels(config: TrainConfig, images: ImageSet, device: torch.device) -> torch.Tensor | None:
    """The labels a conditional model reads, as int64 on the device; None for an unconditional one."""
    return images.labels.to(device, torch.int64) if config.model.classes else None


def _check_weights(model: VAEModel, config: TrainConfig, epoch: int, steps_per_epoch: int) -> None:
    if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
        raise TrainingError(
            f"the weights became NaN or Inf at epoch {epoch + 1}, step {steps_per_epoch}; "
            f"the checkpoint keeps the last good epoch. Try a lower `lr` (now {config.lr:g})"
        )


def _epoch_record(
    loop: _Loop, epoch: int, done: Epoch, started: float, test_pixels: torch.Tensor | None
) -> EpochRecord:
    """The epoch's history entry: train sums over all ranks, and rank 0's test of the new weights."""
    n = loop.images.shape[0]
    sums = sum_across(torch.stack([done.sums.recon, done.sums.kl, done.sums.loss]), loop.world)
    recon, kl, loss = (float(v) / n for v in sums)
    return EpochRecord(
        epoch=epoch + 1,
        elapsed_s=round(time.perf_counter() - started, 3),
        images_per_s=round(n / done.train_seconds, 1),
        lr=loop.run.optimizer.param_groups[0]["lr"],
        beta=done.beta,
        machine=loop.machine,
        train=Losses(recon=recon, kl=kl, loss=loss),
        # Rank 0 alone has the test pixels (fit).
        test=None if test_pixels is None else elbo_summary(loop.run.saved_model, test_pixels, labels=loop.test_labels),
    )


def _save(run: TrainingRun, config: TrainConfig, outputs: Outputs) -> None:
    """Write the checkpoint (and the best epoch's copy) with the weights, Adam's state and the RNG's."""
    meta = outputs.meta or CheckpointMeta(config)
    meta.config, meta.epochs_done, meta.history = config, run.epochs_done, run.history
    meta.tf32 = _runs_tf32(next(run.model.parameters()).device)
    data = meta.to_dict()
    state = (optimizer_tensors(run.model, run.optimizer), run.generator.get_state(),
             None if run.average is None else run.model.state_dict())
    save_checkpoint(outputs.path, run.saved_model, data, *state)
    if outputs.best is not None and _is_best(run.history):
        save_checkpoint(outputs.best, run.saved_model, data, *state, own=True)


def _runs_tf32(device: torch.device) -> bool:
    return device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def _is_best(history: list[EpochRecord]) -> bool:
    """Whether the last epoch has the lowest test loss so far (earlier runs of a resumed file count)."""
    losses = [record.test.loss for record in history if record.test is not None]
    return bool(losses) and losses[-1] <= min(losses)


def _data_parallel(model: VAEModel, device: torch.device) -> torch.nn.Module:
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
