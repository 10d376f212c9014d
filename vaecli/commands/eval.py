"""`vae eval`: the negative ELBO and the importance-weighted -log p(x) of a split, in nats and bits/dim."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated, Callable, Iterator, Optional

import typer

from vaecli.commands.options import (
    DataRootOption,
    DeviceOption,
    JsonOption,
    LimitOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    seed_option,
)
from vaecli.console import term
from vaecli.errors import UsageError

MAX_IW_SAMPLES = 1_000_000  # K = 1000 is the literature's; a million already takes days on a CPU
MAX_BATCH_ROWS = 1 << 20


def eval_command(
    model: ModelOption = None,
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    split: Annotated[str, typer.Option("--split", help="train or test.")] = "test",
    limit: LimitOption = None,
    iw_samples: Annotated[
        int, typer.Option("--iw-samples", "-k", help="Importance samples K per image (1 gives the ELBO).")
    ] = 1000,
    binarize: Annotated[
        bool, typer.Option("--binarize", help="Binarize the images once with a fixed seed (the literature's protocol).")
    ] = False,
    batch_size: Annotated[
        Optional[int],
        typer.Option("--batch-size", show_default=False,
                     help="Images x samples decoded per pass; bounds memory for any K "
                     "[default: 256 on a CPU, 8192 on a GPU]"),
    ] = None,
    seed: Annotated[int, seed_option("Seed of the importance samples.")] = 0,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    json_out: JsonOption = False,
) -> None:
    """Estimate -log p(x) with K importance samples, beside the negative ELBO and bits per dimension.

    \b
    Example: vae eval -m mnist --binarize --iw-samples 1000 --json
    """
    term.quiet = quiet
    if not 1 <= iw_samples <= MAX_IW_SAMPLES:
        raise UsageError(f"--iw-samples must be between 1 and {MAX_IW_SAMPLES:,}, not {iw_samples}")
    if batch_size is not None and not 1 <= batch_size <= MAX_BATCH_ROWS:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_ROWS:,}, not {batch_size}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be 1 or more, not {limit}")
    from vaecli.checkpoint import model_name
    from vaecli.config import describe_prior
    from vaecli.data import binarize_fixed, dataset_for_model, load_dataset, to_pixels
    from vaecli.evaluate import default_rows, evaluate_split
    from vaecli.latent import open_model
    from vaecli.memory import check_fits, model_bytes

    checkpoint, note = open_model(model, device)
    if note:
        term.note(note)
    model_device = next(checkpoint.model.parameters()).device
    rows = batch_size or default_rows(model_device)
    check_fits(model_bytes(checkpoint.config.model, rows, training=False), model_device,
               f"decoding {rows:,} rows per pass", "lower --batch-size")
    name, dataset_note = dataset_for_model(checkpoint.config.dataset, dataset)
    if dataset_note:
        term.note(dataset_note)
    data = load_dataset(name, split, data_root=data_root, shape=checkpoint.config.model.image_shape, limit=limit)
    pixels = to_pixels(data.images.to(next(checkpoint.model.parameters()).device))
    if binarize:
        pixels = binarize_fixed(pixels)
    term.note(f"evaluating {checkpoint.path} on {len(data)} {name} {split} images with K = {iw_samples}")
    with _progress(len(data)) as advance:
        result = evaluate_split(checkpoint.model, pixels, iw_samples, seed, advance, batch_size)
    numbers = asdict(result)
    report = {
        "model": model_name(checkpoint.path),
        "dataset": name,
        "split": split,
        "binarized": binarize,
        "images": result.images,
        "iw_samples": result.iw_samples,
        "prior_components": checkpoint.config.model.prior_components,  # 0: N(0, I)
        "neg_elbo": {"recon": numbers.pop("recon"), "kl": numbers.pop("kl"), "loss": numbers.pop("elbo_loss")},
        "nll": result.nll,
        "bits_per_dim": result.bits_per_dim,
        "elapsed_s": round(result.seconds, 3),
    }
    if json_out:
        term.emit(json.dumps(report))
        return
    elbo = report["neg_elbo"]
    term.emit(f"images           {result.images} ({name} {split}{', binarized once, seed 0' if binarize else ''})")
    term.emit(f"prior            {describe_prior(checkpoint.config.model.prior_components)}")
    term.emit(f"-ELBO            {elbo['loss']:.2f} nats (recon {elbo['recon']:.2f}, KL {elbo['kl']:.2f})")
    term.emit(f"-log p(x)        {result.nll:.2f} nats (importance-weighted, K = {iw_samples})")
    term.emit(f"bits per dim     {result.bits_per_dim:.4f}")
    term.emit(f"time             {result.seconds:.1f} s")


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """A live bar on a terminal, advanced by the number of images done; nothing otherwise."""
    if not term.live_progress:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=term.stderr, transient=True)
    task = progress.add_task("eval", total=total)
    with progress:
        yield lambda n: progress.advance(task, n)
