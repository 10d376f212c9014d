"""`vae sample`: decode draws from the model's prior (N(0, I), or its fitted mixture) into images."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from vaecli.commands.options import (
    DeviceOption,
    ModelOption,
    NrowOption,
    QuietOption,
    ScaleOption,
    seed_option,
)
from vaecli.config import MAX_SEED
from vaecli.console import term
from vaecli.errors import UsageError

if TYPE_CHECKING:
    import torch

OutFolderOption = Annotated[
    str,
    typer.Option(
        "--out", "-o",
        help="Folder for the numbered PNGs (created if missing), or - for the grid as PNG bytes on stdout.",
    ),
]
GridOption = Annotated[
    Path | None,
    typer.Option("--grid", help="Write one grid PNG to this file instead of one PNG per image.",
                 show_default=False, dir_okay=False),
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", "-f", help="Number from 1 and overwrite, instead of going on after existing files."),
]


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
    model: ModelOption = None,
    device: DeviceOption = "auto",
    seed: Annotated[
        Optional[int], seed_option("Seed of the draws [default: a new one each run, said on stderr]")
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Draw z from the prior (N(0, I), or as fitted by vae fit-prior) and decode it.

    Writes sample-0001.png... in -o DIR (paths on stdout), or one --grid.

    \b
    Example: vae sample -n 16 --grid samples.png
    """
    term.quiet = quiet
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UsageError(f"--temperature must be a finite number >= 0, not {temperature}")
    check_outputs(out, grid, nrow)
    from vaecli.latent import BATCH_SIZE, decode_to_pixels, make_generator, open_model, sample_prior

    checkpoint, note = open_model(model, device)
    if note:
        term.note(note)
    check_count(count, checkpoint.config.model.image_shape, out, grid, nrow, scale, f"-n {count}")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
        term.note(f"seed {seed} (pass --seed {seed} to draw the same images again)")
    generator = make_generator(seed)
    # Drawn and decoded a batch at a time: the rows are the same as in one draw (prefix-stable).
    batches = (
        decode_to_pixels(checkpoint.model, sample_prior(checkpoint.model, size, temperature, generator))
        for size in batch_sizes(count, BATCH_SIZE)
    )
    write_images(batches, count, out, grid, nrow, scale, force, "sample")


def batch_sizes(count: int, batch: int) -> list[int]:
    """Sizes of the batches that make up `count` items."""
    return [min(batch, count - start) for start in range(0, count, batch)]


def check_outputs(out: str, grid: Path | None, nrow: int | None) -> None:
    """Refuse conflicting or unwritable output options before any model is loaded."""
    from vaecli.files import check_output_file, ensure_folder

    if out == "-":
        if grid is not None:
            raise UsageError("-o - already writes the grid to stdout; drop --grid or give -o a folder")
        term.check_binary_stdout()
    elif grid is None:
        if nrow is not None:
            term.warn("--nrow applies only to a grid (--grid FILE or -o -); ignoring it")
        ensure_folder(Path(out), "-o")
    else:
        check_output_file(grid, "--grid")


def check_count(count: int, shape: tuple[int, int, int], out: str, grid: Path | None, nrow: int | None,
                scale: int, what: str) -> None:
    """A grid of `count` images must fit the size limit: checked before anything is decoded."""
    from vaecli.images import check_grid

    if out == "-" or grid is not None:
        check_grid(count, shape, nrow, scale, what)


def write_images(
    batches: Iterable[torch.Tensor], count: int, out: str, grid: Path | None, nrow: int | None, scale: int,
    force: bool, prefix: str,
) -> None:
    """Write uint8 (N, C, H, W) batches as sample does: numbered PNGs as they come, one grid, or grid bytes."""
    import torch

    from vaecli.files import write_atomic
    from vaecli.images import make_grid, png_bytes, write_numbered

    if out == "-" or grid is not None:
        figure = png_bytes(make_grid(torch.cat(list(batches)), nrow), scale)
        if out == "-":
            term.emit_bytes(figure)
        else:
            term.emit(str(write_atomic(grid, figure)))
        return
    for path in write_numbered(batches, count, Path(out), prefix, force, scale):
        term.emit(str(path))
