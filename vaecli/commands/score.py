"""`vae score`: one line per image with its likelihood and out-of-distribution scores."""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    BinarizeOption,
    DataRootOption,
    DecodeRowsOption,
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
    dataset_option,
    split_option,
)
from vaecli.errors import UsageError, VaeError
from vaecli.store.bundled import model_name
from vaecli.terminal.console import Terminal, printable

if TYPE_CHECKING:
    import torch

    from vaecli.store.checkpoint import Checkpoint


class Format(str, Enum):
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"


class Units(str, Enum):
    nats = "nats"
    bpd = "bpd"


def score_command(
    images: Annotated[
        list[str] | None,
        typer.Argument(help="PNG/JPEG files, or - for one image on stdin.", metavar="[IMAGE]...",
                       show_default=False),
    ] = None,
    dataset: Annotated[
        str | None,
        dataset_option("Score a split of a dataset (a name or an image folder) instead of files.", show_default=False),
    ] = None,
    split: Annotated[str, split_option("train or test, with --dataset.")] = "test",
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
    decode_rows: DecodeRowsOption = None,
    seed: ScoreSeedOption = 0,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Score each image: a line with its path (or index and label) and each --score; higher is more unusual.

    \b
    Example: vae score photos/*.png --sort | tail -5
    """
    term = Terminal(quiet=quiet)
    names = parse_scores(scores)
    if images and dataset is not None:
        raise UsageError("give image files or --dataset, not both")
    if not images and dataset is None:
        raise UsageError("give image files (- for stdin) or --dataset NAME (see `vae score --help`)")
    checkpoint = open_model(term, model, device)
    refuse_conditional(checkpoint, model_name(checkpoint.path), "score")
    if "regret" in names:
        refuse_hierarchical(checkpoint, model_name(checkpoint.path), "--score regret")
    from vaecli.analysis.scores import check_scoring_fits

    check_scoring_fits(checkpoint.config.model, next(checkpoint.model.parameters()).device, names, iw_samples,
                       decode_rows, limit if dataset is not None else len(images[:limit] if limit else images))
    if dataset is not None:
        keys, uint8 = _read_dataset(checkpoint, dataset, split, data_root, limit)
    else:
        keys, uint8 = _read_files(term, checkpoint, images[:limit] if limit else images, invert.value)
    term.note(f"scoring {len(keys)} images with {checkpoint.path}: {', '.join(names)}")
    values, _ = compute_scores(term, checkpoint, uint8, names, settings(iw_samples, regret_steps, seed, decode_rows),
                               binarize, units.value)
    refuse_missing_scores(write_rows(term, keys, values, fmt.value, sort), len(keys), fmt.value)


def _read_dataset(checkpoint: Checkpoint, dataset: str, split: str, data_root: Path | None,
                  limit: int | None) -> tuple[list[dict], torch.Tensor]:
    from vaecli.data.datasets import load_dataset

    data = load_dataset(dataset, split, data_root=data_root, shape=checkpoint.config.model.image_shape, limit=limit)
    keys = [{"index": i, "label": data.class_names[int(label)]} for i, label in enumerate(data.labels)]
    return keys, data.images


def _read_files(term: Terminal, checkpoint: Checkpoint, sources: list[str],
                invert: str) -> tuple[list[dict], torch.Tensor]:
    import torch

    from vaecli.analysis.latent import BATCH_SIZE
    from vaecli.data.images import input_notes, read_image_batches

    shape = checkpoint.config.model.image_shape
    batches, resized, inverted = [], 0, 0
    for batch in read_image_batches(sources, shape, invert, BATCH_SIZE):
        batches.append(batch.pixels)
        resized, inverted = resized + batch.resized, inverted + batch.inverted
    for line in input_notes(len(sources), resized, inverted, shape, invert):
        term.note(line)
    return [{"path": source} for source in sources], torch.cat(batches)


# A score that is not a finite number (the model overflowed on the image), as each format writes it:
# JSON has no NaN or Infinity, so jsonl gets null.
NO_SCORE = {"tsv": "n/a", "csv": "", "jsonl": "null"}


def write_rows(term: Terminal, keys: list[dict], values: dict[str, list[float]], fmt: str, sort: bool) -> int:
    """One line per image on stdout, as each format wants it; --sort puts the first score's largest last.

    Returns how many images have a score that is not finite (written as NO_SCORE says)."""
    names = list(values)
    order = list(range(len(keys)))
    if sort:  # images without a number for the first score come after every number
        order.sort(key=lambda i: (math.isnan(values[names[0]][i]), _or_zero(values[names[0]][i])))
    if fmt == "jsonl":
        for i in order:
            scores = {name: round(values[name][i], 6) if math.isfinite(values[name][i]) else None for name in names}
            # json.dumps escapes every control character in a name (\u001b), DEL and C1 included.
            term.emit(json.dumps({**keys[i], **scores}, allow_nan=False))
    else:
        rows = [[*(printable(str(v)) for v in keys[i].values()), *(_score_text(values[name][i], fmt) for name in names)]
                for i in order]
        for row in [[*keys[0], *names] if keys else names, *rows]:
            term.emit(_csv_line(row) if fmt == "csv" else "\t".join(row))
    return sum(1 for i in range(len(keys)) if not all(math.isfinite(values[name][i]) for name in names))


def _or_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _score_text(value: float, fmt: str) -> str:
    return f"{value:.4f}" if math.isfinite(value) else NO_SCORE[fmt]


def _csv_line(row: list[str]) -> str:
    """One CSV record with the csv module's quoting (a comma or quote in a name stays in its field)."""
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue()[:-1]


def refuse_missing_scores(missing: int, total: int, fmt: str) -> None:
    """Exit 1 once every line is out when some image had no finite score, saying how many."""
    if missing:
        raise VaeError(f"{missing:,} of {total:,} images have no finite score (written as "
                       f"{NO_SCORE[fmt] or 'an empty field'}): the model's numbers are NaN or infinite on them; "
                       "every line was written")
