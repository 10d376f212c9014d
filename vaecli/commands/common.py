"""Glue that several commands share: opening the model, naming the dataset, checking and writing outputs.

Commands share helpers through this module (and options.py), never by importing each other. A helper that
prints takes the command's Terminal as its first argument.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from vaecli.commands.options import DEFAULT_SCORES, SCORE_NAMES
from vaecli.errors import DataError, UsageError, VaeError
from vaecli.store.bundled import resolve_model
from vaecli.store.files import check_output_file, check_output_folder, kind_of, write_atomic
from vaecli.terminal.console import Terminal, check_binary_stdout

if TYPE_CHECKING:
    import torch

    from vaecli.analysis.scores import ScoreSettings
    from vaecli.data.datasets import ImageSet
    from vaecli.store.checkpoint import Checkpoint


def model_path(term: Terminal, option: str | None) -> Path:
    """The checkpoint -m names (see bundled.resolve_model), saying on stderr when a default chose it."""
    path, note = resolve_model(option)
    if note:
        term.note(note)
    return path


def open_model(term: Terminal, option: str | None, device: str, training_state: bool = False) -> Checkpoint:
    """Every command's prologue: resolve -m, say which model a default chose, and load it on --device."""
    from vaecli.analysis.latent import load_model

    return load_model(model_path(term, option), device, training_state)


def dataset_name(term: Terminal, stored: str, named: str | None) -> str:
    """--dataset, else the dataset the model was trained on (see data.dataset_for_model), with its note."""
    from vaecli.data.datasets import dataset_for_model

    name, note = dataset_for_model(stored, named)
    if note:
        term.note(note)
    return name


def dataset_label(name: str) -> str:
    """A built-in dataset's name, or an image folder's own name, for titles and notes."""
    from vaecli.data.datasets import is_builtin

    return name if is_builtin(name) else (Path(name).expanduser().resolve().name or name)


def check_output(target: str, option: str) -> None:
    """The pre-flight check of one output, before any model or data is loaded: - is stdout, else a file."""
    if target == "-":
        check_binary_stdout()
    else:
        check_output_file(target, option)  # the text as given: `-o name/` names a folder


def check_image_outputs(term: Terminal, out: str, grid: Path | None, nrow: int | None) -> None:
    """Refuse conflicting or unwritable -o/--grid before any model is loaded (sample, decode)."""
    if out == "-":
        if grid is not None:
            raise UsageError("-o - already writes the grid to stdout; drop --grid or give -o a folder")
        check_output(out, "-o")
    elif grid is None:
        if nrow is not None:
            term.warn("--nrow applies only to a grid (--grid FILE or -o -); ignoring it")
        check_output_folder(Path(out), "-o")  # made when the first image is written
    else:
        check_output_file(grid, "--grid")


def write_images(
    term: Terminal, batches: Iterable[torch.Tensor], count: int, out: str, grid: Path | None, nrow: int | None,
    scale: int, force: bool, prefix: str,
) -> None:
    """Write uint8 (N, C, H, W) batches: numbered PNGs as they come, one --grid file, or grid bytes on stdout."""
    import torch

    from vaecli.data.images import make_grid, png_bytes, write_numbered

    if out == "-" or grid is not None:
        figure = png_bytes(make_grid(torch.cat(list(batches)), nrow), scale)
        if out == "-":
            term.emit_bytes(figure)
        else:
            term.emit(str(write_atomic(grid, figure)))
        return
    for path in write_numbered(batches, count, Path(out), prefix, force, scale):
        term.emit(str(path))


def parse_scores(given: list[str] | None) -> tuple[str, ...]:
    """--score values, split on commas, checked and without repeats, in the order given."""
    names: list[str] = []
    for word in (given or [DEFAULT_SCORES]):
        for name in (part.strip() for part in word.split(",")):
            if name not in SCORE_NAMES:
                raise UsageError(f"--score {name or '(empty)'}: choose from {', '.join(SCORE_NAMES)}")
            if name not in names:
                names.append(name)
    return tuple(names)


