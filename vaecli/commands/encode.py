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

    \b
    Example: vae encode a.png b.png -o codes.npy
    """
    term.quiet = quiet
    from vaecli.files import check_output_file

    to_stdout = out is None or out == "-"
    if to_stdout:
        term.check_binary_stdout()
    else:
        check_output_file(Path(out), "-o")
    import torch

    from vaecli.files import write_atomic
    from vaecli.images import input_notes, read_image_batches
    from vaecli.latent import BATCH_SIZE, codes_to_npy, open_model, posterior_means

    checkpoint, note = open_model(model, device)
    if note:
        term.note(note)
    shape = checkpoint.config.model.image_shape
    means, resized, inverted = [], 0, 0
    for batch in read_image_batches(images, shape, invert.value, BATCH_SIZE):
        means.append(posterior_means(checkpoint.model, batch.pixels))
        resized, inverted = resized + batch.resized, inverted + batch.inverted
    for line in input_notes(len(images), resized, inverted, shape, invert.value):
        term.note(line)
    payload = codes_to_npy(torch.cat(means))
    if to_stdout:
        term.emit_bytes(payload)
    else:
        term.emit(str(write_atomic(Path(out), payload)))
