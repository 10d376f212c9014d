"""`vae sample`: decode draws from the model's prior (N(0, I), or its fitted mixture) into images."""

from __future__ import annotations

import math
import secrets
from typing import Annotated, Optional

import typer

from vaecli.commands.common import check_image_outputs, open_model, write_images
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
    seed_option,
)
from vaecli.config import MAX_SEED
from vaecli.console import term
from vaecli.errors import UsageError


def sample_command(
    count: Annotated[int, typer.Option("-n", "--count", min=1, help="How many images to draw.")] = 16,
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
    quiet: QuietOption = False,
) -> None:
    """Draw z from the prior (N(0, I), or as fitted by vae fit-prior) and decode it.

    Writes sample-0001.png... in -o DIR (paths on stdout), or one --grid. Each image is the mean of
    p(x|z), or with --sample-pixels a draw from it.

    \b
    Example: vae sample -n 16 --grid samples.png
    """
    term.quiet = quiet
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UsageError(f"--temperature must be a finite number >= 0, not {temperature}")
    check_image_outputs(out, grid, nrow)
    from vaecli.images import check_grid
    from vaecli.latent import BATCH_SIZE, decode_to_pixels, make_generator, sample_prior

    checkpoint = open_model(model, device)
    if out == "-" or grid is not None:  # one grid: its size is known before anything is decoded
        check_grid(count, checkpoint.config.model.image_shape, nrow, scale, f"-n {count}")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
        term.note(f"seed {seed} (pass --seed {seed} to draw the same images again)")
    generator = make_generator(seed)
    # Drawn and decoded a batch at a time: the rows are the same as in one draw (prefix-stable).
    pixel_draws = generator if sample_pixels else None
    batches = (
        decode_to_pixels(checkpoint.model, sample_prior(checkpoint.model, size, temperature, generator), pixel_draws)
        for size in batch_sizes(count, BATCH_SIZE)
    )
    write_images(batches, count, out, grid, nrow, scale, force, "sample")


def batch_sizes(count: int, batch: int) -> list[int]:
    """Sizes of the batches that make up `count` items."""
    return [min(batch, count - start) for start in range(0, count, batch)]