def settings(iw_samples: int, regret_steps: int, seed: int, decode_rows: int | None) -> ScoreSettings:
    from vaecli.analysis.scores import ScoreSettings

    return ScoreSettings(iw_samples=iw_samples, seed=seed, rows=decode_rows, regret_steps=regret_steps)


def compute_scores(term: Terminal, checkpoint: Checkpoint, uint8: torch.Tensor, names: tuple[str, ...],
                   score_settings: ScoreSettings, binarize: bool, units: str = "nats",
                   label: str = "score") -> tuple[dict, dict]:
    """The scores of uint8 images as the model sees them (binarized once if asked), and seconds per score."""
    import math

    from vaecli.analysis.scores import progress_total, score_images
    from vaecli.data.datasets import fixed_pixels
    from vaecli.training.evaluate import bits_per_dim

    pixels = fixed_pixels(uint8, next(checkpoint.model.parameters()).device, binarize)
    seconds: dict[str, float] = {}
    with progress(term, label, progress_total(len(pixels), names)) as advance:
        values = score_images(checkpoint.model, pixels, names, score_settings, advance, seconds)
    if units == "bpd":
        dims = math.prod(pixels.shape[1:])
        values = {name: bits_per_dim(v, dims) for name, v in values.items()}
    return {name: v.tolist() for name, v in values.items()}, seconds


@contextmanager
def progress(term: Terminal, label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A live bar on `term`'s stderr when it is a terminal, advanced by images done; nothing otherwise."""
    if not term.live_progress or total == 0:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=term.stderr, transient=True)
    task = bar.add_task(label, total=total)
    with bar:
        yield lambda n: bar.advance(task, n)


FALLBACK_DATASET = "digits"  # bundled with scikit-learn: works offline


def test_split(term: Terminal, checkpoint: Checkpoint, named: str | None, data_root: Path | None,
               limit: int | None = None) -> tuple[str, ImageSet]:
    """--dataset's test split, else the model's own when it is found here, else MNIST's, else the offline digits."""
    from vaecli.data.datasets import TORCHVISION_DATASETS, load_dataset

    name = dataset_name(term, checkpoint.config.dataset, named)
    shape = checkpoint.config.model.image_shape
    try:
        return name, load_dataset(name, "test", data_root=data_root, shape=shape, limit=limit)
    except DataError:
        if name not in TORCHVISION_DATASETS:
            raise
    term.note(
        f"{name} is not available here (pass --data-root DIR or set VAE_DATA_ROOT to a folder "
        f"holding {TORCHVISION_DATASETS[name]}/raw); using the offline {FALLBACK_DATASET} test set instead"
    )
    return FALLBACK_DATASET, load_dataset(FALLBACK_DATASET, "test", shape=shape, limit=limit)


ALL_CLASSES = "all"


def chosen_class(term: Terminal, checkpoint: Checkpoint, given: str | None, path: str,
                 allow_all: bool = False) -> int | str | None:
    """--label as a class index (or ALL_CLASSES), checked against the model; None for an unconditional model.

    A conditional model needs a label: none given is an error, as is a label for a model that takes none."""
    classes = checkpoint.config.model.classes
    if not classes:
        if given is not None:
            raise UsageError(f"--label {_short(given)}: {path} is not conditional (trained without --conditional); "
                             "drop --label")
        return None
    names = checkpoint.class_names
    if given is None:
        raise UsageError(f"{path} is conditional on the class: give --label, one of {class_choices(names, allow_all)}")
    if allow_all and given == ALL_CLASSES:
        return ALL_CLASSES
    index = class_index(term, given, names)
    if index is None:
        raise UsageError(f"--label {_short(given)}: not a class of {path}; "
                         f"choose one of {class_choices(names, allow_all)}")
    return index


