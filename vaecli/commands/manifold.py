"""`vae manifold`: decode a grid over a plane of the latent space (Kingma and Welling 2014, Fig. 4)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import check_output, chosen_class, dataset_label, open_model, test_split
from vaecli.commands.options import (
    KL_IMAGES,
    DataRootOption,
    DeviceOption,
    FigureOutOption,
    LabelOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    TestLimitOption,
)
from vaecli.store.bundled import model_name
from vaecli.store.files import write_atomic
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    from vaecli.config import ModelConfig

MAX_SIZE = 100


def manifold_command(
    size: Annotated[int, typer.Option("--size", min=2, max=MAX_SIZE, help="Grid points per side.")] = 20,
    with_codes: Annotated[
        bool, typer.Option("--with-codes", help="Draw the test codes in the same plane beside the grid.")
    ] = False,
    label: LabelOption = None,
    out: FigureOutOption = "manifold.png",
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    limit: TestLimitOption = KL_IMAGES,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Decode a --size x --size grid over a plane of the latent space; the PNG's path on stdout.

    A 2-D latent is the plane itself, with points at evenly spaced quantiles of the prior. A larger
    latent is cut by the plane of its test codes' first two principal axes, through their mean,
    2 standard deviations each way (the first --limit test images). A conditional model needs --label:
    every grid point is decoded as that class (the test codes use each image's own label).

    \b
    Example: vae manifold -m digits2d.safetensors --size 15 --with-codes -o manifold.png
    """
    term = Terminal(quiet=quiet)
    check_output(out, "-o")
    from vaecli.analysis.latent import posterior_means
    from vaecli.analysis.projection import own_labels
    from vaecli.analysis.traversal import manifold_figure, plane_for

    checkpoint = open_model(term, model, device)
    index = chosen_class(term, checkpoint, label, model_name(checkpoint.path))
    latent = checkpoint.config.model.latent_dim
    data = codes = None
    if latent == 1:
        plane_for(checkpoint.model, size, None)  # refuses a 1-D latent before any data is read
    _check_memory(checkpoint.config.model, size, with_codes)
    if latent > 2 or with_codes:
        name, data = test_split(term, checkpoint, dataset, data_root, limit)
        codes = posterior_means(checkpoint.model, data.images, own_labels(checkpoint.model, data))
        what = f"{len(data):,} {dataset_label(name)} test images"
    plane = plane_for(checkpoint.model, size, codes)
    if latent == 2:
        title = f"Decoded grid over the 2-D latent at {size} x {size} prior quantiles"
    else:
        title = f"Decoded grid over the principal plane of the posterior means of {what} (latent {latent})"
    if index is not None:
        title += f", decoded as class {checkpoint.class_names[index]}"
    figure = manifold_figure(checkpoint.model, plane, title, data if with_codes else None, codes, index)
    if out == "-":
        term.emit_bytes(figure)
    else:
        term.emit(str(write_atomic(Path(out), figure)))


def _check_memory(config: ModelConfig, size: int, with_codes: bool) -> None:
    """Refuse, before any work, a grid whose decoded images and figure cannot fit in memory."""
    from vaecli.runtime.memory import check_fits, manifold_bytes

    check_fits(manifold_bytes(config, size, with_codes), None, f"a {size} x {size} manifold", "lower --size")
