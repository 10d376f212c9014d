"""`vae train`: fit a VAE and write a safetensors checkpoint after every epoch."""

from __future__ import annotations

import functools
import json
import shlex
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import keep_earlier_work
from vaecli.commands.options import (
    Arch,
    BinarizeOption,
    DataRootOption,
    DatasetOption,
    DeviceOption,
    JsonOption,
    Likelihood,
    LimitOption,
    Precision,
    QuietOption,
    Schedule,
    Upsampling,
    force_option,
    out_option,
    seed_option,
)
from vaecli.config import ModelConfig, TrainConfig, resume_fixed_flags, train_command_line
from vaecli.errors import Interrupted, UsageError, VaeError
from vaecli.runtime import signals
from vaecli.store.files import (
    Stamp,
    check_output_file,
    check_own_file,
    claimed,
    describe_size,
    kind_of,
    stamp,
    write_atomic,
)
from vaecli.store.summary import duration
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    import torch

    from vaecli.data.datasets import ImageSet
    from vaecli.figures.snapshots import Evolution
    from vaecli.store.checkpoint import Checkpoint
    from vaecli.store.metadata import CheckpointMeta, EpochRecord
    from vaecli.training.distributed import World
    from vaecli.training.loop import Hooks, TrainingRun
    from vaecli.training.tensorboard_log import Board


