"""`vae encode`: images to their posterior means, as a .npy array."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vaecli.commands.common import check_output, chosen_class, open_model
from vaecli.commands.options import (
    DeviceOption,
    Invert,
    InvertOption,
    LabelOption,
    ModelOption,
    QuietOption,
    out_option,
)
from vaecli.store.bundled import model_name
from vaecli.store.files import write_atomic
from vaecli.terminal.console import Terminal


def encode_command(
    images: Annotated[
        list[str],
        typer.Argument(help="PNG/JPEG files, or - for one image on stdin.", metavar="IMAGE",
                       show_default=False),
    ],
    out: Annotated[
        str | None,
        out_option("the .npy file (default: stdout; its path is then not printed).", show_default=False),
    ] = None,
    invert: InvertOption = Invert.auto,
    label: LabelOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Write the posterior means of the images as a float32 .npy array (N x latent), in input order.

    A conditional model encodes every image with the class --label names: the means of q(z|x,y).

    \b
    Example: vae encode a.png b.png -o codes.npy
    """
    term = Terminal(quiet=quiet)
    target = out if out is not None else "-"
    check_output(target, "-o")
    import torch

    from vaecli.analysis.latent import BATCH_SIZE, codes_to_npy, label_tensor, posterior_means
    from vaecli.data.images import input_notes, read_image_batches

    checkpoint = open_model(term, model, device)
    index = chosen_class(term, checkpoint, label, model_name(checkpoint.path))
    shape = checkpoint.config.model.image_shape
    means, resized, inverted = [], 0, 0
    for batch in read_image_batches(images, shape, invert.value, BATCH_SIZE):
        means.append(posterior_means(checkpoint.model, batch.pixels, label_tensor(index, len(batch.pixels))))
        resized, inverted = resized + batch.resized, inverted + batch.inverted
    for line in input_notes(len(images), resized, inverted, shape, invert.value):
        term.note(line)
    payload = codes_to_npy(torch.cat(means))
    if target == "-":
        term.emit_bytes(payload)
    else:
        term.emit(str(write_atomic(Path(target), payload)))
