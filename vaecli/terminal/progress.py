"""`vae train`'s live display: a progress bar on a terminal, with each epoch's line printed above it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.progress import BarColumn, TextColumn
from rich.progress import Progress as Bar

from vaecli.terminal.console import Terminal, printable

if TYPE_CHECKING:
    from vaecli.training.loop import Progress

NOT_YET = "—"  # a field with nothing measured yet: no batch done, no rate known


class TrainingDisplay:
    """Epoch lines always; with a rich bar, live progress between them."""

    def __init__(self, term: Terminal, bar: Bar | None = None, epochs: int = 0, first_epoch: int = 1,
                 images: int = 0) -> None:
        self._term = term
        self._bar = bar
        self._epochs = epochs
        self._epoch = first_epoch
        self._images = images
        # Images and seconds of the last finished epoch: the ETA's rate before and while this one runs.
        self._previous: tuple[int, float] | None = None
        self._latest: Progress | None = None
        if bar is not None:
            self._task = bar.add_task("train", total=max(images, 1), **self._fields(0, 0.0, None))

    @property
    def on_progress(self) -> Callable[[Progress], None] | None:
        """What `fit` calls during an epoch; None off a terminal, so it measures nothing for nobody."""
        return self._update if self._bar is not None else None

    def epoch_line(self, line: str) -> None:
        """Print a finished epoch's line above the bar, then start the bar on the next epoch."""
        if self._bar is None:
            self._term.note(line)
            return
        # The bar's own console: it moves the live display down instead of writing over it.
        self._bar.console.print(printable(line), markup=False, emoji=False, highlight=False, soft_wrap=True)
        latest = self._latest
        if latest is not None and latest.images_done > 0:
            self._previous = (latest.images_done, latest.elapsed_s)
        if self._epoch < self._epochs:
            self._epoch += 1
            self._latest = None
            self._bar.reset(self._task, total=max(self._images, 1), **self._fields(0, 0.0, None))

    def _update(self, p: Progress) -> None:
        self._latest, self._epoch, self._images = p, p.epoch, p.images_total
        self._bar.update(self._task, completed=p.images_done, total=max(p.images_total, 1),
                         **self._fields(p.images_done, p.elapsed_s, p.running_loss))

    def _fields(self, done: int, elapsed_s: float, loss: float | None) -> dict:
        """The bar's text fields; before the first batch, loss and rate say so instead of nan or 0."""
        started = done > 0 and elapsed_s > 0
        return {
            "epoch": self._epoch, "epochs": self._epochs,
            "rate": f"{done / elapsed_s:.0f}" if started else NOT_YET,
            "loss": f"{loss:.2f}" if started and loss is not None and math.isfinite(loss) else NOT_YET,
            "eta": self._eta(done, elapsed_s),
        }

    def _eta(self, done: int, elapsed_s: float) -> str:
        """Time left in this epoch's training, at the rate of this epoch so far and the last one pooled."""
        left = self._images - done
        if left <= 0:
            return "testing"  # the batches are done; the test split is evaluated before the epoch's line
        images, seconds = done, elapsed_s
        if self._previous is not None:
            images, seconds = images + self._previous[0], seconds + self._previous[1]
        if images <= 0 or seconds <= 0:
            return "-:--:--"
        # Rounded up: time is left until the last batch, so the bar never reads 0:00:00 before it.
        total = math.ceil(left * seconds / images)
        return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


@contextmanager
def training_display(term: Terminal, epochs: int, epochs_done: int, images: int) -> Iterator[TrainingDisplay]:
    """A live bar on `term` when its stderr is a terminal and not --quiet; epoch lines only otherwise."""
    if not term.live_progress:
        yield TrainingDisplay(term)
        return
    bar = Bar(
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}", markup=False),
        BarColumn(),
        TextColumn("{task.completed:>6.0f}/{task.total:.0f}", markup=False),
        TextColumn("{task.fields[rate]:>7} img/s", markup=False),
        TextColumn("loss {task.fields[loss]:>8}", markup=False),
        TextColumn("{task.fields[eta]:>8}", markup=False),
        console=term.stderr,
        transient=True,
    )
    display = TrainingDisplay(term, bar, epochs, epochs_done + 1, images)
    with bar:
        yield display