def class_index(term: Terminal, given: str, names: list[str]) -> int | None:
    """A class by its name (exactly, then ignoring case) or its number; None when there is no such class.

    A name wins over a number: when `given` names one class and numbers another, a note says which was taken."""
    number = _class_number(given, len(names))
    if given in names:
        index = names.index(given)
        if number is not None and number != index:
            term.note(f"--label {_short(given)}: taking the class named {_short(given)} (number {index}), not class "
                      f"number {number} (named {_short(names[number])}); a name wins over a number")
        return index
    if number is not None:
        return number
    lowered = [name.lower() for name in names]
    return lowered.index(given.lower()) if given.lower() in lowered else None


# A class number: ASCII digits only (str.isdigit also passes '²' and '①', which int() refuses), and few of them.
_CLASS_NUMBER = re.compile(r"[0-9]{1,9}")


def _class_number(given: str, classes: int) -> int | None:
    text = given.strip()
    if not _CLASS_NUMBER.fullmatch(text):
        return None
    number = int(text)
    return number if number < classes else None


SHOWN_CLASSES = 8  # names listed in a refusal: a folder may have thousands, a name hundreds of characters
SHOWN_NAME_CHARS = 24


def class_choices(names: list[str], allow_all: bool = False) -> str:
    """The classes --label accepts, for error messages: numbers, and a few names where they are not numbers."""
    numbered = all(name == str(i) for i, name in enumerate(names))
    shown = f"0 to {len(names) - 1}"
    if not numbered:
        listed = ", ".join(_clip(name) for name in names[:SHOWN_CLASSES])
        more = f", ... ({len(names):,} classes)" if len(names) > SHOWN_CLASSES else ""
        shown += f" or a name: {listed}{more}"
    return shown + (f", or {ALL_CLASSES}" if allow_all else "")


def _clip(name: str) -> str:
    return name if len(name) <= SHOWN_NAME_CHARS else name[:SHOWN_NAME_CHARS - 3] + "..."


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


def refuse_conditional(checkpoint: Checkpoint, path: str, command: str) -> None:
    """Commands whose numbers would need p(x), not p(x|y), refuse a conditional model in one line."""
    if checkpoint.config.model.classes:
        raise UsageError(f"{path} is conditional on the class, and `vae {command}` needs an unconditional model "
                         "(it works with p(x) or p(z), not p(x|y)); use a model trained without --conditional")


def has_single_latent(checkpoint: Checkpoint) -> bool:
    """Whether the model has one latent layer: what a fitted prior on z and regret's refit work on."""
    return checkpoint.model.layers == 1


def refuse_hierarchical(checkpoint: Checkpoint, path: str, what: str) -> None:
    """What works on a one-layer VAE's single z (a fitted prior, regret's refit) refuses a hierarchical model."""
    arch = checkpoint.config.model.arch
    if not has_single_latent(checkpoint):
        raise UsageError(f"{path} is a hierarchical VAE (--arch {arch}), and {what} works on the single latent "
                         "of a one-layer model (mlp, cnn, resnet); use one of those, such as the bundled "
                         "-m mnist-resnet")


def keep_earlier_work(path: Path, option: str, ways: str) -> None:
    """Refuse to replace a file this command did not write (unless --force): a trained model is never lost
    unasked. `ways` says how to go on; devices and pipes are written through, so they pass."""
    from vaecli.store.checkpoint import read_metadata
    from vaecli.store.metadata import CheckpointMeta

    if kind_of(path, option) != "file":
        return
    try:
        meta = CheckpointMeta.from_dict(read_metadata(path))
    except VaeError:
        raise UsageError(f"{option} {path}: exists and is not a vaecli checkpoint; write elsewhere with -o, "
                         "or replace it with --force") from None
    fitted = " and a fitted prior" if meta.config.model.prior_components else ""
    raise UsageError(
        f"{option} {path}: already holds a checkpoint ({meta.config.model.arch}, "
        f"{meta.epochs_done or 0} epochs on {meta.config.dataset[:80]}{fitted}); {ways}"
    )
