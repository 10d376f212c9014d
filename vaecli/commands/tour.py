"""`vae tour`: the original notebooks' four figures, written into one folder by one command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import dataset_label, dataset_name, open_model
from vaecli.commands.options import (
    DataRootOption,
    DeviceOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    SeedOption,
)
from vaecli.console import term

if TYPE_CHECKING:
    import torch

    from vaecli.checkpoint import Checkpoint
    from vaecli.data import ImageSet
    from vaecli.models import VAE

RECONSTRUCTIONS = 8  # test images shown beside their reconstructions
INTERPOLATION_STEPS = 5  # decoded points strictly between the two posterior means
SAMPLE_COLUMNS = 8  # the sample grid is SAMPLE_COLUMNS x SAMPLE_COLUMNS
FALLBACK_DATASET = "digits"  # bundled with scikit-learn: works offline


def tour_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", file_okay=False, help="Folder for the four PNGs (created if missing).")
    ] = Path("tour"),
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Write latent.png, reconstructions.png, interpolation.png and samples.png; paths on stdout.

    Uses the test split of --dataset, else of the model's dataset (MNIST for other models), or the
    offline digits set when that cannot be loaded.

    \b
    Example: vae tour -m mnist-cnn.safetensors -o tour/
    """
    term.quiet = quiet
    from vaecli.files import ensure_folder

    ensure_folder(out, "--out")  # fail before the work when the folder cannot be made
    import torch

    from vaecli.projection import describe_projection, draw_projection

    checkpoint = open_model(model, device)
    name, data = _test_set(checkpoint, dataset, data_root)
    what = f"{dataset_label(name)} test"
    png, projection, _ = draw_projection(checkpoint.model, data, what, seed)
    term.note(describe_projection(projection, len(data), what))
    _save(out / "latent.png", png)
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data), generator=generator)
    _save(out / "reconstructions.png", _reconstructions(checkpoint.model, data.images[pick[:RECONSTRUCTIONS]], what))
    _save(out / "interpolation.png", _interpolation(checkpoint.model, data, *_two_classes(data, pick)))
    _save(out / "samples.png", _samples(checkpoint, generator))


def _save(path: Path, png: bytes) -> None:
    from vaecli.files import write_atomic

    write_atomic(path, png)
    term.emit(str(path))


def _reconstructions(vae: VAE, shown: torch.Tensor, what: str) -> bytes:
    """The shown images above their decoded posterior means."""
    from vaecli.latent import decode_to_pixels, posterior_means
    from vaecli.plots import image_rows_png

    return image_rows_png(
        [shown, decode_to_pixels(vae, posterior_means(vae, shown))], row_titles=("input", "reconstruction"),
        title=f"Reconstructions of {len(shown)} {what} images (decoded posterior means)",
    )


def _interpolation(vae: VAE, data: ImageSet, first: int, second: int) -> bytes:
    """A, recon A, the decoded points on the line between the two posterior means, recon B, B."""
    import torch

    from vaecli.latent import decode_to_pixels, interpolate, posterior_means
    from vaecli.plots import image_rows_png
    from vaecli.projection import class_name

    ends = data.images[[first, second]]
    mu = posterior_means(vae, ends)
    path_z = torch.cat([mu[:1], interpolate(mu[0], mu[1], INTERPOLATION_STEPS), mu[1:]])  # recon A, points, recon B
    panels = torch.cat([ends[:1], decode_to_pixels(vae, path_z), ends[1:]])
    titles = ["A", "recon A", *(f"t = {i}/{INTERPOLATION_STEPS + 1}" for i in range(1, INTERPOLATION_STEPS + 1)),
              "recon B", "B"]
    label_a, label_b = (class_name(data.class_names, int(data.labels[i])) for i in (first, second))
    return image_rows_png(
        [panels], column_titles=titles,
        title=f"From a {label_a} to a {label_b}: decoded points on the line between posterior means",
    )


def _samples(checkpoint: Checkpoint, generator: torch.Generator) -> bytes:
    """A square grid of images decoded from the model's prior."""
    from vaecli.latent import decode_to_pixels, sample_prior
    from vaecli.plots import image_grid_png

    z = sample_prior(checkpoint.model, SAMPLE_COLUMNS**2, 1.0, generator)
    components = checkpoint.config.model.prior_components
    prior = f"its {components}-Gaussian prior" if components else "N(0, I)"  # short enough for the title
    return image_grid_png(
        decode_to_pixels(checkpoint.model, z), SAMPLE_COLUMNS,
        title=f"{SAMPLE_COLUMNS**2} samples decoded from z ~ {prior}",
    )


def _test_set(checkpoint: Checkpoint, named: str | None, data_root: Path | None) -> tuple[str, ImageSet]:
    """--dataset, else the model's own test set when it is known here, else MNIST's, else the offline digits."""
    from vaecli.data import TORCHVISION_DATASETS, load_dataset
    from vaecli.errors import DataError

    name = dataset_name(checkpoint.config.dataset, named)
    shape = checkpoint.config.model.image_shape
    try:
        return name, load_dataset(name, "test", data_root=data_root, shape=shape)
    except DataError:
        if name not in TORCHVISION_DATASETS:
            raise
    term.note(
        f"{name} is not available here (pass --data-root DIR or set VAE_DATA_ROOT to a folder "
        f"holding {TORCHVISION_DATASETS[name]}/raw); using the offline {FALLBACK_DATASET} test set instead"
    )
    return FALLBACK_DATASET, load_dataset(FALLBACK_DATASET, "test", shape=shape)


def _two_classes(data: ImageSet, order: torch.Tensor) -> tuple[int, int]:
    """The first image in `order`, and the next one with another label (if any has one)."""
    first = int(order[0])
    for index in order[1:].tolist():
        if int(data.labels[index]) != int(data.labels[first]):
            return first, index
    return first, int(order[1]) if len(order) > 1 else first
