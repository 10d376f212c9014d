"""`vae reconstruct`: encode images to their posterior means and decode them again (every layer's, for an hvae)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import check_output, chosen_class, open_model
from vaecli.commands.options import (
    DeviceOption,
    Invert,
    InvertOption,
    LabelOption,
    ModelOption,
    PixelSeedOption,
    QuietOption,
    SamplePixelsOption,
    ScaleOption,
    nrow_option,
    out_option,
)
from vaecli.errors import UsageError
from vaecli.store.bundled import model_name
from vaecli.store.files import check_output_folder, write_atomic
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    import numpy as np
    import torch


def reconstruct_command(
    images: Annotated[
        list[str],
        typer.Argument(help="PNG/JPEG files, or - for one image on stdin.", metavar="IMAGE",
                       show_default=False),
    ],
    out: Annotated[
        Path | None,
        out_option("a folder for recon-NAME.png files (default: the current folder).", show_default=False),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option("--compare", help="Write one figure of each input beside its reconstruction instead "
                     "(- for PNG bytes on stdout).", show_default=False),
    ] = None,
    nrow: Annotated[int | None, nrow_option("Input/reconstruction pairs per row of --compare (default: a square).")]
        = None,
    invert: InvertOption = Invert.auto,
    scale: ScaleOption = 1,
    sample_pixels: SamplePixelsOption = False,
    seed: PixelSeedOption = 0,
    label: LabelOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Decode each image's posterior mean: recon-NAME.png in -o DIR (paths on stdout), or --compare.

    --compare FILE.png writes one figure of input/reconstruction pairs instead (add -o DIR for both).
    A reconstruction is the mean of p(x|z), or with --sample-pixels a draw from it; a conditional model
    encodes and decodes with the class --label names; a hierarchical model sets every layer to its
    posterior mean given the image.

    \b
    Example: vae reconstruct digit.png --compare compare.png
    """
    term = Terminal(quiet=quiet)
    if str(out) == "-":
        raise UsageError("-o takes a folder; for PNG bytes on stdout use --compare -")
    _check_outputs(out, compare)
    folder = out if out is not None else (Path(".") if compare is None else None)
    from vaecli.analysis.latent import BATCH_SIZE, label_tensor, make_generator, reconstruct_pixels
    from vaecli.data.images import check_grid, input_notes, png_bytes, read_image_batches

    checkpoint = open_model(term, model, device)
    index = chosen_class(term, checkpoint, label, model_name(checkpoint.path))
    shape = checkpoint.config.model.image_shape
    if compare is not None:  # pairs side by side: the figure's size is known before any work
        check_grid(len(images), (shape[0], shape[1], 2 * shape[2] + 2), nrow, scale, f"{len(images)} images")
    names = iter(unique_names([Path(source).stem if source != "-" else "stdin" for source in images]))
    pairs, resized, inverted = [], 0, 0
    draws = make_generator(seed) if sample_pixels else None
    for batch in read_image_batches(images, shape, invert.value, BATCH_SIZE):
        labels = label_tensor(index, len(batch.pixels))
        recons = reconstruct_pixels(checkpoint.model, batch.pixels, draws, labels)
        resized, inverted = resized + batch.resized, inverted + batch.inverted
        if folder is not None:  # written as they come, so a long list never sits in memory
            for pixels in recons:
                term.emit(str(write_atomic(folder / f"recon-{next(names)}.png", png_bytes(pixels, scale))))
        if compare is not None:
            pairs.append((batch.pixels, recons))
    for line in input_notes(len(images), resized, inverted, shape, invert.value):
        term.note(line)
    if compare is not None:
        import torch

        inputs, outputs = (torch.cat(part) for part in zip(*pairs, strict=True))
        figure = png_bytes(comparison(inputs, outputs, nrow), scale)
        if compare == "-":
            term.emit_bytes(figure)
        else:
            term.emit(str(write_atomic(Path(compare), figure)))


def _check_outputs(out: Path | None, compare: str | None) -> None:
    """Refuse unwritable or conflicting outputs before the model is loaded."""
    if compare == "-" and out is not None:
        raise UsageError("--compare - writes PNG bytes to stdout, so paths for -o cannot go there; drop -o")
    if compare is not None:
        check_output(compare, "--compare")
    if out is not None or compare is None:
        check_output_folder(out if out is not None else Path("."), "-o")  # made when the first image is written


def unique_names(names: list[str]) -> list[str]:
    """File stems made unique (a/x.png and b/x.png give x and x-2), so no output overwrites another."""
    used: set[str] = set()
    unique = []
    for name in names:
        candidate, copy = name, 1
        while candidate in used:
            copy += 1
            candidate = f"{name}-{copy}"
        used.add(candidate)
        unique.append(candidate)
    return unique


def comparison(inputs: torch.Tensor, recons: torch.Tensor, nrow: int | None) -> np.ndarray:
    """Each input beside its reconstruction; `nrow` pairs per row, pairs set further apart."""
    import numpy as np

    from vaecli.data.images import GRID_PADDING, make_grid

    pairs = np.stack([make_grid(np.stack([x, r]), nrow=2) for x, r in zip(inputs.numpy(), recons.numpy(), strict=True)])
    return make_grid(pairs, nrow, padding=3 * GRID_PADDING)
