"""`vae eval`: the negative ELBO and the importance-weighted -log p(x) of a split, in nats and bits/dim."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import (
    chosen_class,
    class_choices,
    class_index,
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

    import torch

    from vaecli.analysis.codecs import CodecResult
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
    codecs: Annotated[
        bool,
        typer.Option("--codecs", help="Also encode the same images with lossless PNG, WebP and JPEG 2000 (in "
                     "memory, each image its own file, headers included) and print their bits/dim beside the "
                     "model's."),
    ] = False,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    json_out: JsonOption = False,
) -> None:
    """Estimate -log p(x) with K importance samples, beside the negative ELBO and bits per dimension.

    A conditional model (vae train --conditional) reads each image's own label: its numbers are
    -log p(x|y) and the negative ELBO of p(x|y). --codecs needs bits/dim that are a code length of the
    images: a --likelihood logistic model's, or a Bernoulli one's with --binarize.

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
    if codecs:
        _check_comparable(checkpoint, model_name(checkpoint.path), binarize)
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
    baselines = _codec_baselines(term, data.images, pixels, binarize, json_out) if codecs else []
    if baselines:
        report["codecs"] = {codec.name: codec.bits_per_dim for codec in baselines}
    if json_out:
        term.emit(json.dumps(report))
    else:
        _print_report(term, report, checkpoint.config.model.prior_components, result.seconds, baselines)


def _check_comparable(checkpoint: Checkpoint, path: str, binarize: bool) -> None:
    """--codecs compares code lengths: refuse, before any work, a model whose bits/dim is not one."""
    likelihood = checkpoint.config.model.likelihood
    if likelihood == "logistic" or (likelihood == "bernoulli" and binarize):
        return
    if likelihood == "bernoulli":
        raise UsageError(f"--codecs: {path} has a Bernoulli likelihood, whose bits/dim on grey levels is a "
                         "cross-entropy, not a code length of the 8-bit images; add --binarize (the model and "
                         "the codecs then see the same black-and-white images), or use a model trained with "
                         "--likelihood logistic")
    raise UsageError(f"--codecs: {path} has a {likelihood} likelihood, a density whose bits/dim is not a code "
                     "length of the 8-bit images; use a model trained with --likelihood logistic")


def _codec_baselines(term: Terminal, images: torch.Tensor, pixels: torch.Tensor, binarize: bool,
                     json_out: bool) -> list[CodecResult]:
    """The codecs on the pixels the model saw: the 8-bit images, or their binarized draw as 0 and 255."""
    from vaecli.analysis.codecs import codec_bits

    seen = pixels.mul(255).byte().cpu() if binarize else images
    results = codec_bits(seen)
    for codec in results:
        if codec.skipped and json_out:  # the text report says it on its codec's line
            term.note(f"{codec.title}: not measured: {codec.skipped}")
    return results


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
    names = checkpoint.class_names if checkpoint.config.model.classes else data.class_names
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


def _print_report(term: Terminal, report: dict, prior_components: int, seconds: float,
                  codecs: list[CodecResult]) -> None:
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
    if codecs:
        each = "each binarized image" if report["binarized"] else "each image"
        term.emit(f"codecs           lossless, {each} its own file, headers included (bits per dim):")
    for codec in codecs:
        figure = f"{codec.bits_per_dim:.4f}" if codec.bits_per_dim is not None else f"not measured: {codec.skipped}"
        term.emit(f"  {codec.title:<15}{figure}")
    term.emit(f"time             {seconds:.1f} s on {report['machine']}")
