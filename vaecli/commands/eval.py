"""`vae eval`: the negative ELBO and the importance-weighted -log p(x) of a split, in nats and bits/dim."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from vaecli.commands.common import dataset_name, open_model, progress
from vaecli.commands.options import (
    MAX_BATCH_ROWS,
    MAX_IW_SAMPLES,
    DataRootOption,
    DeviceOption,
    JsonOption,
    LimitOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    between,
    seed_option,
)
from vaecli.console import term

if TYPE_CHECKING:
    from vaecli.checkpoint import Checkpoint
    from vaecli.evaluate import Evaluation



def eval_command(
    model: ModelOption = None,
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    split: Annotated[str, typer.Option("--split", help="train or test.")] = "test",
    limit: LimitOption = None,
    iw_samples: Annotated[
        int, typer.Option("--iw-samples", "-k", callback=between(1, MAX_IW_SAMPLES),
                          help="Importance samples K per image (1 gives the ELBO).")
    ] = 1000,
    binarize: Annotated[
        bool, typer.Option("--binarize", help="Binarize the images once with a fixed seed (the literature's protocol).")
    ] = False,
    batch_size: Annotated[
        Optional[int],
        typer.Option("--batch-size", show_default=False, callback=between(1, MAX_BATCH_ROWS),
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
    from vaecli.data import fixed_pixels, load_dataset
    from vaecli.evaluate import default_rows, evaluate_split
    from vaecli.memory import check_fits, model_bytes

    checkpoint = open_model(model, device)
    model_device = next(checkpoint.model.parameters()).device
    rows = batch_size or default_rows(model_device)
    check_fits(model_bytes(checkpoint.config.model, rows, training=False), model_device,
               f"decoding {rows:,} rows per pass", "lower --batch-size")
    name = dataset_name(checkpoint.config.dataset, dataset)
    data = load_dataset(name, split, data_root=data_root, shape=checkpoint.config.model.image_shape, limit=limit)
    pixels = fixed_pixels(data.images, model_device, binarize)
    term.note(f"evaluating {checkpoint.path} on {len(data)} {name} {split} images with K = {iw_samples}")
    with progress("eval", len(data)) as advance:
        result = evaluate_split(checkpoint.model, pixels, iw_samples, seed, advance, batch_size)
    report = _report(checkpoint, name, split, binarize, result)
    if json_out:
        term.emit(json.dumps(report))
    else:
        _print_report(report, checkpoint.config.model.prior_components, result.seconds)


def _report(checkpoint: Checkpoint, dataset: str, split: str, binarize: bool, result: Evaluation) -> dict:
    """The evaluation as `vae eval --json` prints it."""
    from vaecli.checkpoint import model_name

    numbers = asdict(result)
    return {
        "model": model_name(checkpoint.path),
        "dataset": dataset,
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


def _print_report(report: dict, prior_components: int, seconds: float) -> None:
    """The report as aligned lines for a reader."""
    from vaecli.config import describe_prior

    elbo, binarized = report["neg_elbo"], ", binarized once, seed 0" if report["binarized"] else ""
    term.emit(f"images           {report['images']} ({report['dataset']} {report['split']}{binarized})")
    term.emit(f"prior            {describe_prior(prior_components)}")
    term.emit(f"-ELBO            {elbo['loss']:.2f} nats (recon {elbo['recon']:.2f}, KL {elbo['kl']:.2f})")
    term.emit(f"-log p(x)        {report['nll']:.2f} nats (importance-weighted, K = {report['iw_samples']})")
    term.emit(f"bits per dim     {report['bits_per_dim']:.4f}")
    term.emit(f"time             {seconds:.1f} s")
