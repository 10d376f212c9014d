"""`vae sample`: decode draws from the model's prior (N(0, I), or its fitted mixture) into images."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from vaecli.commands.common import (
    ALL_CLASSES,
    check_image_outputs,
    chosen_class,
    class_names,
    label_tensor,
    open_model,
    write_images,
)
from vaecli.commands.options import (
    DeviceOption,
    ForceOption,
    GridOption,
    ModelOption,
    NrowOption,
    OutFolderOption,
    QuietOption,
    SamplePixelsOption,
    ScaleOption,
    label_option,
    seed_option,
)
from vaecli.config import MAX_SEED
from vaecli.console import term
from vaecli.errors import UsageError


def sample_command(
    count: Annotated[
        int, typer.Option("-n", "--count", min=1, help="How many images to draw (with --label all: per class).")
    ] = 16,
    temperature: Annotated[
        float,
        typer.Option("--temperature", "-t",
                     help="Spread of z around the prior's centres, 1 for the prior itself; "
                     "below 1 gives cleaner, less varied images."),
    ] = 1.0,
    out: OutFolderOption = ".",
    grid: GridOption = None,
    nrow: NrowOption = None,
    scale: ScaleOption = 1,
    force: ForceOption = False,
    sample_pixels: SamplePixelsOption = False,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    seed: Annotated[
        Optional[int], seed_option("Seed of the draws [default: a new one each run, said on stderr]")
    ] = None,
    label: Annotated[
        Optional[str],
        label_option("The class to draw for a conditional model (vae train --conditional): its number or "
                     "name, or all for a row per class with the same z in each column."),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Draw z from the prior (N(0, I), or as fitted by vae fit-prior) and decode it.

    Writes sample-0001.png... in -o DIR (paths on stdout), or one --grid. Each image is the mean of
    p(x|z), or with --sample-pixels a draw from it. A hierarchical model (--arch hvae) draws every layer.

    \b
    Example: vae sample -n 16 --grid samples.png
    Example: vae sample -m mnist-conditional --label all -n 8 --grid digits.png
    """
    term.quiet = quiet
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UsageError(f"--temperature must be a finite number >= 0, not {temperature}")
    check_image_outputs(out, grid, nrow)
    from vaecli.checkpoint import model_name
    from vaecli.images import check_grid
    from vaecli.latent import BATCH_SIZE, decode_to_pixels, lower_layer_noise, make_generator, sample_prior

    checkpoint = open_model(model, device)
    chosen = chosen_class(checkpoint, label, model_name(checkpoint.path), allow_all=True)
    rows = len(class_names(checkpoint)) if chosen == ALL_CLASSES else 1
    if out == "-" or grid is not None:  # one grid: its size is known before anything is decoded
        check_grid(count * rows, checkpoint.config.model.image_shape, nrow, scale, f"-n {count}")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
        term.note(f"seed {seed} (pass --seed {seed} to draw the same images again)")
    generator = make_generator(seed)
    pixel_draws = generator if sample_pixels else None
    if chosen == ALL_CLASSES:
        _sample_every_class(checkpoint, count, temperature, generator, pixel_draws,
                            _Target(out, grid, nrow, scale, force))
        return
    # A hierarchical model's lower layers draw from their own stream, so the top codes stay those of --seed.
    lower_generator = make_generator((seed + 1) % (MAX_SEED + 1))
    vae = checkpoint.model
    # Drawn and decoded a batch at a time: the rows are the same as in one draw (prefix-stable).
    batches = (
        decode_to_pixels(vae, sample_prior(vae, size, temperature, generator), pixel_draws,
                         label_tensor(chosen, size), lower_layer_noise(vae, size, temperature, lower_generator))
        for size in batch_sizes(count, BATCH_SIZE)
    )
    write_images(batches, count, out, grid, nrow, scale, force, "sample")


@dataclass
class _Target:
    """Where the images go: -o, --grid, --nrow, --scale, --force as given."""

    out: str
    grid: Path | None
    nrow: int | None
    scale: int
    force: bool


def _sample_every_class(checkpoint, count: int, temperature: float, generator, pixel_draws, target: _Target) -> None:
    """--label all: the same `count` codes decoded under every class, a row per class, labelled in a grid."""
    import torch

    from vaecli.latent import decode_to_pixels, sample_prior

    names = class_names(checkpoint)
    z = sample_prior(checkpoint.model, count, temperature, generator)
    images = [decode_to_pixels(checkpoint.model, z, pixel_draws, label_tensor(index, count))
              for index in range(len(names))]
    if target.out != "-" and target.grid is None:
        write_images(images, count * len(names), target.out, None, None, target.scale, target.force, "sample")
        return
    from vaecli.checkpoint import model_name
    from vaecli.files import write_atomic
    from vaecli.images import make_grid
    from vaecli.plots import labelled_tile_png

    if target.nrow is not None:
        term.warn("--nrow does not apply to --label all, whose grid has a row per class; ignoring it")
    title = f"{model_name(checkpoint.path)}: p(x | z, class), the same z down each column"
    figure = labelled_tile_png(make_grid(torch.cat(images), count), names, [""] * count, title,
                               "draws of z from the prior", target.scale)
    if target.out == "-":
        term.emit_bytes(figure)
    else:
        term.emit(str(write_atomic(target.grid, figure)))


def batch_sizes(count: int, batch: int) -> list[int]:
    """Sizes of the batches that make up `count` items."""
    return [min(batch, count - start) for start in range(0, count, batch)]
