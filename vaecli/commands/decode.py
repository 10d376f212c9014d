"""`vae decode`: turn latent codes (.npy, N x latent) back into images."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated

import typer

from vaecli.commands.common import check_image_outputs, chosen_class, open_model, write_images
from vaecli.commands.options import (
    DeviceOption,
    ForceOption,
    GridOption,
    LabelOption,
    ModelOption,
    NrowOption,
    OutFolderOption,
    PixelSeedOption,
    QuietOption,
    SamplePixelsOption,
    ScaleOption,
)
from vaecli.errors import UsageError
from vaecli.store.bundled import model_name
from vaecli.store.files import open_input
from vaecli.terminal.console import Terminal


def decode_command(
    codes: Annotated[
        str | None,
        typer.Argument(help=".npy file of codes (N x latent) as `vae encode` writes; - or none reads stdin.",
                       metavar="FILE.npy", show_default=False),
    ] = None,
    out: OutFolderOption = ".",
    grid: GridOption = None,
    nrow: NrowOption = None,
    scale: ScaleOption = 1,
    force: ForceOption = False,
    sample_pixels: SamplePixelsOption = False,
    seed: PixelSeedOption = 0,
    label: LabelOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Decode each row of a .npy array to an image: decoded-0001.png... in -o DIR, or one --grid.

    Each image is the mean of p(x|z), or with --sample-pixels a draw from it; a conditional model
    decodes every code with the class --label names: p(x|z,y). A hierarchical model's codes are its top
    layer's: each lower layer is set to its prior mean given those above (`vae reconstruct` uses the
    posterior of every layer given the image instead).

    \b
    Example: vae encode a.png b.png | vae decode -o out/
    """
    term = Terminal(quiet=quiet)
    check_image_outputs(term, out, grid, nrow)
    if codes is None and sys.stdin.isatty():
        raise UsageError("give a .npy file, or pipe one in: vae encode a.png | vae decode")
    from vaecli.analysis.latent import BATCH_SIZE, decode_to_pixels, label_tensor, make_generator, read_codes
    from vaecli.data.images import check_grid

    checkpoint = open_model(term, model, device)
    index = chosen_class(term, checkpoint, label, model_name(checkpoint.path))
    handle, name = open_input(codes or "-", "a .npy file written by `vae encode`")
    with handle if name != "stdin" else contextlib.nullcontext():
        z = read_codes(handle, checkpoint.config.model.latent_dim, name)
    if out == "-" or grid is not None:  # one grid: its size is known before anything is decoded
        check_grid(len(z), checkpoint.config.model.image_shape, nrow, scale, f"{name}: {len(z)} codes")
    draws = make_generator(seed) if sample_pixels else None
    batches = (
        decode_to_pixels(checkpoint.model, rows, draws, label_tensor(index, len(rows))) for rows in z.split(BATCH_SIZE)
    )
    write_images(term, batches, len(z), out, grid, nrow, scale, force, "decoded")
