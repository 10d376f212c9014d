"""Glue that several commands share: opening the model, naming the dataset, checking and writing outputs.

Commands share helpers through this module (and options.py), never by importing each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vaecli.console import term
from vaecli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from vaecli.checkpoint import Checkpoint


def model_path(option: str | None) -> Path:
    """The checkpoint -m names (see checkpoint.resolve_model), saying on stderr when a default chose it."""
    from vaecli.checkpoint import resolve_model

    path, note = resolve_model(option)
    if note:
        term.note(note)
    return path


def open_model(option: str | None, device: str, training_state: bool = False) -> Checkpoint:
    """Every command's prologue: resolve -m, say which model a default chose, and load it on --device."""
    from vaecli.latent import load_model

    return load_model(model_path(option), device, training_state)


def dataset_name(stored: str, named: str | None) -> str:
    """--dataset, else the dataset the model was trained on (see data.dataset_for_model), with its note."""
    from vaecli.data import dataset_for_model

    name, note = dataset_for_model(stored, named)
    if note:
        term.note(note)
    return name


def dataset_label(name: str) -> str:
    """A built-in dataset's name, or an image folder's own name, for titles and notes."""
    from vaecli.data import is_builtin

    return name if is_builtin(name) else (Path(name).expanduser().resolve().name or name)


def check_output(target: str, option: str) -> None:
    """The pre-flight check of one output, before any model or data is loaded: - is stdout, else a file."""
    from vaecli.files import check_output_file

    if target == "-":
        term.check_binary_stdout()
    else:
        check_output_file(Path(target), option)


def check_image_outputs(out: str, grid: Path | None, nrow: int | None) -> None:
    """Refuse conflicting or unwritable -o/--grid before any model is loaded (sample, decode)."""
    from vaecli.files import check_output_file, ensure_folder

    if out == "-":
        if grid is not None:
            raise UsageError("-o - already writes the grid to stdout; drop --grid or give -o a folder")
        check_output(out, "-o")
    elif grid is None:
        if nrow is not None:
            term.warn("--nrow applies only to a grid (--grid FILE or -o -); ignoring it")
        ensure_folder(Path(out), "-o")
    else:
        check_output_file(grid, "--grid")


def write_images(
    batches: Iterable[torch.Tensor], count: int, out: str, grid: Path | None, nrow: int | None, scale: int,
    force: bool, prefix: str,
) -> None:
    """Write uint8 (N, C, H, W) batches: numbered PNGs as they come, one --grid file, or grid bytes on stdout."""
    import torch

    from vaecli.files import write_atomic
    from vaecli.images import make_grid, png_bytes, write_numbered

    if out == "-" or grid is not None:
        figure = png_bytes(make_grid(torch.cat(list(batches)), nrow), scale)
        if out == "-":
            term.emit_bytes(figure)
        else:
            term.emit(str(write_atomic(grid, figure)))
        return
    for path in write_numbered(batches, count, Path(out), prefix, force, scale):
        term.emit(str(path))
