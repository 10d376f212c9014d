"""`vae score`: one line per image with its likelihood and out-of-distribution scores."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from vaecli.commands.common import (
    compute_scores,
    open_model,
    parse_scores,
    refuse_conditional,
    refuse_hierarchical,
    settings,
)
from vaecli.commands.options import (
    BatchRowsOption,
    BinarizeOption,
    DataRootOption,
    DeviceOption,
    Invert,
    InvertOption,
    IwSamplesOption,
    LimitOption,
    ModelOption,
    QuietOption,
    RegretStepsOption,
    ScoreSeedOption,
    ScoresOption,
    complete_dataset,
)
from vaecli.console import term
from vaecli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from vaecli.checkpoint import Checkpoint


class Format(str, Enum):
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"


class Units(str, Enum):
    nats = "nats"
    bpd = "bpd"


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
    if images and dataset is not None:
        raise UsageError("give image files or --dataset, not both")
    if not images and dataset is None:
        raise UsageError("give image files (- for stdin) or --dataset NAME (see `vae score --help`)")
    from vaecli.checkpoint import model_name

    checkpoint = open_model(model, device)
    refuse_conditional(checkpoint, model_name(checkpoint.path), "score")
    if "regret" in names:
        refuse_hierarchical(checkpoint, model_name(checkpoint.path), "--score regret")
    if dataset is not None:
        keys, uint8 = _read_dataset(checkpoint, dataset, split, data_root, limit)
    else:
        keys, uint8 = _read_files(checkpoint, images[:limit] if limit else images, invert.value)
    term.note(f"scoring {len(keys)} images with {checkpoint.path}: {', '.join(names)}")
    values, _ = compute_scores(checkpoint, uint8, names, settings(iw_samples, regret_steps, seed, batch_size),
                               binarize, units.value)
    write_rows(keys, values, fmt.value, sort)


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


