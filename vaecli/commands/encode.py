"""`vae encode`: images to their posterior means, as a .npy array."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vaecli.commands.options import (
    DeviceOption,
    Invert,
    InvertOption,
    ModelOption,
    QuietOption,
    SeedOption,
)
from vaecli.console import term


def encode_command(
    images: Annotated[
        list[str],
        typer.Argument(help="PNG/JPEG files, or - for one image on stdin.", metavar="IMAGE",
                       show_default=False),
    ],
    out: Annotated[
        str | None,
        typer.Option("--out", "-o", help="The .npy file to write (default: stdout; its path is then not printed).",
                     show_default=False),
    ] = None,
    invert: InvertOption = Invert.auto,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Write the posterior means of the images as a float32 .npy array (N x latent), in input order.

    Example: vae encode a.png b.png -o codes.npy
    """
    term.quiet = quiet
    to_stdout = out is None or out == "-"
    if to_stdout:
        term.emit_bytes(b"")  # refuses a terminal now, not after the work
    from vaecli.images import read_images, write_bytes
    from vaecli.latent import codes_to_npy, open_model, posterior_means

    checkpoint, note = open_model(model, device)
    if note:
        term.note(note)
    inputs = read_images(images, checkpoint.config.model.image_shape, invert.value)
    for line in inputs.notes(invert.value):
        term.note(line)
    payload = codes_to_npy(posterior_means(checkpoint.model, inputs.pixels))
    if to_stdout:
        term.emit_bytes(payload)
    else:
        term.emit(str(write_bytes(Path(out), payload)))
