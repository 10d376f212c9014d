"""`vae traverse`: sweep one latent coordinate at a time, a row per dimension, ordered by its KL."""

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
    Invert,
    InvertOption,
    LabelOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    TestLimitOption,
    count_option,
    gif_option,
    scale_option,
    seed_option,
    steps_option,
    within,
)
from vaecli.errors import UsageError
from vaecli.store.bundled import model_name
from vaecli.store.files import check_output_file, write_atomic
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    import torch

    from vaecli.store.checkpoint import Checkpoint

MAX_STEPS = 101
MAX_DRAWS = 16
MAX_SWEEP = 1000.0  # prior deviations: far past any use, and well inside float32 once through the decoder
FRAME_MS = 150  # each step of the --gif


def traverse_command(
    image: Annotated[
        str | None,
        typer.Argument(metavar="[IMAGE]", show_default=False,
                       help="Sweep around this image's posterior mean (PNG/JPEG, or - for stdin)."),
    ] = None,
    count: Annotated[
        int | None,
        count_option("Without IMAGE: sweep around N draws from the prior, side by side [default: 1]",
                     min=1, max=MAX_DRAWS, show_default=False),
    ] = None,
    sweep: Annotated[
        tuple[float, float],
        typer.Option("--range", metavar="LOW HIGH", callback=within(-MAX_SWEEP, MAX_SWEEP),
                     help=f"Values the swept coordinate takes, ends included (each within +-{MAX_SWEEP:g})."),
    ] = (-3.0, 3.0),
    steps: Annotated[int, steps_option("Values per sweep (columns).", 2, MAX_STEPS)] = 9,
    active_only: Annotated[
        bool, typer.Option("--active-only", help="Leave out inactive dimensions (test KL <= 0.01 nats).")
    ] = False,
    out: FigureOutOption = "traverse.png",
    gif: Annotated[
        Path | None,
        gif_option("Also write the sweep as a looping animation, every dimension side by side.", dir_okay=False),
    ] = None,
    scale: Annotated[int, scale_option("Enlarge the GIF's frames K times.")] = 1,
    invert: InvertOption = Invert.auto,
    label: LabelOption = None,
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    limit: TestLimitOption = KL_IMAGES,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    seed: Annotated[int, seed_option("Seed of the prior draws (without IMAGE).")] = 0,
    quiet: QuietOption = False,
) -> None:
    """Decode a code with one coordinate swept at a time: a row per latent dimension, largest test KL first.

    The code is IMAGE's posterior mean, else -n draws from the prior (--seed). Each row is labelled
    with its dimension's average KL on the first --limit images of the test split; stdout gets the paths.
    A conditional model needs --label: IMAGE is encoded and every code decoded with that class (the
    KL uses each test image's own label).

    \b
    Example: vae traverse digit.png --steps 7 --active-only -o traverse.png --gif traverse.gif
    """
    term = Terminal(quiet=quiet)
    _check_outputs(out, gif, image, count)
    from vaecli.analysis.traversal import (
        decode_traversal,
        kl_order,
        sweep_values,
        traversal_captions,
        traversal_figure,
        traversal_frames,
    )
    from vaecli.data.images import gif_bytes

    values = sweep_values(sweep[0], sweep[1], steps)
    checkpoint = open_model(term, model, device)
    index = chosen_class(term, checkpoint, label, model_name(checkpoint.path))
    _check_memory(checkpoint, count or 1, steps, gif, scale)
    # A bad IMAGE fails before the KL.
    bases, base_text = _bases(term, checkpoint, image, count or 1, invert, seed, index)
    kl, what = _test_kl(term, checkpoint, dataset, data_root, limit)
    dims = kl_order(kl, active_only)
    if not dims:
        raise UsageError(f"no latent dimension is active on {what}; drop --active-only to see them all")
    decoded = decode_traversal(checkpoint.model, bases, dims, values, index)
    given = "" if index is None else f", decoded as class {checkpoint.class_names[index]}"
    title = f"{base_text}, one coordinate swept per row{given}\nrows by average KL (nats) on {what}"
    figure = traversal_figure(decoded, dims, kl, values, title)
    if out == "-":
        term.emit_bytes(figure)
    else:
        term.emit(str(write_atomic(Path(out), figure)))
    if gif is not None:
        frames = traversal_frames(decoded)
        term.emit(str(write_atomic(gif, gif_bytes(frames, [FRAME_MS] * len(frames), scale,
                                                  traversal_captions(values)))))


