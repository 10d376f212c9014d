"""`vae tour`: a model at a glance (latent space, reconstructions, interpolation, samples) in one folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import check_output, dataset_label, open_model, test_split
from vaecli.commands.options import (
    KL_IMAGES,
    DataRootOption,
    DeviceOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    SeedOption,
    out_option,
)
from vaecli.store.files import check_output_folder, write_atomic
from vaecli.store.summary import summary_rows
from vaecli.terminal.console import Terminal, as_flags

if TYPE_CHECKING:
    import torch

    from vaecli.config import ModelConfig
    from vaecli.data.datasets import ImageSet
    from vaecli.figures.html_report import Figure
    from vaecli.model.interface import VAEModel
    from vaecli.store.checkpoint import Checkpoint

RECONSTRUCTIONS = 8  # test images shown beside their reconstructions
INTERPOLATION_STEPS = 5  # decoded points strictly between the two posterior means
SAMPLE_COLUMNS = 8  # the sample grid is SAMPLE_COLUMNS x SAMPLE_COLUMNS
HTML_PAGE = "tour.html"
MANIFOLD_SIZE = 15  # grid points per side of the page's manifold
TRAVERSAL_STEPS = 9  # values from -3 to 3 in the page's traversal


def tour_command(
    out: Annotated[Path, out_option("a folder for the four PNGs (created if missing).", file_okay=False)]
        = Path("tour"),
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    html: Annotated[
        bool, typer.Option("--html", help=f"Also write {HTML_PAGE}: one self-contained page with these figures, "
                           "traversals, the manifold, the training curves and the model's facts.")
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Draw a model at a glance: its latent space, reconstructions, an interpolation and samples.

    latent.png: the test images' codes in 2-D, coloured by class; reconstructions.png: test images above
    their reconstructions; interpolation.png: decoded points between two test images' codes; samples.png:
    images decoded from the prior. Paths on stdout. Uses the test split of --dataset, else of the model's
    dataset (MNIST for other models), or the offline digits set when that cannot be loaded. --html adds
    tour.html: these, latent traversals, the manifold and the training curves on one page (no network, no script).

    \b
    Example: vae tour -m mnist-cnn.safetensors -o tour/
    """
    term = Terminal(quiet=quiet)
    check_output_folder(out, "--out")  # fail before the work when the folder cannot be made; made at the first PNG
    if html:
        check_output(str(out / HTML_PAGE), "--html")
    import torch

    from vaecli.analysis.projection import describe_projection, draw_projection

    checkpoint = open_model(term, model, device)
    _check_memory(checkpoint.config.model, html)
    name, data = test_split(term, checkpoint, dataset, data_root)
    what = f"{dataset_label(name)} test"
    png, projection, means = draw_projection(checkpoint.model, data, what, seed)
    term.note(describe_projection(projection, len(data), what))
    figures = {"latent.png": png}
    _save(term, out / "latent.png", png)
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data), generator=generator)
    shown = pick[:RECONSTRUCTIONS]
    figures["reconstructions.png"] = _reconstructions(checkpoint.model, data.images[shown], what,
                                                      _labels_of(checkpoint, data, shown))
    _save(term, out / "reconstructions.png", figures["reconstructions.png"])
    ends = _same_class(data, pick) if checkpoint.config.model.classes else _two_classes(data, pick)
    figures["interpolation.png"] = _interpolation(checkpoint.model, data, *ends)
    _save(term, out / "interpolation.png", figures["interpolation.png"])
    figures["samples.png"] = _samples(checkpoint, generator)
    _save(term, out / "samples.png", figures["samples.png"])
    if html:
        extra = _latent_figures(checkpoint, data, what, torch.from_numpy(means), int(pick[0]))
        _save(term, out / HTML_PAGE, _page(checkpoint, figures, extra))


def _check_memory(config: ModelConfig, html: bool) -> None:
    """Refuse, before any work, figures that cannot fit in memory: --html's traversal has a row per latent dimension."""
    from vaecli.runtime.memory import check_fits, tour_bytes

    figures = tour_bytes(config, 0, 0)
    check_fits(figures, None, f"drawing the tour's figures of {config.channels}x{config.height}x{config.width} images",
               "use a machine with more free memory")
    if html:
        check_fits(tour_bytes(config, TRAVERSAL_STEPS, MANIFOLD_SIZE), None,
                   f"--html's traversal of {config.latent_dim} latent dimensions", "drop --html")


