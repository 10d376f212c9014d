"""TensorBoard logging of a training run (`tensorboard`): every epoch's numbers and pictures, then the test codes
for the Embedding Projector and the hyper-parameters, through torch's own SummaryWriter.

Only training's `tensorboard` setting (`vae train`, `vaecli.train`) imports this module, once it has checked that
the optional tensorboard package is installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import (  # type: ignore[import-untyped]
    SCALARS,
    EventAccumulator,
)
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from vaecli.analysis.latent import decode_to_pixels, posterior_means, reconstruct_pixels
from vaecli.analysis.projection import class_name, own_labels
from vaecli.config import ModelConfig, TrainConfig
from vaecli.data.datasets import ImageSet
from vaecli.data.images import make_grid
from vaecli.errors import OutputError
from vaecli.figures.snapshots import COLUMNS, Evolution
from vaecli.model.interface import VAEModel
from vaecli.store.files import check_output_folder
from vaecli.store.metadata import EpochRecord, Losses
from vaecli.training.evaluate import reported_bits_per_dim
from vaecli.training.loop import TrainingRun

EMBEDDED_IMAGES = 2_000  # test images whose codes the projector shows: its t-SNE slows down past a few thousand
SPRITE_SIDE = 8_192  # the projector reads a thumbnail sheet of at most this many pixels a side
METRIC = "loss/test"  # the scalar the HPARAMS dashboard compares runs by
EVENTS = "events.out.tfevents.*"
# Charts that put each number's train and test curves together (the CUSTOM SCALARS dashboard).
LAYOUT = {"train and test": {name: ["Multiline", [f"{name}/train", f"{name}/test"]]
                              for name in ("loss", "recon", "kl")}}


def run_folder(root: Path, checkpoint: Path) -> Path:
    """Each run logs to a folder of `root` named after its checkpoint, so runs sit side by side."""
    return Path(root) / Path(checkpoint).stem


def check_run_folder(folder: Path, appending: bool) -> None:
    """Refuse, before anything is made, a run folder that cannot be made or written in, or (unless `appending`:
    a resumed or forced run) one that holds an earlier run's events."""
    check_output_folder(folder.parent, "`tensorboard`")
    check_output_folder(folder, "`tensorboard`")
    if not appending and folder.is_dir() and any(folder.glob(EVENTS)):
        raise OutputError(f"`tensorboard` {folder}: holds the events of an earlier run of this name; go on with "
                          "its checkpoint with `resume`, start it over with `force`, or choose another folder")


def checked_run_folder(root: Path, checkpoint: Path, appending: bool) -> Path:
    """This run's folder in `root`, refused before any work as check_run_folder says."""
    folder = run_folder(root, checkpoint)
    check_run_folder(folder, appending)
    return folder


def epoch_scalars(record: EpochRecord, model: ModelConfig) -> dict[str, float]:
    """Every number of an epoch's record under its TensorBoard tag; for the logistic likelihood, bits/dim too."""
    scalars: dict[str, float] = {}
    for split in ("train", "test"):
        losses = getattr(record, split)
        if losses is not None:
            scalars |= _loss_scalars(losses, split)
    bits = None if record.test is None else reported_bits_per_dim(record.test.loss, model)
    if bits is not None:
        scalars["bits_per_dim/test"] = bits
    for group, name in (("schedule", "lr"), ("schedule", "beta"), ("time", "elapsed_s"), ("time", "images_per_s")):
        value = getattr(record, name)
        if value is not None:
            scalars[f"{group}/{name}"] = value
    return scalars


def _loss_scalars(losses: Losses, split: str) -> dict[str, float]:
    scalars = {f"loss/{split}": losses.loss, f"recon/{split}": losses.recon, f"kl/{split}": losses.kl}
    for layer, kl in enumerate(losses.kl_per_layer or [], start=1):  # the top layer first
        scalars[f"kl_per_layer/{split}/{layer}"] = kl
    dims = losses.kl_per_dim or []
    for dim, kl in enumerate(dims, start=1):
        scalars[f"kl_per_dim/{split}/{dim:0{len(str(len(dims)))}d}"] = kl
    if losses.active_units is not None:
        scalars[f"active_units/{split}"] = losses.active_units
    return scalars


def hyperparameters(config: TrainConfig) -> dict[str, int | float | str | bool]:
    """TrainConfig's fields and its model's in one flat table (their names do not clash); unset ones left out."""
    fields = {name: value for name, value in dataclasses.asdict(config).items() if name != "model"}
    fields |= dataclasses.asdict(config.model)
    return {name: value for name, value in fields.items() if value is not None}


def embedded_count(images: int, shape: tuple[int, int, int]) -> int:
    """How many test images the projector gets: EMBEDDED_IMAGES, fewer where their thumbnails would not fit."""
    per_side = SPRITE_SIDE // max(shape[1:])
    return min(images, EMBEDDED_IMAGES, per_side * per_side)