def train_command(
    ctx: typer.Context,
    arch: Annotated[
        Arch | None, typer.Option("--arch", show_default=False,
                                  help="Architecture [default: cnn; RGB: hvae, or cnn with --conditional].")
    ] = None,
    dataset: DatasetOption = "mnist",
    data_root: DataRootOption = None,
    latent_dim: Annotated[int, typer.Option("--latent-dim", help="Size of z.")] = 10,
    hidden: Annotated[
        int,
        typer.Option("--hidden", show_default=False,
                     help="Width: mlp first layer, cnn or resnet first channels "
                     "[default: mlp 512; cnn 16, RGB 32; resnet 32, RGB 64]"),
    ] = 0,
    channels: Annotated[
        int | None,
        typer.Option("--channels", show_default=False,
                     help="1 (grey) or 3 (RGB); default: the dataset's (a folder's: its first image's)."),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", show_default=False,
                                     help="Square side in pixels; default: the dataset's (28 for the MNIST family, "
                                     "32 CIFAR and SVHN, 96 STL-10, 64 CelebA; a folder's first image's if square "
                                     "and 16 to 64, else 28).")
    ] = None,
    likelihood: Annotated[
        Likelihood,
        typer.Option("--likelihood", show_default=False,
                     help="bernoulli (pixels in [0, 1]), gaussian (learned variance), or logistic (discretized on "
                     "the 256 levels of 8-bit pixels; reports bits/dim) [default: bernoulli; RGB: logistic]."),
    ] = None,
    mixtures: Annotated[
        int | None, typer.Option("--mixtures", show_default=False,
                                 help="Logistics mixed per subpixel, or per pixel with --rgb-coupling "
                                 "(--likelihood logistic) [default: 1; RGB: 5].")
    ] = None,
    rgb_coupling: Annotated[
        bool | None, typer.Option("--rgb-coupling/--no-rgb-coupling", show_default=False,
                                  help="Model each pixel's R, G and B jointly: G's mean moves with R, B's with G "
                                  "(--likelihood logistic on RGB) [default: on for RGB].")
    ] = None,
    groups: Annotated[
        int | None, typer.Option("--groups", show_default=False,
                                 help="Stochastic layers of --arch hvae, the top one included [default: 3; with "
                                 "--map-scales, one more than its maps].")
    ] = None,
    group_channels: Annotated[
        int | None, typer.Option("--group-channels", show_default=False,
                                 help="Channels of each lower layer's latent map (--arch hvae) [default: 8; RGB: 4].")
    ] = None,
    map_scales: Annotated[
        str | None, typer.Option("--map-scales", show_default=False,
                                 help="Where --arch hvae's lower latent maps live, top first, as divisors of the "
                                 "image's side: 8,4,2,1 is 4x4, 8x8, 16x16 and 32x32 for a 32x32 image "
                                 "[default: every map at a quarter (4,4); RGB: 8,4,2,1].")
    ] = None,
    upsampling: Annotated[
        Upsampling | None,
        typer.Option("--upsampling", show_default=False,
                     help="How cnn, resnet and hvae decoders double their maps: resize (nearest, then a "
                     "convolution) or transpose (a stride-2 transposed convolution) [default: RGB resize, "
                     "grey transpose]."),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Total epochs (on --resume: the new total).")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per optimizer step.")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (peak).")] = 2e-3,
    lr_schedule: Annotated[
        Schedule, typer.Option("--lr-schedule", help="constant, or cosine decay to lr/10.")
    ] = Schedule.cosine,
    beta: Annotated[float, typer.Option("--beta", help="Weight of the KL term; 1 = the ELBO.")] = 1.0,
    warmup: Annotated[int, typer.Option("--warmup", help="Epochs of linear KL warm-up from 0 to beta.")] = 0,
    binarize: BinarizeOption = False,
    free_bits: Annotated[
        float, typer.Option("--free-bits", help="Nats of KL per stochastic layer (batch mean) the loss does not "
                            "push below, against collapsed layers (Kingma et al. 2016).")
    ] = 0.0,
    grad_clip: Annotated[
        float, typer.Option("--grad-clip", help="Clip the gradient's norm to this before each step; 0: never.")
    ] = 0.0,
    ema: Annotated[
        float, typer.Option("--ema", help="Test and save a moving average of the weights with this decay "
                            "(Polyak averaging), e.g. 0.999; 0: the weights as trained.")
    ] = 0.0,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="AdamW's decoupled weight decay (weights, not biases), "
                            "e.g. 0.01, against overfitting; 0: plain Adam.")
    ] = 0.0,
    seed: Annotated[int, seed_option("Seeds weights, shuffling and noise.")] = 0,
    limit: LimitOption = None,
    precision: Annotated[
        Precision,
        typer.Option("--precision", help="fp32, or bf16 autocast (for GPUs and CPUs with AVX-512 BF16 or AMX)."),
    ] = Precision.fp32,
    out: Annotated[Path, out_option("the checkpoint, written after every epoch.")] = Path("vae.safetensors"),
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue this checkpoint exactly (writes back to it unless --out). A cosine schedule "
            "depends on the total epochs, so extending it with --epochs re-plans the remaining steps.",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    json_lines: JsonOption = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", file_okay=False, show_default=False,
                     help="Folder for the report (<name>-losses.png, <name>-kl.png) [default: beside the checkpoint]"),
    ] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Write no loss-curve or KL report.")] = False,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="Compile the model with torch.compile (slow start; see benchmarks/).")
    ] = False,
    keep_best: Annotated[
        bool, typer.Option("--keep-best", help="Also keep the lowest-test-loss epoch in <out stem>-best.safetensors.")
    ] = False,
    force: Annotated[
        bool, force_option("Replace an existing checkpoint at --out that this run did not write.")
    ] = False,
    conditional: Annotated[
        bool, typer.Option("--conditional", help="Feed each image's class (one-hot) to the encoder and decoder, so "
                           "`vae sample --label 7` draws a 7. Needs a labelled dataset (MNIST family, digits, "
                           "a folder of class folders).")
    ] = False,
    snapshots: Annotated[
        bool, typer.Option("--snapshots", help="Also write <name>-evolution.gif beside the report: the same samples "
                           "and test reconstructions after every epoch and four times in the first.")
    ] = False,
    tensorboard: Annotated[
        Path | None,
        typer.Option("--tensorboard", metavar="DIR", show_default=False,
                     help="Also log to TensorBoard in DIR/<name>/: every epoch's losses, samples and test "
                     "reconstructions; at the end the test codes (Embedding Projector) and the settings. Needs "
                     "pip install 'vaecli[tensorboard]'; view with tensorboard --logdir DIR."),
    ] = None,
) -> None:
    """Train a VAE and write a safetensors checkpoint after every epoch.

    Stdout gets the checkpoint's path at the end, or with --json one JSON object per epoch.

    \b
    Example: vae train --arch cnn --dataset mnist --epochs 20 -o mnist-cnn.safetensors
    """
    term = Terminal(quiet=quiet)
    from vaecli.training.settings import check_tensorboard_installed, train_config

    if tensorboard is not None:
        check_tensorboard_installed()

    if resume is None:
        config = train_config(
            dataset, data_root, image_size=image_size, channels=channels, conditional=conditional,
            arch=arch.value if arch else None, latent_dim=latent_dim, hidden=hidden,
            likelihood=likelihood.value if likelihood else None, mixtures=mixtures, rgb_coupling=rgb_coupling,
            groups=groups, group_channels=group_channels, map_scales=map_scales,
            upsampling=upsampling.value if upsampling else "", epochs=epochs,
            batch_size=batch_size, lr=lr, lr_schedule=lr_schedule.value, beta=beta, warmup=warmup,
            binarize=binarize, seed=seed, limit=limit, precision=precision.value, free_bits=free_bits,
            grad_clip=grad_clip, ema=ema, weight_decay=weight_decay,
        )
    else:
        # Each flag's parameter is named after it: --latent-dim is latent_dim.
        changed = [flag for flag in resume_fixed_flags() if _given(ctx, flag[2:].replace("-", "_"))]
        named_dataset = dataset if _given(ctx, "dataset") else None
        if changed:
            raise UsageError(f"{changed[0]} cannot change when resuming; the checkpoint fixes it (only --epochs may)")
    target = out if (_given(ctx, "out") or resume is None) else resume
    from vaecli.figures.report import evolution_path, report_after_training

    check_output_file(target, "--out")
    best = target.with_name(f"{target.stem}-best{target.suffix}")
    if not force:
        _keep_earlier_work(target, resume, "--out")
        if keep_best:
            _keep_earlier_work(best, None, "--keep-best")
    if kind_of(target, "--out") in ("device", "fifo"):
        # Written through, epoch after epoch; nothing is placed beside a device or pipe.
        for flag, given in (("--keep-best", keep_best), ("--snapshots", snapshots and report is None)):
            if given:
                raise UsageError(f"{flag} writes beside --out, and {target} is not a regular file; drop one")
        no_report = no_report or report is None
    _check_own_files(target, report, keep_best, snapshots, not no_report)
    log_folder = None
    if tensorboard is not None:
        from vaecli.training.tensorboard_log import checked_run_folder

        log_folder = checked_run_folder(tensorboard, target, resume is not None or force)
    request = _Request(config if resume is None else None, resume, epochs if _given(ctx, "epochs") else None,
                       target, data_root, device, json_lines, keep_best, compile_model,
                       named_dataset if resume is not None else None,
                       evolution_path(target, report) if snapshots else None, conditional, log_folder)
    # From here to its last save, the run replaces only what it found or wrote itself.
    with _claimed([(target, "--out")] + ([(best, "--keep-best")] if keep_best else [])), \
            report_after_training(target, report, not no_report, lambda p: term.note(f"report: {p}"), term.warn):
        _train(term, request)