def _save(term: Terminal, path: Path, png: bytes) -> None:
    write_atomic(path, png)
    term.emit(str(path))


def _labels_of(checkpoint: Checkpoint, data: ImageSet, rows: torch.Tensor) -> torch.Tensor | None:
    """The chosen test images' own labels for a conditional model; None for an unconditional one."""
    from vaecli.analysis.projection import own_labels

    labels = own_labels(checkpoint.model, data)
    return None if labels is None else labels[rows]


def _reconstructions(vae: VAEModel, shown: torch.Tensor, what: str, labels: torch.Tensor | None) -> bytes:
    """The shown images above their decoded posterior means (each with its own label, if the model takes one)."""
    from vaecli.analysis.latent import reconstruct_pixels
    from vaecli.figures.plots import image_rows_png

    recon = reconstruct_pixels(vae, shown, labels=labels)  # a hierarchical model's every layer at its posterior mean
    return image_rows_png(
        [shown, recon], row_titles=("input", "reconstruction"),
        title=f"Reconstructions of {len(shown)} {what} images (decoded posterior means)",
    )


def _interpolation(vae: VAEModel, data: ImageSet, first: int, second: int) -> bytes:
    """A, recon A, the decoded points on the line between the two posterior means, recon B, B.

    A conditional model encodes and decodes them all with A's label (B is of A's class)."""
    import torch

    from vaecli.analysis.latent import decode_layers_to_pixels, interpolate_layers, label_tensor, posterior_layers
    from vaecli.analysis.projection import class_name
    from vaecli.figures.plots import image_rows_png

    conditional = bool(vae.config.classes)
    label = int(data.labels[first]) if conditional else None
    ends = data.images[[first, second]]
    # recon A, points, recon B; a hierarchical model's lower maps move with the top code, as in `vae interpolate`
    path = interpolate_layers(posterior_layers(vae, ends, label_tensor(label, 2)), INTERPOLATION_STEPS)
    decoded = decode_layers_to_pixels(vae, path, labels=label_tensor(label, INTERPOLATION_STEPS + 2))
    panels = torch.cat([ends[:1], decoded, ends[1:]])
    titles = ["A", "recon A", *(f"t = {i}/{INTERPOLATION_STEPS + 1}" for i in range(1, INTERPOLATION_STEPS + 1)),
              "recon B", "B"]
    label_a, label_b = (class_name(data.class_names, int(data.labels[i])) for i in (first, second))
    how = f", all decoded as class {label_a}" if conditional else ""
    return image_rows_png(
        [panels], column_titles=titles,
        title=f"From a {label_a} to a {label_b}: decoded points on the line between posterior means{how}",
    )


def _samples(checkpoint: Checkpoint, generator: torch.Generator) -> bytes:
    """A square grid of images decoded from the model's prior; a conditional model's cycle through its classes."""
    import torch

    from vaecli.analysis.latent import decode_to_pixels, sample_prior
    from vaecli.figures.plots import image_grid_png

    count, classes = SAMPLE_COLUMNS**2, checkpoint.config.model.classes
    z = sample_prior(checkpoint.model, count, 1.0, generator)
    components = checkpoint.config.model.prior_components
    prior = f"its {components}-Gaussian prior" if components else "N(0, I)"  # short enough for the title
    labels = torch.arange(count, dtype=torch.int64) % classes if classes else None
    what = f"{count} samples from z ~ {prior}, sample i of class i mod {classes}" if classes else (
        f"{count} samples decoded from z ~ {prior}")
    return image_grid_png(
        decode_to_pixels(checkpoint.model, z, labels=labels), SAMPLE_COLUMNS, title=what,
    )


def _two_classes(data: ImageSet, order: torch.Tensor) -> tuple[int, int]:
    """The first image in `order`, and the next one with another label (if any has one)."""
    first = int(order[0])
    for index in order[1:].tolist():
        if int(data.labels[index]) != int(data.labels[first]):
            return first, index
    return first, int(order[1]) if len(order) > 1 else first


def _same_class(data: ImageSet, order: torch.Tensor) -> tuple[int, int]:
    """The first image in `order`, and the next one of the same class (if any other has it)."""
    first = int(order[0])
    for index in order[1:].tolist():
        if int(data.labels[index]) == int(data.labels[first]):
            return first, index
    return first, first


