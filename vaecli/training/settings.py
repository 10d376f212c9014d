"""A new run's settings as a TrainConfig: the one place that `vae train` and vaecli.train build it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from vaecli.config import MODEL_FIELDS, ModelConfig, TrainConfig, run_defaults
from vaecli.data.datasets import check_dataset_name, is_builtin, native_shape
from vaecli.errors import SettingError

# TrainConfig's own fields that a setting gives; the model's come from ModelConfig, the dataset is named apart.
RUN_FIELDS = frozenset(TrainConfig.__dataclass_fields__) - {"model", "dataset"}


def train_config(dataset: str, data_root: Path | None = None, *, image_size: int | None = None,
                 conditional: bool = False, **settings: Any) -> TrainConfig:
    """A new run's validated TrainConfig from settings named as TrainConfig's and ModelConfig's fields; one left out
    or None takes its default, for the colour ones config.run_defaults. The images keep the dataset's shape
    unless `channels` or `image_size` (a square's side) is given."""
    check_dataset_name(dataset)
    unknown = sorted(set(settings) - MODEL_FIELDS - RUN_FIELDS)
    if unknown:
        raise SettingError(f"unknown setting {unknown[0]!r}; see vaecli.TrainConfig and vaecli.ModelConfig")
    channels = settings.pop("channels", None)
    native = native_shape(dataset, data_root) or (3 if channels == 3 else 1, 28, 28)
    model: dict[str, Any] = {"channels": channels or native[0], "height": image_size or native[1],
                             "width": image_size or native[2]}
    given = {name: value for name, value in settings.items() if value is not None}
    model.update(run_defaults(model["channels"], given, conditional))
    model.update({name: value for name, value in given.items() if name in MODEL_FIELDS})
    run = {name: value for name, value in given.items() if name in RUN_FIELDS}
    config = TrainConfig(model=ModelConfig(**model), dataset=stored_dataset(dataset), **run)
    config.validate()
    return config


def stored_dataset(dataset: str) -> str:
    """What a checkpoint records: a built-in name, or the folder's absolute path, found from anywhere."""
    return dataset if is_builtin(dataset) else str(Path(dataset).expanduser().resolve())


def check_tensorboard_installed() -> None:
    """`tensorboard` logs through torch's SummaryWriter, which needs the optional tensorboard package."""
    if importlib.util.find_spec("tensorboard") is None:
        raise SettingError("`tensorboard` needs the tensorboard package, an optional extra: "
                           "pip install 'vaecli[tensorboard]'")