@dataclass
class _Request:
    """One training run as the options ask for it."""

    config: TrainConfig | None  # a new run's; None when resuming, where the checkpoint holds it
    resume: Path | None
    epochs: int | None  # a resumed run's new total, when given
    out: Path
    data_root: Path | None
    device: str
    json_lines: bool
    keep_best: bool
    compile_model: bool
    named_dataset: str | None = None  # --dataset as given on resuming
    evolution: Path | None = None  # --snapshots: the GIF of training in motion
    conditional: bool = False  # --conditional: the number of classes comes from the training set
    tensorboard: Path | None = None  # --tensorboard: this run's own folder in it


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def _train(term: Terminal, request: _Request) -> None:
    from vaecli.data.datasets import load_dataset
    from vaecli.training.distributed import join
    from vaecli.training.loop import start_run

    world, device = join(request.device)
    if not world.is_main:
        term.quiet, request.json_lines = True, False  # under torchrun rank 0 alone reports
    checkpoint = None if request.resume is None else _resumed(term, request.resume, request.epochs, device)
    config = request.config if checkpoint is None else checkpoint.config
    assert config is not None, "a new run's request holds its config"
    out = request.out
    check_output_file(out, "--out")
    if request.evolution is not None:
        check_output_file(request.evolution, "--snapshots")
    source = config.dataset if checkpoint is None else _resumed_dataset(term, config.dataset, request.named_dataset)
    shape = config.model.image_shape
    _check_memory(config, device)
    train_set = load_dataset(source, "train", data_root=request.data_root, shape=shape, limit=config.limit)
    test_set = load_dataset(source, "test", data_root=request.data_root, shape=shape, limit=config.limit)
    if request.conditional:
        config.model.classes = _classes_of(source, train_set)
    _check_classes(config, source, train_set, test_set)
    run = start_run(config, device, checkpoint)
    if not run.same_random_stream:
        term.warn(f"{request.resume} was saved on another kind of device than {device.type}: training goes on with "
                  "a random stream seeded from the saved one, repeatably, but with other draws than a run that "
                  "stayed on that device")
    params = sum(p.numel() for p in run.model.parameters())
    term.note(
        f"training {config.model.arch} ({params / 1e3:.0f} K parameters, latent {config.model.latent_dim}) on "
        f"{len(train_set)} {config.dataset} images, testing on {len(test_set)}, device {device}"
        + (f", resuming after epoch {run.epochs_done}" if checkpoint else "")
    )
    meta = _metadata(config, checkpoint, train_set, test_set, request)
    _fit(term, request, run, (train_set, test_set), meta, world, checkpoint.epochs_done if checkpoint else 0)
    if world.is_main and not request.json_lines:
        term.emit(str(out))


