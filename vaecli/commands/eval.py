"""`vae eval`: the negative ELBO and the importance-weighted -log p(x) of a split, in nats and bits/dim."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

from vaecli.commands.common import (
    chosen_class,
    class_choices,
    class_index,
    class_names,
    dataset_name,
    open_model,
    progress,
)
from vaecli.commands.options import (
    BinarizeOption,
    DataRootOption,
    DecodeRowsOption,
    DeviceOption,
    JsonOption,
    LimitOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    iw_samples_option,
    label_option,
    seed_option,
    split_option,
)
from vaecli.config import describe_prior
from vaecli.errors import DataError, UsageError
from vaecli.store.bundled import model_name
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    from pathlib import Path

    from vaecli.data.datasets import ImageSet
    from vaecli.store.checkpoint import Checkpoint
    from vaecli.training.evaluate import Evaluation


def eval_command(
    model: ModelOption = None,
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    split: Annotated[str, split_option("train or test.")] = "test",
    limit: LimitOption = None,
    label: Annotated[
        str | None,
        label_option("Evaluate only the images of this class: its number or name (a conditional model's "
                     "class, else one of the dataset's labels); --limit then counts that class's images."),
    ] = None,
    iw_samples: Annotated[int, iw_samples_option("Importance samples K per image (1 gives the ELBO).")] = 1000,
    binarize: BinarizeOption = False,
    decode_rows: DecodeRowsOption = None,
    seed: Annotated[int, seed_option("Seed of the importance samples.")] = 0,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    json_out: JsonOption = False,
) -> None:
    """Estimate -log p(x) with K importance samples, beside the negative ELBO and bits per dimension.

    A conditional model (vae train --conditional) reads each image's own label: its numbers are
    -log p(x|y) and the negative ELBO of p(x|y).

    \b
    Example: vae eval -m mnist --binarize --iw-samples 1000 --json
    """
    term = Terminal(quiet=quiet)
    from vaecli.analysis.projection import own_labels
    from vaecli.data.datasets import fixed_pixels
    from vaecli.runtime.device import describe_machine
    from vaecli.runtime.memory import check_fits, model_bytes
    from vaecli.training.evaluate import default_rows, evaluate_split

    checkpoint = open_model(term, model, device)
    # A conditional model's --label is checked against its classes now; else against the dataset's, once read.
    conditional = label is not None and checkpoint.config.model.classes
    index = chosen_class(term, checkpoint, label, model_name(checkpoint.path)) if conditional else None
    model_device = next(checkpoint.model.parameters()).device
    rows = decode_rows or default_rows(model_device)
    check_fits(model_bytes(checkpoint.config.model, rows, training=False), model_device,
               f"decoding {rows:,} rows per pass", "lower --decode-rows")
    name = dataset_name(term, checkpoint.config.dataset, dataset)
    data, class_name = _images(term, checkpoint, name, split, data_root, limit, label, index)
    pixels = fixed_pixels(data.images, model_device, binarize)
    labels = own_labels(checkpoint.model, data)
    of = "" if class_name is None else f" of class {class_name}"
    term.note(f"evaluating {checkpoint.path} on {len(data)} {name} {split} images{of} with K = {iw_samples}")
    with progress(term, "eval", len(data)) as advance:
        result = evaluate_split(checkpoint.model, pixels, iw_samples, seed, advance, decode_rows,
                                None if labels is None else labels.to(model_device))
    report = _report(checkpoint, name, split, binarize, result, class_name)
    report["machine"] = describe_machine(model_device)
    if json_out:
        term.emit(json.dumps(report))
    else:
        _print_report(term, report, checkpoint.config.model.prior_components, result.seconds)


def _images(term: Terminal, checkpoint: Checkpoint, name: str, split: str, data_root: Path | None, limit: int | None,
            label: str | None, index: int | None) -> tuple[ImageSet, str | None]:
    """The split's images (with --label, only that class's, the first --limit of them) and the class's name."""
    from dataclasses import replace

    from vaecli.data.datasets import load_dataset

    shape = checkpoint.config.model.image_shape
    if label is None:
        return load_dataset(name, split, data_root=data_root, shape=shape, limit=limit), None
    data = load_dataset(name, split, data_root=data_root, shape=shape)
    if index is None:  # an unconditional model: a class of the dataset
        index = class_index(term, label, data.class_names)
        if index is None:
            raise UsageError(f"--label {label[:40]!r}: not a class of {name}; "
                             f"choose one of {class_choices(data.class_names)}")
    keep = (data.labels == index).nonzero().flatten()[:limit]
    if len(keep) == 0:
        raise DataError(f"the {name} {split} split has no images of class {label}")
    names = class_names(checkpoint) if checkpoint.config.model.classes else data.class_names
    return replace(data, images=data.images[keep], labels=data.labels[keep]), names[index]


def _report(checkpoint: Checkpoint, dataset: str, split: str, binarize: bool, result: Evaluation,
            class_name: str | None = None) -> dict:
    """The evaluation as `vae eval --json` prints it."""
    numbers = asdict(result)
    return {
        "model": model_name(checkpoint.path),
        "dataset": dataset,
        "split": split,
        "label": class_name,  # --label's class, or None for every image
        "conditional": bool(checkpoint.config.model.classes),  # then nll is -log p(x|y), y each image's label
        "binarized": binarize,
        "images": result.images,
        "iw_samples": result.iw_samples,
        "prior_components": checkpoint.config.model.prior_components,  # 0: N(0, I)
        "neg_elbo": {"recon": numbers.pop("recon"), "kl": numbers.pop("kl"), "loss": numbers.pop("elbo_loss")},
        "nll": result.nll,
        "bits_per_dim": result.bits_per_dim,
        "elapsed_s": round(result.seconds, 3),
    }


def _print_report(term: Terminal, report: dict, prior_components: int, seconds: float) -> None:
    """The report as aligned lines for a reader."""
    elbo, binarized = report["neg_elbo"], ", binarized once, seed 0" if report["binarized"] else ""
    of = "" if report["label"] is None else f", class {report['label']}"
    nll = "-log p(x|y)     " if report["conditional"] else "-log p(x)       "
    given = ", y the image's own label" if report["conditional"] else ""
    term.emit(f"images           {report['images']} ({report['dataset']} {report['split']}{of}{binarized})")
    term.emit(f"prior            {describe_prior(prior_components)}")
    term.emit(f"-ELBO            {elbo['loss']:.2f} nats (recon {elbo['recon']:.2f}, KL {elbo['kl']:.2f})")
    term.emit(f"{nll} {report['nll']:.2f} nats (importance-weighted, K = {report['iw_samples']}{given})")
    term.emit(f"bits per dim     {report['bits_per_dim']:.4f}")
    term.emit(f"time             {seconds:.1f} s on {report['machine']}")