@dataclass
class Board:
    """An open TensorBoard run: the writer, the run it watches, and the fixed codes and test images it draws."""

    writer: SummaryWriter
    run: TrainingRun
    config: TrainConfig
    test_set: ImageSet
    pictures: Evolution  # the same codes and test images every epoch, as `snapshots` draws them
    embedded: int = 0  # test images whose codes the projector got, once finished

    @classmethod
    def open(cls, folder: Path, config: TrainConfig, run: TrainingRun, test_set: ImageSet) -> Board:
        """Start or go on with the run in `folder`: what an earlier, crashed run logged past the checkpoint is
        hidden (purged from step epochs_done + 1 on), and checkpointed epochs the folder lacks are logged."""
        logged = _logged_epochs(folder)
        writer = SummaryWriter(str(folder), purge_step=run.epochs_done + 1)
        board = cls(writer, run, config, test_set, Evolution.start(
            config.model.latent_dim, test_set.images, config.seed, test_set.labels, config.model.classes))
        writer.add_custom_scalars(LAYOUT)
        for record in run.history:
            if record.epoch not in logged:  # a run trained, so far, without `tensorboard`
                board._log_scalars(record)
        writer.flush()
        return board

    def log_epoch(self, record: EpochRecord) -> None:
        """The epoch's numbers, the samples of the fixed codes and the fixed test images' reconstructions."""
        self._log_scalars(record)
        samples, reconstructions = self._draw()
        for tag, images in (("samples", samples), ("reconstructions", reconstructions)):
            self.writer.add_image(tag, _enlarged(make_grid(images, nrow=COLUMNS), images.shape[2]), record.epoch)
        self.writer.flush()  # a live TensorBoard sees each epoch as it ends, and a crash loses none

    def finish(self) -> None:
        """The codes of the first test images for the projector and the hyper-parameters with the final test
        loss, at the last epoch's step."""
        last = self.run.history[-1]
        count = embedded_count(len(self.test_set), self.config.model.image_shape)
        shown = ImageSet(self.test_set.images[:count], self.test_set.labels[:count], self.test_set.class_names)
        with _in_eval_mode(self.run.saved_model) as model:
            means = posterior_means(model, shown.images, own_labels(model, shown))
        names = [[_tsv_cell(class_name(shown.class_names, label)), str(index)]
                 for index, label in enumerate(shown.labels.tolist())]
        # torch prints a warning on stdout when the step's folder exists (a run started over): its files are
        # rewritten all the same, and stdout carries the command's data.
        with contextlib.redirect_stdout(io.StringIO()):
            self.writer.add_embedding(means, metadata=names, label_img=shown.images.float().div(255.0),
                                      global_step=last.epoch, tag="test_codes", metadata_header=["class", "image"])
        test_loss = last.test.loss if last.test is not None else float("nan")
        # Into this run's own folder: add_hparams would make a sub-run that the scalars are not in.
        file_writer = self.writer.file_writer
        assert file_writer is not None, "SummaryWriter opens its file when it is made"
        for summary in hparams(hyperparameters(self.config), {METRIC: test_loss}):
            file_writer.add_summary(summary, last.epoch)
        self.writer.flush()
        self.embedded = count

    def close(self) -> None:
        self.writer.close()

    def _log_scalars(self, record: EpochRecord) -> None:
        for tag, value in epoch_scalars(record, self.config.model).items():
            self.writer.add_scalar(tag, value, record.epoch)

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 samples, and the test images over their reconstructions."""
        pictures = self.pictures
        with _in_eval_mode(self.run.saved_model) as model:
            samples = decode_to_pixels(model, pictures.codes, labels=pictures.code_labels)
            reconstructions = reconstruct_pixels(model, pictures.originals, labels=pictures.original_labels)
        return samples, torch.cat([pictures.originals, reconstructions])


@contextlib.contextmanager
def logging_to(folder: Path, config: TrainConfig, run: TrainingRun, test_set: ImageSet) -> Iterator[Board]:
    """The run's log, open while it trains; the projector's codes and the settings once training ends well."""
    board = Board.open(folder, config, run, test_set)
    try:
        yield board
        board.finish()
    finally:
        board.close()


@contextlib.contextmanager
def _in_eval_mode(model: VAEModel) -> Iterator[VAEModel]:
    """The model in eval mode, as the commands use it, and back in the mode training left it in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _logged_epochs(folder: Path) -> set[int]:
    """The epochs whose test loss the folder's events hold, as TensorBoard reads them (purges applied)."""
    if not folder.is_dir() or not any(folder.glob(EVENTS)):
        return set()
    events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    with _quiet_reader():
        events.Reload()
    return {event.step for event in events.Scalars(METRIC)} if METRIC in events.Tags()[SCALARS] else set()


@contextlib.contextmanager
def _quiet_reader() -> Iterator[None]:
    """TensorBoard's reader logs each purge it applies (a resumed run's) as a warning on stderr: expected here."""
    logger = logging.getLogger("tensorboard")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _enlarged(grid: np.ndarray, height: int) -> np.ndarray:
    """A grid of small images at twice their size, so that the dashboard shows digits, not specks."""
    return grid.repeat(2, axis=1).repeat(2, axis=2) if height < 64 else grid


def _tsv_cell(text: str) -> str:
    """A class name as one cell of the projector's tab-separated metadata (a folder's name may hold a tab)."""
    return " ".join(text.split()) or "-"