def _classes_of(source: str, train_set: ImageSet) -> int:
    classes = len(train_set.class_names)
    if classes < 2:
        raise UsageError(f"--conditional needs images of two or more classes, and {_shown(source)} has "
                         f"{classes}; give a folder of class folders or a labelled built-in dataset")
    return classes


def _check_classes(config: TrainConfig, source: str, train_set: ImageSet, test_set: ImageSet) -> None:
    """A conditional model needs labelled images of its classes in both splits."""
    classes = config.model.classes
    if not classes:
        return
    if len(train_set.class_names) != classes:
        raise UsageError(f"the model is conditional on {classes} classes, but {_shown(source)} has "
                         f"{len(train_set.class_names)}; resume on the dataset it was trained on")
    for split in (train_set, test_set):
        if len(split) and int(split.labels.max()) >= classes:
            raise UsageError(f"{_shown(source)}: its test split has classes its training split lacks; "
                             "give every class images in both")
    _check_every_class_trained(config, source, train_set)


def _check_every_class_trained(config: TrainConfig, source: str, train_set: ImageSet) -> None:
    """A class with no training image would get an untrained embedding; --limit may cut classes out knowingly."""
    import torch

    from vaecli.data.datasets import has_split_folders, is_builtin

    if config.limit is not None or not len(train_set):
        return
    counts = torch.bincount(train_set.labels, minlength=len(train_set.class_names))
    missing = [name for name, count in zip(train_set.class_names, counts.tolist(), strict=True) if count == 0]
    if not missing:
        return
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    why = "" if is_builtin(source) else " (its images are all under test/)" if has_split_folders(Path(source)) else \
        " (every tenth image, in name order, is held out for testing, and all of its fell there)"
    raise UsageError(f"{_shown(source)}: class {missing[0][:80]!r}{more} has no training images{why}; "
                     "add images to it, or remove it")


def _shown(source: str) -> str:
    return source if len(source) <= 80 else source[:77] + "..."


