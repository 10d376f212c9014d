"""`vae project`: a scatter of a labelled split's posterior means (PCA to 2-D), coloured by class."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vaecli.commands.common import check_output, dataset_label, dataset_name, open_model
from vaecli.commands.options import (
    DataRootOption,
    DeviceOption,
    LimitOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    SeedOption,
    out_option,
    split_option,
)
from vaecli.store.files import write_atomic
from vaecli.terminal.console import Terminal


class Split(str, Enum):
    train = "train"
    test = "test"


def project_command(
    out: Annotated[str, out_option("the scatter PNG, or - for its bytes on stdout.")] = "latent.png",
    points: Annotated[
        Path | None,
        typer.Option("--points", metavar="FILE.csv", dir_okay=False, show_default=False,
                     help="Also write one CSV row per image: index, label, class, x, y, mu_1..mu_d."),
    ] = None,
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    split: Annotated[Split, split_option("Which split to encode.")] = Split.test,
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
    term = Terminal(quiet=quiet)
    check_output(out, "--out")
    if points is not None:
        check_output(str(points), "--points")
    from vaecli.analysis.projection import describe_projection, draw_projection, points_csv
    from vaecli.data.datasets import load_dataset

    checkpoint = open_model(term, model, device)
    name = dataset_name(term, checkpoint.config.dataset, dataset)
    data = load_dataset(name, split.value, data_root=data_root,
                        shape=checkpoint.config.model.image_shape, limit=limit)
    what = f"{dataset_label(name)} {split.value}"
    png, projection, means = draw_projection(checkpoint.model, data, what, seed)
    term.note(describe_projection(projection, len(data), what))
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
