"""`vae sample`: decode draws from the model's prior (N(0, I), or its fitted mixture) into images."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.options import (
    DeviceOption,
    ModelOption,
    NrowOption,
    QuietOption,
    ScaleOption,
    SeedOption,
)
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
    seed: SeedOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Draw z from the prior (N(0, I), or as fitted by vae fit-prior) and decode it.

    Writes sample-0001.png... in -o DIR (paths on stdout), or one --grid.

    Example: vae sample -n 16 --grid samples.png
    """
    term.quiet = quiet
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UsageError(f"--temperature must be a finite number >= 0, not {temperature}")
    check_outputs(out, grid, nrow)
    from vaecli.latent import decode_to_pixels, make_generator, open_model, sample_prior

    checkpoint, note = open_model(model, device)
    if note:
        term.note(note)
    z = sample_prior(checkpoint.model, count, temperature, make_generator(seed))
    write_images(decode_to_pixels(checkpoint.model, z), out, grid, nrow, scale, force, "sample")


def check_outputs(out: str, grid: Path | None, nrow: int | None) -> None:
    """Refuse conflicting output options before any model is loaded."""
    if out == "-":
        if grid is not None:
            raise UsageError("-o - already writes the grid to stdout; drop --grid or give -o a folder")
        term.emit_bytes(b"")  # refuses a terminal now, not after the work
    elif grid is None:
        if nrow is not None:
            term.warn("--nrow applies only to a grid (--grid FILE or -o -); ignoring it")
        from vaecli.images import ensure_folder

        ensure_folder(Path(out))


def write_images(
    pixels: torch.Tensor, out: str, grid: Path | None, nrow: int | None, scale: int,
    force: bool, prefix: str,
) -> None:
    """Write uint8 (N, C, H, W) images as sample does: numbered PNGs, one grid, or grid bytes."""
    from vaecli.images import make_grid, png_bytes, write_bytes, write_numbered

    if out == "-":
        term.emit_bytes(png_bytes(make_grid(pixels, nrow), scale))
    elif grid is not None:
        term.emit(str(write_bytes(grid, png_bytes(make_grid(pixels, nrow), scale))))
    else:
        for path in write_numbered(pixels, Path(out), prefix, force, scale):
            term.emit(str(path))
