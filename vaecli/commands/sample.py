"""`vae sample`: decode draws from the model's prior (N(0, I), or its fitted mixture) into images."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import (
    ALL_CLASSES,
    check_image_outputs,
    chosen_class,
    open_model,
    write_images,
)
from vaecli.commands.options import (
    MAX_SAMPLES,
    MAX_TEMPERATURE,
    DeviceOption,
    ForceOption,
    GridOption,
    ModelOption,
    NrowOption,
    OutFolderOption,
    QuietOption,
    SamplePixelsOption,
    ScaleOption,
    between,
    count_option,
    label_option,
    seed_option,
    within,
)
from vaecli.config import MAX_SEED, ModelConfig
from vaecli.store.bundled import model_name
from vaecli.store.files import write_atomic
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    import torch

    from vaecli.store.checkpoint import Checkpoint


def sample_command(
    count: Annotated[
        int, count_option("How many images to draw (with --label all: per class).", callback=between(1, MAX_SAMPLES))
    ] = 16,
    temperature: Annotated[
        float,
        typer.Option("--temperature", "-t", callback=within(0, MAX_TEMPERATURE),
                     help=f"Spread of z around the prior's centres, 1 for the prior itself; "
                     f"below 1 gives cleaner, less varied images (0 to {MAX_TEMPERATURE:g})."),
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
        int | None, seed_option("Seed of the draws [default: a new one each run, said on stderr]")
    ] = None,
    label: Annotated[
        str | None,
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
    term = Terminal(quiet=quiet)
    check_image_outputs(term, out, grid, nrow)
    from vaecli.analysis.latent import make_generator, sample_batches
    from vaecli.data.images import check_grid

    checkpoint = open_model(term, model, device)
    chosen = chosen_class(term, checkpoint, label, model_name(checkpoint.path), allow_all=True)
    rows = len(checkpoint.class_names) if chosen == ALL_CLASSES else 1
    if out == "-" or grid is not None:  # one grid: its size is known before anything is decoded
        check_grid(count * rows, checkpoint.config.model.image_shape, nrow, scale, f"-n {count}")
    classes = rows if chosen == ALL_CLASSES else 0
    _check_memory(checkpoint.config.model, count, classes, _Target(out, grid, nrow, scale, force))
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
        term.note(f"seed {seed} (pass --seed {seed} to draw the same images again)")
    generator = make_generator(seed)
    pixel_draws = generator if sample_pixels else None
    if chosen == ALL_CLASSES:
        _sample_every_class(term, checkpoint, count, temperature, generator, pixel_draws,
                            _Target(out, grid, nrow, scale, force))
        return
    batches = sample_batches(checkpoint.model, count, temperature, seed, chosen, sample_pixels)
    write_images(term, batches, count, out, grid, nrow, scale, force, "sample")


@dataclass
class _Target:
    """Where the images go: -o, --grid, --nrow, --scale, --force as given."""

    out: str
    grid: Path | None
    nrow: int | None
    scale: int
    force: bool


def _sample_every_class(term: Terminal, checkpoint: Checkpoint, count: int, temperature: float,
                        generator: torch.Generator, pixel_draws: torch.Generator | None, target: _Target) -> None:
    """--label all: the same `count` codes decoded under every class, a row per class, labelled in a grid."""
    import torch

    from vaecli.analysis.latent import decode_to_pixels, label_tensor, sample_prior

    names = checkpoint.class_names
    z = sample_prior(checkpoint.model, count, temperature, generator)
    images = [decode_to_pixels(checkpoint.model, z, pixel_draws, label_tensor(index, count))
              for index in range(len(names))]
    if target.out != "-" and target.grid is None:
        write_images(term, images, count * len(names), target.out, None, None, target.scale, target.force, "sample")
        return
    from vaecli.data.images import make_grid
    from vaecli.figures.plots import labelled_tile_png

    if target.nrow is not None:
        term.warn("--nrow does not apply to --label all, whose grid has a row per class; ignoring it")
    title = f"{model_name(checkpoint.path)}: p(x | z, class), the same z down each column"
    figure = labelled_tile_png(make_grid(torch.cat(images), count), names, [""] * count, title,
                               "draws of z from the prior", target.scale)
    if target.out == "-":
        term.emit_bytes(figure)
    else:
        term.emit(str(write_atomic(target.grid, figure)))


def _check_memory(config: ModelConfig, count: int, classes: int, target: _Target) -> None:
    """Refuse, before any draw, images held all at once (one grid, or --label all's `classes` rows) that cannot
    fit in memory; numbered PNGs of one class are written a batch at a time."""
    from vaecli.figures.plots import labelled_tile_inches
    from vaecli.runtime.memory import check_fits, figure_bytes, grid_png_bytes, tile_pixels

    one_grid = target.out == "-" or target.grid is not None
    if not classes and not one_grid:
        return
    images = count * max(classes, 1)
    if classes:  # a list of every class's images, then (for a grid) their concatenation, tile and figure
        needed = images * math.prod(config.image_shape) * (3 if one_grid else 1)
        if one_grid:
            needed += figure_bytes(labelled_tile_inches(classes, count, target.scale),
                                   tile_pixels(config, classes, count))
    else:
        needed = grid_png_bytes(config, count, target.nrow, target.scale)
    lower = "lower -n" + (" or --scale" if one_grid and target.scale > 1 else "")
    check_fits(needed, None, f"holding {images:,} images at once{' in one grid' if one_grid else ''}", lower)