def _latent_figures(checkpoint: Checkpoint, data: ImageSet, what: str, means: torch.Tensor,
                    first: int) -> list[Figure]:
    """The page's traversal (around the first test image shown) and manifold (with the test codes).

    A conditional model decodes both with that first image's label."""
    from dataclasses import replace

    import torch

    from vaecli.analysis.projection import class_name
    from vaecli.analysis.traversal import (
        decode_traversal,
        kl_order,
        manifold_figure,
        plane_for,
        split_kl_per_dim,
        traversal_figure,
    )
    from vaecli.figures.html_report import Figure

    vae, latent = checkpoint.model, checkpoint.config.model.latent_dim
    label = int(data.labels[first]) if checkpoint.config.model.classes else None
    given = "" if label is None else f", decoded as class {class_name(data.class_names, label)}"
    kl = split_kl_per_dim(checkpoint, replace(data, images=data.images[:KL_IMAGES], labels=data.labels[:KL_IMAGES]))
    # Inactive rows all show the same image: fold them, keeping at least the top row when none is active.
    dims, values = kl_order(kl, active_only=True) or kl_order(kl)[:1], torch.linspace(-3.0, 3.0, TRAVERSAL_STEPS)
    decoded = decode_traversal(vae, means[first:first + 1], dims, values, label)
    ranked_on = f"{min(len(data), KL_IMAGES):,} {what} images"
    traversal = traversal_figure(decoded, dims, kl, values, f"Around a {what} image's posterior mean{given}; "
                                 f"rows by average KL (nats) on {ranked_on}")
    caption = ("Each row sweeps one coordinate of a test image's code from -3 to 3, the others fixed; the "
               "dimensions with the most KL (the most information) come first. " + _folded(kl, dims))
    rows = ", ".join(f"z{d + 1} (KL {kl[d]:.2f})" for d in dims)
    figures = [Figure("Latent traversals", caption, traversal, f"Latent traversals, a row per dimension: {rows}")]
    if latent >= 2:
        plane = plane_for(vae, MANIFOLD_SIZE, means)
        how = "at evenly spaced prior quantiles" if latent == 2 else "over the test codes' principal plane"
        manifold = manifold_figure(vae, plane, f"Decoded grid {how} (latent {latent}){given}", data, means, label)
        figures.append(Figure("The manifold", f"Codes on a {MANIFOLD_SIZE} x {MANIFOLD_SIZE} grid {how}, decoded; "
                              "beside it, the test codes in the same plane.", manifold))
    return figures


def _folded(kl: list[float], shown: list[int]) -> str:
    """What the traversal leaves out: the inactive dimensions, whose rows would all show the same image."""
    from vaecli.training.evaluate import ACTIVE_UNIT_NATS

    left = len(kl) - len(shown)
    threshold = f"KL ≤ {ACTIVE_UNIT_NATS:g} nats"
    if not any(value > ACTIVE_UNIT_NATS for value in kl):
        return f"No dimension is active ({threshold} each): only the one with the most KL is shown."
    if not left:
        return f"All {len(kl)} dimensions are active (KL > {ACTIVE_UNIT_NATS:g} nats)."
    return f"{left} inactive dimension{'s' if left > 1 else ''} ({threshold}) not shown."


def _page(checkpoint: Checkpoint, tour: dict[str, bytes], extra: list[Figure]) -> bytes:
    """The tour's figures, the latent pictures, the training curves and `vae info`'s facts as one HTML page."""
    from vaecli.figures.html_report import Figure, page
    from vaecli.figures.plots import loss_curves_png
    from vaecli.store.metadata import CheckpointMeta

    captions = {
        "latent.png": ("The latent space", "Posterior means of the test images, reduced to 2-D, coloured by class."),
        "reconstructions.png": ("Reconstructions", "Test images above the decoded means of their codes."),
        "interpolation.png": ("Interpolation", "Decoded points on the line between two test images' codes."),
        "samples.png": ("Samples", "Images decoded from codes drawn from the prior."),
    }
    figures = [Figure(*captions[name], png) for name, png in tour.items()]
    figures += extra
    history = checkpoint.meta.get("history") or []
    if history:
        figures.append(Figure("Training", "Reconstruction, KL and total loss per epoch, train and test.",
                              loss_curves_png(history, title=f"{checkpoint.path.name}: loss per epoch")))
    facts = [(name, as_flags(value)) for name, value in
             summary_rows(str(checkpoint.path), CheckpointMeta.from_dict(checkpoint.meta))]
    intro = "What this variational autoencoder learned, drawn by vae tour --html."
    return page(f"vae tour: {checkpoint.path.name}", intro, facts, figures)
