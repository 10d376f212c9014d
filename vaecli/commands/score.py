"""`vae score`: one line per image with its likelihood and out-of-distribution scores."""

from __future__ import annotations

import json
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Iterator, Optional

import typer

from vaecli.commands.options import (
    DataRootOption,
    DeviceOption,
    Invert,
    InvertOption,
    LimitOption,
    ModelOption,
    QuietOption,
    complete_dataset,
    seed_option,
)
from vaecli.console import term
from vaecli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from vaecli.checkpoint import Checkpoint

SCORE_NAMES = ("nll", "elbo", "recon", "kl", "complexity", "regret")  # vaecli.scores.SCORE_NAMES, without torch
DEFAULT_SCORES = "complexity,nll"
MAX_IW_SAMPLES = 1_000_000
MAX_REGRET_STEPS = 100_000
MAX_BATCH_ROWS = 1 << 20


class Format(str, Enum):
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"


class Units(str, Enum):
    nats = "nats"
    bpd = "bpd"


def complete_score(incomplete: str) -> list[str]:
    return [name for name in SCORE_NAMES if name.startswith(incomplete)]


ScoresOption = Annotated[
    Optional[list[str]],
    typer.Option("--score", "-s", autocompletion=complete_score, show_default=False, metavar="NAMES",
                 help=f"Scores to compute, comma-separated or repeated: {', '.join(SCORE_NAMES)} "
                 f"[default: {DEFAULT_SCORES}]"),
]
IwSamplesOption = Annotated[
    int, typer.Option("--iw-samples", "-k", help="Importance samples K per image for nll and complexity.")
]
RegretStepsOption = Annotated[
    int, typer.Option("--regret-steps", help="Adam steps refitting each image's posterior for regret.")
]
BinarizeOption = Annotated[
    bool, typer.Option("--binarize", help="Binarize the images once with a fixed seed, as `vae eval --binarize`.")
]
BatchRowsOption = Annotated[
    Optional[int],
    typer.Option("--batch-size", show_default=False,
                 help="Images x samples decoded per pass for nll [default: 256 on a CPU, 8192 on a GPU]"),
]
ScoreSeedOption = Annotated[int, seed_option("Seed of every score's noise (nll's is `vae eval`'s).")]


