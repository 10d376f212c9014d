"""training.settings.train_config: the one place a new run's settings become a TrainConfig (vaecli.train and
`vae train` both build theirs there)."""

from __future__ import annotations

import pytest

from vaecli.config import train_command_line
from vaecli.errors import SettingError
from vaecli.training.settings import train_config


def test_settings_fill_the_model_and_the_run_and_the_dataset_gives_the_shape():
    config = train_config("mnist", arch="mlp", latent_dim=4, epochs=3, batch_size=16, limit=64)
    assert (config.model.arch, config.model.latent_dim, config.model.image_shape) == ("mlp", 4, (1, 28, 28))
    assert (config.dataset, config.epochs, config.batch_size, config.limit) == ("mnist", 3, 16, 64)
    assert train_command_line(config).startswith("vae train --arch mlp --dataset mnist --latent-dim 4")


def test_image_size_and_channels_override_the_datasets_shape():
    assert train_config("mnist", image_size=32).model.image_shape == (1, 32, 32)
    assert train_config("mnist", channels=3).model.image_shape == (3, 28, 28)
    # Left unset (None, as `vae train` passes an option it was not given), the dataset's shape stays.
    assert train_config("mnist", channels=None, image_size=None).model.image_shape == (1, 28, 28)


def test_a_folder_is_stored_by_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "pictures").mkdir()
    monkeypatch.chdir(tmp_path)
    config = train_config("pictures", image_size=16)
    assert config.dataset == str(tmp_path.resolve() / "pictures")
    assert config.model.image_shape == (1, 16, 16)


@pytest.mark.parametrize("name", ["epoch", "model", "image_shape"])
def test_an_unknown_setting_is_refused_by_name(name):
    with pytest.raises(SettingError, match=f"unknown setting '{name}'"):
        train_config("mnist", **{name: 1})


def test_a_bad_value_is_refused_before_any_work():
    with pytest.raises(SettingError):
        train_config("mnist", latent_dim=0)
    with pytest.raises(SettingError, match="unknown dataset"):
        train_config("no-such-dataset-here")