def _metadata(config: TrainConfig, checkpoint: Checkpoint | None, train_set: ImageSet, test_set: ImageSet,
              request: _Request) -> CheckpointMeta:
    """What every epoch's checkpoint records besides the weights, the config and the history."""
    from vaecli.training.loop import new_run_metadata

    meta = new_run_metadata(config, train_set, test_set)
    if checkpoint is not None:
        meta.prior = checkpoint.meta.get("prior")
        meta.recipe = _recipe(checkpoint, config, request)
    return meta


def _recipe(checkpoint: Checkpoint, config: TrainConfig, request: _Request) -> list[str] | None:
    """Every command from scratch, once a fitted prior or another total of epochs (the learning rate's
    schedule depends on it) is in this run's past: one `vae train` command no longer reproduces it."""
    recipe = checkpoint.meta.get("recipe")
    planned = checkpoint.meta["config"]["epochs"]  # the file's total: checkpoint.config holds the new one
    if not recipe and config.epochs == planned:
        return None
    first = f"{train_command_line(replace(config, epochs=planned))} -o {shlex.quote(str(request.resume))}"
    step = shlex.join(["vae", "train", "--resume", str(request.resume), "--epochs", str(config.epochs),
                       "-o", str(request.out)])
    steps = recipe or [first]
    return steps if steps[-1] == step else [*steps, step]  # a run resumed again at the same total adds nothing


def _fit(term: Terminal, request: _Request, run: TrainingRun, splits: tuple[ImageSet, ImageSet],
         meta: CheckpointMeta, world: World, start: int) -> None:
    """Train with the live display, turning Ctrl-C or SIGTERM into a message on what the file holds."""
    from vaecli.terminal.progress import training_display
    from vaecli.training.distributed import leave
    from vaecli.training.loop import Hooks, Outputs, fit

    config, out = meta.config, request.out
    best = out.with_name(f"{out.stem}-best{out.suffix}") if request.keep_best else None
    before = stamp(out)
    # The log's last writes (the projector's codes, the settings) come once the display has gone.
    with _tensorboard(request.tensorboard, world, config, run, splits[1]) as board, \
            training_display(term, config.epochs, run.epochs_done, len(splits[0])) as display:
        recent: list[float] = []  # this run's last epoch times: a resumed run may be on another machine

        def on_epoch(record: EpochRecord) -> None:
            if request.json_lines:
                term.emit(json.dumps(_epoch_json(record, config.model)))
            recent[:] = [*recent[-4:], record.elapsed_s or 0.0]
            left = (config.epochs - record.epoch) * sum(recent) / len(recent)
            display.epoch_line(_epoch_line(record, config.epochs, config.model, left))
            if board is not None:
                board.log_epoch(record)

        hooks = Hooks(display.on_progress, on_epoch)
        evolution = None if request.evolution is None else _take_snapshots(hooks, config, splits[1])
        try:
            fit(config, run, *splits, Outputs(out, meta, best), hooks=hooks, world=world,
                compile_model=request.compile_model)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP (see vaecli.runtime.signals)
            _write_snapshots(term, request.evolution, evolution)  # the frames taken are kept too
            raise _interrupted(out, before, start, out == request.resume, signals.exit_code(exc)) from None
        finally:
            leave(world)
    if board is not None:
        term.note(f"tensorboard: {request.tensorboard} (the projector holds the codes of the first "
                  f"{board.embedded:,} test images)")
    _write_snapshots(term, request.evolution, evolution)


@contextmanager
def _tensorboard(folder: Path | None, world: World, config: TrainConfig, run: TrainingRun,
                 test_set: ImageSet) -> Iterator[Board | None]:
    """The run's TensorBoard log, open while it trains; under torchrun rank 0 alone writes, as it saves."""
    if folder is None or not world.is_main:
        yield None
        return
    from vaecli.training.tensorboard_log import logging_to

    with logging_to(folder, config, run, test_set) as board:
        yield board