def score_command(
    images: Annotated[
        Optional[list[str]],
        typer.Argument(help="PNG/JPEG files, or - for one image on stdin.", metavar="[IMAGE]...",
                       show_default=False),
    ] = None,
    dataset: Annotated[
        Optional[str],
        typer.Option("--dataset", show_default=False, autocompletion=complete_dataset,
                     help="Score a split of a dataset (a name or an image folder) instead of files."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="train or test, with --dataset.")] = "test",
    limit: LimitOption = None,
    data_root: DataRootOption = None,
    scores: ScoresOption = None,
    iw_samples: IwSamplesOption = 100,
    regret_steps: RegretStepsOption = 50,
    units: Annotated[Units, typer.Option("--units", help="nats per image, or bpd (bits per dimension).")] = Units.nats,
    fmt: Annotated[Format, typer.Option("--format", help="tsv (with a header), csv (with a header) or jsonl.")]
        = Format.tsv,
    sort: Annotated[bool, typer.Option("--sort", help="Order by the first score, most unusual last.")] = False,
    binarize: BinarizeOption = False,
    invert: InvertOption = Invert.auto,
    batch_size: BatchRowsOption = None,
    seed: ScoreSeedOption = 0,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Score each image: a line with its path (or index and label) and each --score; higher is more unusual.

    \b
    Example: vae score photos/*.png --sort | tail -5
    """
    term.quiet = quiet
    names = parse_scores(scores)
    check_settings(iw_samples, regret_steps, batch_size, limit)
    if images and dataset is not None:
        raise UsageError("give image files or --dataset, not both")
    if not images and dataset is None:
        raise UsageError("give image files (- for stdin) or --dataset NAME (see `vae score --help`)")
    from vaecli.latent import open_model

    checkpoint, note = open_model(model, device)
    if note:
        term.note(note)
    if dataset is not None:
        keys, uint8 = _read_dataset(checkpoint, dataset, split, data_root, limit)
    else:
        keys, uint8 = _read_files(checkpoint, images[:limit] if limit else images, invert.value)
    term.note(f"scoring {len(keys)} images with {checkpoint.path}: {', '.join(names)}")
    values, _ = compute_scores(checkpoint, uint8, names, settings(iw_samples, regret_steps, seed, batch_size),
                               binarize, units.value)
    write_rows(keys, values, fmt.value, sort)


def parse_scores(given: list[str] | None) -> tuple[str, ...]:
    """--score values, split on commas, checked and without repeats, in the order given."""
    names: list[str] = []
    for word in (given or [DEFAULT_SCORES]):
        for name in (part.strip() for part in word.split(",")):
            if name not in SCORE_NAMES:
                raise UsageError(f"--score {name or '(empty)'}: choose from {', '.join(SCORE_NAMES)}")
            if name not in names:
                names.append(name)
    return tuple(names)


def check_settings(iw_samples: int, regret_steps: int, batch_size: int | None, limit: int | None) -> None:
    """Refuse option values that cannot work, before the model is loaded."""
    if not 1 <= iw_samples <= MAX_IW_SAMPLES:
        raise UsageError(f"--iw-samples must be between 1 and {MAX_IW_SAMPLES:,}, not {iw_samples}")
    if not 1 <= regret_steps <= MAX_REGRET_STEPS:
        raise UsageError(f"--regret-steps must be between 1 and {MAX_REGRET_STEPS:,}, not {regret_steps}")
    if batch_size is not None and not 1 <= batch_size <= MAX_BATCH_ROWS:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_ROWS:,}, not {batch_size}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be 1 or more, not {limit}")


def settings(iw_samples: int, regret_steps: int, seed: int, batch_size: int | None):
    from vaecli.scores import ScoreSettings

    return ScoreSettings(iw_samples=iw_samples, seed=seed, rows=batch_size, regret_steps=regret_steps)


def _read_dataset(checkpoint: Checkpoint, dataset: str, split: str, data_root: Path | None,
                  limit: int | None) -> tuple[list[dict], torch.Tensor]:
    from vaecli.data import load_dataset

    data = load_dataset(dataset, split, data_root=data_root, shape=checkpoint.config.model.image_shape, limit=limit)
    keys = [{"index": i, "label": data.class_names[int(label)]} for i, label in enumerate(data.labels)]
    return keys, data.images


def _read_files(checkpoint: Checkpoint, sources: list[str], invert: str) -> tuple[list[dict], torch.Tensor]:
    import torch

    from vaecli.images import input_notes, read_image_batches
    from vaecli.latent import BATCH_SIZE

    shape = checkpoint.config.model.image_shape
    batches, resized, inverted = [], 0, 0
    for batch in read_image_batches(sources, shape, invert, BATCH_SIZE):
        batches.append(batch.pixels)
        resized, inverted = resized + batch.resized, inverted + batch.inverted
    for line in input_notes(len(sources), resized, inverted, shape, invert):
        term.note(line)
    return [{"path": source} for source in sources], torch.cat(batches)


def compute_scores(checkpoint: Checkpoint, uint8: torch.Tensor, names: tuple[str, ...], score_settings,
                   binarize: bool, units: str = "nats", label: str = "score") -> tuple[dict, dict]:
    """The scores of uint8 images as the model sees them (binarized once if asked), and seconds per score."""
    import math

    from vaecli.scores import progress_total, score_images, to_bits_per_dim
    from vaecli.train import binarize_fixed, to_pixels

    pixels = to_pixels(uint8.to(next(checkpoint.model.parameters()).device))
    if binarize:
        pixels = binarize_fixed(pixels)
    seconds: dict[str, float] = {}
    with progress(label, progress_total(len(pixels), names)) as advance:
        values = score_images(checkpoint.model, pixels, names, score_settings, advance, seconds)
    if units == "bpd":
        dims = math.prod(pixels.shape[1:])
        values = {name: to_bits_per_dim(v, dims) for name, v in values.items()}
    return {name: v.tolist() for name, v in values.items()}, seconds


def write_rows(keys: list[dict], values: dict[str, list[float]], fmt: str, sort: bool) -> None:
    """One line per image on stdout, as each format wants it; --sort puts the first score's largest last."""
    names = list(values)
    order = range(len(keys))
    if sort:
        order = sorted(order, key=lambda i: values[names[0]][i])
    columns = [*keys[0], *names] if keys else names
    if fmt == "jsonl":
        for i in order:
            term.emit(json.dumps({**keys[i], **{name: round(values[name][i], 6) for name in names}}))
        return
    rows = [[*(str(v) for v in keys[i].values()), *(f"{values[name][i]:.4f}" for name in names)] for i in order]
    for row in [columns, *rows]:
        term.emit(_csv_line(row) if fmt == "csv" else "\t".join(_tsv_field(field) for field in row))


def _csv_line(row: list[str]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(row)
    return buffer.getvalue()


def _tsv_field(text: str) -> str:
    from vaecli.console import printable

    return printable(text)  # a tab or newline in a file name is shown escaped, so columns stay columns


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A live bar on a terminal, advanced by images done; nothing otherwise."""
    if not term.live_progress or total == 0:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=term.stderr, transient=True)
    task = bar.add_task(label, total=total)
    with bar:
        yield lambda n: bar.advance(task, n)