def _check_outputs(out: str, gif: Path | None, image: str | None, count: int | None) -> None:
    """Refuse conflicting or unwritable outputs and inputs before the model is loaded."""
    if image is not None and count is not None:
        raise UsageError("give IMAGE or -n N, not both: -n draws codes from the prior instead of encoding IMAGE")
    if out == "-" and gif is not None:
        raise UsageError("-o - writes PNG bytes to stdout, so the --gif path cannot go there")
    check_output(out, "-o")
    if gif is not None:
        check_output_file(gif, "--gif")


def _check_memory(checkpoint: Checkpoint, bases: int, steps: int, gif: Path | None, scale: int) -> None:
    """Refuse, before any work, a traversal whose GIF frames are too large or whose outputs cannot fit in memory."""
    from vaecli.data.images import MAX_OUTPUT_PIXELS, grid_size
    from vaecli.runtime.memory import check_fits, traversal_bytes

    config = checkpoint.config.model
    rows = config.latent_dim  # every dimension: --active-only drops some, but only the KL says which
    if gif is not None:
        height, width = grid_size(rows * bases, rows, config.height, config.width)  # a frame: every row side by side
        if height * width * scale * scale > MAX_OUTPUT_PIXELS:
            raise UsageError(f"--gif: frames of {width * scale}x{height * scale} pixels are too large to write "
                             f"(at most {MAX_OUTPUT_PIXELS:,}); lower --scale" + (" or -n" if bases > 1 else ""))
    lower = ["--steps", *(["-n"] if bases > 1 else []), *(["--scale"] if gif is not None and scale > 1 else [])]
    check_fits(traversal_bytes(config, rows, bases, steps, scale if gif is not None else None), None,
               f"a traversal of {rows} dimensions x {bases} code{'s' if bases > 1 else ''} x {steps} steps",
               "lower " + (" or ".join(lower) if len(lower) < 3 else f"{lower[0]}, {lower[1]} or {lower[2]}"))


def _test_kl(term: Terminal, checkpoint: Checkpoint, dataset: str | None, data_root: Path | None,
             limit: int) -> tuple[list[float], str]:
    """Each dimension's average KL on the test split, and what the images were, for titles and notes."""
    from vaecli.analysis.traversal import split_kl_per_dim
    from vaecli.training.evaluate import ACTIVE_UNIT_NATS

    name, data = test_split(term, checkpoint, dataset, data_root, limit)
    kl = split_kl_per_dim(checkpoint, data)
    what = f"{len(data):,} {dataset_label(name)} test images"
    active = sum(value > ACTIVE_UNIT_NATS for value in kl)
    term.note(f"{active} of {len(kl)} latent dimensions active (KL > {ACTIVE_UNIT_NATS:g} nats) on {what}")
    return kl, what


def _bases(term: Terminal, checkpoint: Checkpoint, image: str | None, count: int, invert: Invert,
           seed: int, index: int | None) -> tuple[torch.Tensor, str]:
    """The codes swept around: IMAGE's posterior mean (given class `index`, for a conditional model), or
    `count` seeded draws from the prior."""
    from vaecli.analysis.latent import label_tensor, make_generator, posterior_means, sample_prior
    from vaecli.data.images import read_images

    if image is None:
        bases = sample_prior(checkpoint.model, count, 1.0, make_generator(seed))
        return bases, f"Around {count} prior draw{'s' if count > 1 else ''} (seed {seed})"
    inputs = read_images([image], checkpoint.config.model.image_shape, invert.value)
    for line in inputs.notes(invert.value):
        term.note(line)
    name = "stdin" if image == "-" else Path(image).name
    means = posterior_means(checkpoint.model, inputs.pixels, label_tensor(index, len(inputs.pixels)))
    return means, f"Around the posterior mean of {name}"