def _take_snapshots(hooks: Hooks, config: TrainConfig, test_set: ImageSet) -> Evolution:
    """Frames of the same samples and test reconstructions, kept in memory: the GIF is written once, at the
    end (rewriting it after every frame cost time growing with the square of the epochs)."""
    from vaecli.figures.snapshots import FIRST_EPOCH_POINTS, Evolution

    evolution = Evolution.start(config.model.latent_dim, test_set.images, config.seed, test_set.labels,
                                config.model.classes)
    hooks.on_snapshot, hooks.first_epoch_snapshots = evolution.take, FIRST_EPOCH_POINTS
    return evolution


def _write_snapshots(term: Terminal, path: Path | None, evolution: Evolution | None) -> None:
    """The GIF of the frames this run took (a resumed run starts a new one); a failure is a warning,
    since the checkpoint is what matters."""
    if path is None or evolution is None or not evolution.frames:  # other ranks under torchrun take none
        return
    try:
        write_atomic(path, evolution.gif(), own=True)
    except VaeError as exc:
        term.warn(f"no snapshots: {exc.message}")
    else:
        term.note(f"snapshots: {path}")


def _check_own_files(target: Path, report: Path | None, keep_best: bool, snapshots: bool, reporting: bool) -> None:
    """The files a run names itself beside its checkpoint must be free for regular files, before any work."""
    from vaecli.figures.report import evolution_path, report_paths

    paths = [target.with_name(f"{target.stem}-best{target.suffix}")] if keep_best else []
    paths += [evolution_path(target, report)] if snapshots else []
    paths += list(report_paths(target, report)) if reporting else []
    for path in paths:
        check_own_file(path)


def _claimed(outputs: list[tuple[Path, str]]) -> ExitStack:
    """Claim each output (see files.claimed): another run that writes one meanwhile stops this run, not its work."""
    stack = ExitStack()
    for path, option in outputs:
        stack.enter_context(claimed(path, functools.partial(_taken, option=option)))
    return stack


def _taken(path: Path, option: str) -> str:
    """The refusal to replace a checkpoint that another run wrote while this one trained, naming that run."""
    import datetime
    import os

    from vaecli.store.checkpoint import read_metadata
    from vaecli.store.metadata import CheckpointMeta

    try:
        when = datetime.datetime.fromtimestamp(os.stat(path).st_mtime).strftime("%Y-%m-%d %H:%M:%S")
        meta = CheckpointMeta.from_dict(read_metadata(path))
        other = (f"another run wrote it at {when} ({meta.config.model.arch}, {meta.epochs_done or 0} epochs on "
                 f"{meta.config.dataset[:80]})")
    except (OSError, ValueError, TypeError, KeyError, VaeError):  # not a checkpoint that vaecli reads
        other = "another program replaced it"
    return (f"{option} {path}: {other} while this run trained; stopping without overwriting it "
            "(give each run its own -o)")


def _keep_earlier_work(path: Path, resume: Path | None, option: str) -> None:
    """Refuse to replace a checkpoint this run did not write (the one it resumes is its own)."""
    if resume is not None and path.resolve() == resume.resolve():
        return
    keep_earlier_work(path, option, f"go on training it with --resume {shlex.quote(str(path))}, write elsewhere "
                      "with -o NEW.safetensors, or replace it with --force")


def _interrupted(out: Path, before: Stamp | None, start: int, writes_back: bool,
                 code: int) -> Interrupted:
    """What a signal leaves: the epochs in the file on disk, which a signal during a save did not replace."""
    from vaecli.store.checkpoint import read_metadata

    on_disk, saved = start, False
    if stamp(out) not in (None, before):  # this run replaced the file at least once, whole
        with suppress(VaeError):
            on_disk, saved = int(read_metadata(out).get("epochs_done", 0)), True
    if not saved and not writes_back:
        return Interrupted(f"interrupted during epoch {start + 1}; nothing new was saved", code)
    return Interrupted(
        f"interrupted during epoch {on_disk + 1}; {out} holds epoch {on_disk}. "
        f"Resume with: vae train --resume {shlex.quote(str(out))}",
        code,
    )


