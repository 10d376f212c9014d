"""The training report: loss curves and KL per latent dimension, drawn from a checkpoint's history."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vaecli.errors import Interrupted, VaeError
from vaecli.figures.plots import kl_bars_png, loss_curves_png
from vaecli.store.checkpoint import read_metadata
from vaecli.store.files import check_output_folder, stamp, write_atomic
from vaecli.store.metadata import EpochRecord
from vaecli.training.evaluate import ACTIVE_UNIT_NATS


def report_paths(checkpoint: Path, folder: Path | None = None) -> tuple[Path, Path]:
    """<stem>-losses.png and <stem>-kl.png, in `folder` or beside the checkpoint."""
    checkpoint = Path(checkpoint)
    where = checkpoint.parent if folder is None else Path(folder)
    return where / f"{checkpoint.stem}-losses.png", where / f"{checkpoint.stem}-kl.png"


def evolution_path(checkpoint: Path, folder: Path | None = None) -> Path:
    """<stem>-evolution.gif (training's `snapshots`), where the report goes."""
    checkpoint = Path(checkpoint)
    return (checkpoint.parent if folder is None else Path(folder)) / f"{checkpoint.stem}-evolution.gif"


def write_report(history: list[dict], checkpoint: Path, folder: Path | None = None) -> list[Path]:
    """Write the loss curves and, when the last epoch has them, the per-dimension KL bars."""
    if not history:
        return []
    losses, kl = report_paths(checkpoint, folder)
    name = Path(checkpoint).name
    written = []
    write_atomic(losses, loss_curves_png(history, title=f"{name}: loss per epoch (test: one-sample -ELBO)"), own=True)
    written.append(losses)
    last = EpochRecord.from_dict(history[-1])
    kl_per_dim = last.test.kl_per_dim if last.test is not None else None
    if kl_per_dim:
        active = sum(value > ACTIVE_UNIT_NATS for value in kl_per_dim)
        title = (
            f"{name}, epoch {last.epoch or len(history)}\n{active} of {len(kl_per_dim)} latent "
            f"dimensions active (test KL > {ACTIVE_UNIT_NATS:g} nats)"
        )
        write_atomic(kl, kl_bars_png(kl_per_dim, ACTIVE_UNIT_NATS, title), own=True)
        written.append(kl)
    return written


@contextmanager
def report_after_training(
    checkpoint: Path,
    folder: Path | None,
    enabled: bool,
    on_written: Callable[[Path], None],
    on_failure: Callable[[str], None],
) -> Iterator[None]:
    """Write the report from the checkpoint once training ends, or is interrupted after an epoch.

    A failed report is passed to on_failure instead of raised: the checkpoint is what matters.
    """
    # Under torchrun only rank 0 writes the checkpoint, so only it writes the report.
    if not enabled or os.environ.get("RANK", "0") != "0":
        yield
        return
    if folder is not None:
        check_output_folder(folder, "`report`")  # made when the first figure is written
    before = stamp(checkpoint)
    try:
        yield
    except Interrupted:
        if stamp(checkpoint) not in (None, before):  # this run saved at least one epoch
            _write_from(checkpoint, folder, on_written, on_failure)
        raise
    _write_from(checkpoint, folder, on_written, on_failure)


def _write_from(
    checkpoint: Path, folder: Path | None, on_written: Callable[[Path], None], on_failure: Callable[[str], None]
) -> None:
    try:
        history = read_metadata(Path(checkpoint)).get("history") or []
        for path in write_report(history, checkpoint, folder):
            on_written(path)
    except VaeError as exc:
        on_failure(f"no training report: {exc.message}")
