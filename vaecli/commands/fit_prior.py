"""`vae fit-prior`: give a trained model a mixture prior fitted to its training codes."""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import dataset_name, keep_earlier_work, open_model, refuse_conditional
from vaecli.commands.options import (
    DataRootOption,
    DeviceOption,
    JsonOption,
    LimitOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    between,
    force_option,
    out_option,
    seed_option,
)
from vaecli.config import MAX_PRIOR_COMPONENTS, train_command_line
from vaecli.errors import UsageError
from vaecli.store.bundled import PRETRAINED_DIR, model_name
from vaecli.store.files import check_output_file, claimed
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    from vaecli.data.datasets import ImageSet
    from vaecli.store.checkpoint import Checkpoint

DEFAULT_COMPONENTS = 50
MAX_CODE_SAMPLES = 1000  # codes per image; memory is checked besides


def fit_prior_command(
    model: ModelOption = None,
    out: Annotated[
        Path | None,
        out_option("the checkpoint [default: NAME-mixture.safetensors beside the input, or here for a bundled "
                   "model]", dir_okay=False, show_default=False),
    ] = None,
    components: Annotated[
        int, typer.Option("--components", "-c", callback=between(1, MAX_PRIOR_COMPONENTS),
                          help="Gaussians in the mixture (full covariance each).")
    ] = DEFAULT_COMPONENTS,
    samples: Annotated[
        int, typer.Option("--samples", callback=between(1, MAX_CODE_SAMPLES),
                          help="Codes drawn from q(z|x) per training image.")
    ] = 2,
    limit: LimitOption = None,
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    seed: Annotated[int, seed_option("Seed of the codes and of the fit.")] = 0,
    force: Annotated[
        bool, force_option("Replace an existing file at --out (by default, fit-prior never overwrites a checkpoint).")
    ] = False,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    json_out: JsonOption = False,
) -> None:
    """Fit p(z) to the codes of the training images, as a Gaussian mixture: a better ELBO and likelihood.

    The encoder and decoder stay as trained; only p(z) = N(0, I) becomes a Gaussian mixture
    fitted by EM to codes z ~ q(z|x) of the training images (of an hvae, its top layer's z_1).
    Prints the new checkpoint's path.
    `vae train --resume` on it trains on under the fixed mixture; fit again afterwards.

    \b
    Example: vae fit-prior -m vae.safetensors -o vae-mixture.safetensors
    """
    term = Terminal(quiet=quiet)
    # Adam's state and the RNG come along: `vae train --resume` can go on under the fitted prior.
    checkpoint = open_model(term, model, device, training_state=True)
    source = model_name(checkpoint.path)
    refuse_conditional(checkpoint, source, "fit-prior")
    out = out if out is not None else _default_out(checkpoint.path)
    check_output_file(out, "--out")
    if not force:
        keep_earlier_work(out, "--out", "write elsewhere with -o NEW.safetensors, or replace it with --force")
    splits = _splits(term, checkpoint, dataset, data_root, limit, components, samples)
    command = ["vae", "fit-prior", "-m", source, "-o", str(out), "--components", str(components),
               "--samples", str(samples), "--seed", str(seed)] + (["--limit", str(limit)] if limit is not None else [])
    # The file as found now is what may be replaced: one that another run writes during the fit is kept.
    with claimed(out, _taken):
        meta = _fit_and_save(term, checkpoint, source, splits, out, (components, samples, seed), shlex.join(command))
    if json_out:
        term.emit(json.dumps({"model": source, "checkpoint": str(out), **meta["prior"]}))
    else:
        term.emit(str(out))


def _fit_and_save(term: Terminal, checkpoint: Checkpoint, source: str, splits: tuple[ImageSet, ImageSet],
                  out: Path, settings: tuple[int, int, int], command: str) -> dict:
    """Fit the mixture to the training codes and write the checkpoint; returns its metadata."""
    from vaecli.data.datasets import eval_pixels, to_pixels
    from vaecli.store.checkpoint import save_checkpoint
    from vaecli.training.prior_fit import fit_prior

    (train_set, test_set), (components, samples, seed) = splits, settings
    config = checkpoint.config
    model_device = next(checkpoint.model.parameters()).device
    train_pixels = to_pixels(train_set.images.to(model_device))
    test_pixels = eval_pixels(config, test_set, model_device)
    term.note(
        f"fitting a {components}-Gaussian prior to {len(train_set) * samples} codes of {len(train_set)} "
        f"{config.dataset} images ({samples} per image)"
    )
    result = fit_prior(checkpoint.model, train_pixels, test_pixels, components, samples, config.binarize, seed)
    meta = _fitted_meta(checkpoint, source, {**asdict(result), "seed": seed, "command": command})
    save_checkpoint(out, checkpoint.model, meta, checkpoint.optimizer_state, checkpoint.rng_state,
                    checkpoint.training_weights)
    term.note(
        f"fitted in {result.elapsed_s:.1f} s; KL to the prior on {result.test_images} test images: "
        f"{result.test_kl_standard:.2f} nats with N(0, I), {result.test_kl_mixture:.2f} with the mixture"
    )
    return meta


def _taken(path: Path) -> str:
    """The refusal to replace a file that another program wrote while the prior was being fitted."""
    return (f"--out {path}: another program wrote it while the prior was being fitted; stopping without "
            "overwriting it (choose another -o)")


def _default_out(source: Path) -> Path:
    """NAME-mixture.safetensors beside the input, or in the working folder for a bundled model."""
    folder = Path(".") if source.parent == PRETRAINED_DIR else source.parent
    return folder / f"{source.stem}-mixture{source.suffix}"


def _fitted_meta(checkpoint: Checkpoint, source: str, prior: dict) -> dict:
    """The input's metadata with the fitted prior, and the recipe that now ends with this fit."""
    from vaecli.store.schema import to_dict

    # Every step from scratch: the training so far, then this fit.
    recipe = checkpoint.meta.get("recipe") or [_train_command(checkpoint, Path(source))]
    return {
        **checkpoint.meta,
        "config": to_dict(checkpoint.config),
        "prior": prior,
        "recipe": [*recipe, prior["command"]],
    }


def _splits(term: Terminal, checkpoint: Checkpoint, dataset: str | None, data_root: Path | None, limit: int | None,
            components: int, samples: int) -> tuple[ImageSet, ImageSet]:
    """The training and test splits to fit on, refused when the fit could not run or not fit in memory."""
    from vaecli.data.datasets import load_dataset
    from vaecli.runtime.memory import check_fits
    from vaecli.training.prior_fit import fit_bytes

    config = checkpoint.config
    name = dataset_name(term, config.dataset, dataset)
    count = limit if limit is not None else config.limit
    shape = config.model.image_shape
    train_set = load_dataset(name, "train", data_root=data_root, shape=shape, limit=count)
    codes, latent = len(train_set) * samples, config.model.latent_dim
    check_fits(fit_bytes(codes, latent, components), None,
               f"fitting {components} Gaussians to {codes:,} codes of size {latent}",
               "lower --components, --samples or --limit")
    if components > codes:
        raise UsageError(
            f"--components {components} is more than the {codes} codes to fit; lower it or raise --samples"
        )
    return train_set, load_dataset(name, "test", data_root=data_root, shape=shape, limit=count)


def _train_command(checkpoint: Checkpoint, path: Path) -> str:
    """The `vae train` command that made this checkpoint, stopped at the epochs it has."""
    config = copy.deepcopy(checkpoint.config)
    config.epochs = checkpoint.epochs_done or config.epochs
    return f"{train_command_line(config)} -o {shlex.quote(str(path))}"