def _resumed(term: Terminal, resume: Path, epochs: int | None, device: torch.device) -> Checkpoint:
    """The checkpoint to go on from, with its new total of epochs."""
    from vaecli.store.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(resume, device, training_state=True)
    if epochs is not None:
        checkpoint.config.epochs = epochs
        checkpoint.config.validate()
    if checkpoint.epochs_done >= checkpoint.config.epochs:
        raise UsageError(f"{resume} already has {checkpoint.epochs_done} epochs; pass a larger --epochs to go on")
    if not checkpoint.optimizer_state:  # a file written without it (an exported or hand-made checkpoint)
        term.note(f"{resume} holds no optimizer state: Adam starts afresh (its moments restart from zero) "
                  "while the learning-rate schedule goes on from epoch "
                  f"{checkpoint.epochs_done}, so this run will not match an uninterrupted one")
    return checkpoint


def _check_memory(config: TrainConfig, device: torch.device) -> None:
    """Refuse, before any data is loaded, a model and batch whose training step cannot fit."""
    from vaecli.runtime.memory import check_fits, estimate
    from vaecli.store.safetensors_file import MAX_CHECKPOINT_BYTES

    batch = min(config.batch_size, config.limit or config.batch_size)  # fit() never batches more than it has
    channels, height, width = config.model.image_shape
    needs = estimate(config.model, batch, training=True)
    mixtures = ", or --mixtures" if config.model.mixtures > 1 else ""
    check_fits(needs.step + (needs.weights if config.ema else 0), device,
               f"training on {channels}x{height}x{width} images in batches of {batch}",
               "lower --batch-size, --image-size or --hidden" + mixtures)
    # Weights and Adam's two moments go into every checkpoint (with --ema, the average too), which
    # readers refuse past a bound.
    stored = (4 if config.ema else 3) * needs.weights
    if stored > MAX_CHECKPOINT_BYTES:
        raise UsageError(
            f"a {config.model.arch} of this size would write {describe_size(stored)} checkpoints, more than "
            f"vae reads ({describe_size(MAX_CHECKPOINT_BYTES)}); lower --hidden or --image-size"
        )


def _resumed_dataset(term: Terminal, stored: str, named: str | None) -> str:
    """The dataset a resumed run reads: the checkpoint's, and a folder only where the user names it."""
    from vaecli.data.datasets import dataset_for_model, same_dataset

    if named is not None and not same_dataset(named, stored):
        raise UsageError(
            f"--dataset cannot change when resuming; the checkpoint was trained on {stored[:200]!r} "
            "(--dataset may only name that same folder)"
        )
    source, note = dataset_for_model(stored, named)
    if note:
        term.note(note)
    return source


def _epoch_line(record: EpochRecord, epochs: int, model: ModelConfig, left_s: float) -> str:
    """The epoch's losses and speed; while epochs remain, the time they should take at the last epochs' pace."""
    train, test = record.train, record.test
    assert train is not None and test is not None, "fit reports each epoch with both, on the rank that reports"
    bits = _bits_per_dim(test.loss, model)
    return (
        f"epoch {record.epoch:>3}/{epochs}  train {train.loss:.2f}  "
        f"test {test.loss:.2f} (recon {test.recon:.2f}, KL {test.kl:.2f}"
        f"{'' if bits is None else f', {bits:.4f} bits/dim'})  "
        f"{record.elapsed_s:.1f} s  {record.images_per_s:.0f} img/s"
        + (f"  {duration(left_s)} left" if record.epoch < epochs else "")
    )


def _epoch_json(record: EpochRecord, model: ModelConfig) -> dict:
    """The epoch's record for --json; a discrete likelihood's test -ELBO also in bits per dimension."""
    data = record.to_dict()
    bits = _bits_per_dim(record.test.loss, model) if record.test is not None else None
    if bits is not None:
        data["test"]["bits_per_dim"] = bits
    return data


def _bits_per_dim(nats: float, model: ModelConfig) -> float | None:
    """nats per image / (C H W ln 2), for the logistic likelihood only (as TensorBoard's log reports it)."""
    from vaecli.training.evaluate import reported_bits_per_dim

    return reported_bits_per_dim(nats, model)
