"""`vae project`: a scatter of a labelled split's posterior means (PCA to 2-D), coloured by class."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vaecli.commands.options import (
    DataRootOption,
    DeviceOption,
    LimitOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    SeedOption,
)
from vaecli.console import term
from vaecli.errors import UsageError

if TYPE_CHECKING:
    from vaecli.data import ImageSet
    from vaecli.models import VAE
    from vaecli.projection import Projection


class Split(str, Enum):
    train = "train"
    test = "test"


def project_command(
    out: Annotated[
        str, typer.Option("--out", "-o", help="The scatter PNG, or - for its bytes on stdout.")
    ] = "latent.png",
    points: Annotated[
        Path | None,
        typer.Option("--points", metavar="FILE.csv", dir_okay=False, show_default=False,
                     help="Also write one CSV row per image: index, label, class, x, y, mu_1..mu_d."),
    ] = None,
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    split: Annotated[Split, typer.Option("--split", help="Which split to encode.")] = Split.test,
    limit: LimitOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Encode a labelled split to posterior means and draw them in 2-D (PCA), coloured by class.

    Stdout gets the PNG's path (and the CSV's with --points).

    \b
    Example: vae project -m mnist-cnn.safetensors --limit 2000 -o latent.png --points latent.csv
    """
    term.quiet = quiet
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be 1 or more, not {limit}")
    check_output(out, "--out")
    if points is not None:
        check_output(str(points), "--points")
    from vaecli.data import dataset_for_model, load_dataset
    from vaecli.files import write_atomic
    from vaecli.latent import open_model
    from vaecli.projection import points_csv

    checkpoint, note = open_model(model, device)
    if note:
        term.note(note)
    name, dataset_note = dataset_for_model(checkpoint.config.dataset, dataset)
    if dataset_note:
        term.note(dataset_note)
    data = load_dataset(name, split.value, data_root=data_root,
                        shape=checkpoint.config.model.image_shape, limit=limit)
    png, projection, means = draw_projection(checkpoint.model, data, f"{dataset_label(name)} {split.value}", seed)
    term.note(describe(projection, len(data), name, split.value))
    if out == "-":
        term.emit_bytes(png)
    else:
        write_atomic(Path(out), png)
        term.emit(out)
    if points is not None:
        write_atomic(points, points_csv(projection, means, data.labels, data.class_names))
        if out == "-":
            term.note(f"wrote {points}")  # stdout holds the PNG bytes
        else:
            term.emit(str(points))


def check_output(target: str, option: str) -> None:
    """Refuse an output that cannot work before any model or data is loaded."""
    from vaecli.files import check_output_file

    if target == "-":
        term.check_binary_stdout()
    else:
        check_output_file(Path(target), option)


def draw_projection(model: VAE, data: ImageSet, what: str, seed: int) -> tuple[bytes, Projection, Any]:
    """Encode every image, project the means to 2-D and draw the scatter: (PNG bytes, projection, means)."""
    import torch

    from vaecli.latent import posterior_means
    from vaecli.plots import latent_scatter_png
    from vaecli.projection import project_2d

    means = posterior_means(model, data.images).numpy()
    projection = project_2d(means, data.labels.numpy())
    # A seeded drawing order, so no class sits on top of all the others.
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).numpy()
    title = f"Posterior means of {len(data):,} {what} images (latent {means.shape[1]})"
    png = latent_scatter_png(
        projection.coords, data.labels.numpy(), data.class_names, projection.xlabel,
        projection.ylabel, title, order=order, class_rows=projection.class_rows,
    )
    return png, projection, means


def dataset_label(name: str) -> str:
    """A built-in dataset's name, or an image folder's own name."""
    from vaecli.data import DATASET_NAMES

    return name if name in DATASET_NAMES else (Path(name).expanduser().resolve().name or name)


def describe(projection: Projection, count: int, dataset: str, split: str) -> str:
    kept = sum(projection.explained)
    how = (
        "the latent is 1-D: drawn one row per class" if projection.class_rows
        else f"the two axes hold {100 * kept:.1f}% of the variance"
    )
    return f"encoded {count} {dataset_label(dataset)} {split} images; {how}"
