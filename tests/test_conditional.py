"""The conditional VAE: the model, `vae train --conditional`, old checkpoints, and `vae sample --label`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from vaecli.config import ModelConfig, TrainConfig, train_command_line
from vaecli.model.networks import build_model
from vaecli.store.checkpoint import load_checkpoint, read_metadata
from vaecli.training.evaluate import elbo_summary

from tests.helpers.cli_checks import one_error_line
from tests.helpers.runner import run_cli

TINY = ["--dataset", "digits", "--arch", "mlp", "--hidden", "32", "--latent-dim", "4", "--no-report"]


@pytest.fixture(scope="module")
def conditional(tmp_path_factory) -> Path:
    """Trained long enough (15 epochs) for the label to change the loss; the other tests take tiny_conditional."""
    path = tmp_path_factory.mktemp("conditional") / "cond.safetensors"
    result = run_cli("train", *TINY, "--conditional", "--epochs", "15", "-o", path)
    assert result.exit_code == 0, result.stderr
    return path


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_the_label_reaches_encoder_and_decoder(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, latent_dim=3, hidden=8, classes=4)).eval()
    x, z = torch.rand(2, 1, 28, 28), torch.randn(2, 3)
    zeros, ones = torch.zeros(2, dtype=torch.int64), torch.ones(2, dtype=torch.int64)
    with torch.no_grad():
        assert model.decode(z, zeros).shape == (2, 1, 28, 28)
        assert not torch.equal(model.decode(z, zeros), model.decode(z, ones))
        assert not torch.equal(model.encode(x, zeros)[0], model.encode(x, ones)[0])
        assert torch.equal(model.encode(x, ones)[0], model.encode(x, ones)[0])
    with pytest.raises(ValueError, match="labels"):
        model.decode(z)


def test_an_unconditional_model_keeps_its_layout():
    # Old checkpoints hold these names and shapes; the conditional wrappers must not touch them.
    model = build_model(ModelConfig(arch="cnn", latent_dim=3, hidden=8))
    names = set(model.state_dict())
    assert "encoder.0.weight" in names and "decoder.0.weight" in names
    assert model.decoder[0].in_features == 3


def test_checkpoints_written_before_the_field_load_unconditional(tiny_model, tmp_path):
    from tests.helpers.safetensors_bytes import edit_metadata

    def written_before(meta: dict) -> None:
        del meta["config"]["model"]["classes"]

    old = tmp_path / "old.safetensors"
    old.write_bytes(edit_metadata(tiny_model.read_bytes(), written_before))
    assert "classes" not in read_metadata(old)["config"]["model"]
    assert load_checkpoint(old).config.model.classes == 0


def test_the_recorded_command_repeats_conditional():
    config = TrainConfig(model=ModelConfig(classes=10))
    assert train_command_line(config).endswith("--conditional")
    assert "--conditional" not in train_command_line(TrainConfig())


@pytest.mark.slow
def test_training_records_the_classes_and_a_label_aware_test_loss(conditional):
    checkpoint = load_checkpoint(conditional)
    assert checkpoint.config.model.classes == 10
    assert checkpoint.meta["dataset_info"]["class_names"] == [str(i) for i in range(10)]
    assert "--conditional" in checkpoint.meta["command"]
    info = run_cli("info", conditional)
    assert "conditional" in info.stdout and "one of 10" in info.stdout

    from vaecli.data.datasets import eval_pixels, load_dataset

    test_set = load_dataset("digits", "test")
    pixels = eval_pixels(checkpoint.config, test_set, torch.device("cpu"))
    right = elbo_summary(checkpoint.model, pixels, labels=test_set.labels)
    assert right.loss == pytest.approx(checkpoint.meta["history"][-1]["test"]["loss"], rel=1e-5)
    # The model uses the label: the wrong class for every image explains them worse.
    wrong = elbo_summary(checkpoint.model, pixels, labels=(test_set.labels + 1) % 10)
    assert wrong.loss > right.loss + 1.0


def test_resume_keeps_conditioning_and_may_not_change_it(tiny_conditional, tmp_path):
    copy = tmp_path / "c.safetensors"
    copy.write_bytes(tiny_conditional.read_bytes())
    more = load_checkpoint(copy).epochs_done + 1
    result = run_cli("train", "--resume", copy, "--epochs", str(more), "--no-report")
    assert result.exit_code == 0, result.stderr
    assert load_checkpoint(copy).config.model.classes == 10
    changed = run_cli("train", "--resume", copy, "--epochs", str(more + 1), "--conditional", "--no-report")
    assert changed.exit_code == 2 and "--conditional" in one_error_line(changed)


def test_an_unlabelled_folder_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (28, 28), 40 * i).save(folder / f"{i}.png")
    result = run_cli("train", "--dataset", folder, "--conditional", "--epochs", "1", "-o", tmp_path / "m.safetensors")
    assert result.exit_code == 2
    assert "--conditional needs images of two or more classes" in one_error_line(result)
    assert not (tmp_path / "m.safetensors").exists()


def test_snapshots_of_a_conditional_model(tmp_path):
    out = tmp_path / "s.safetensors"
    result = run_cli("train", *TINY[:-1], "--conditional", "--epochs", "1", "--snapshots", "--limit", "200",
                     "--batch-size", "10", "-o", out)
    assert result.exit_code == 0, result.stderr
    gif = Image.open(tmp_path / "s-evolution.gif")
    assert gif.n_frames == 5  # four in the first epoch, one after it


def _png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_sample_one_class_is_seeded_and_the_class_matters(tiny_conditional):
    def grid(label: str, seed: str = "3") -> bytes:
        result = run_cli("sample", "-m", tiny_conditional, "--label", label, "-n", "6", "--seed", seed, "-o", "-")
        assert result.exit_code == 0, result.stderr
        return result.stdout_bytes

    assert grid("7") == grid("7")
    assert grid("7") != grid("1")
    assert _png(grid("7")).size == _png(run_cli("sample", "-m", tiny_conditional, "--label", "7", "-n", "6",
                                                "--seed", "3", "-o", "-").stdout_bytes).size


def test_sample_all_has_a_row_per_class_with_shared_codes(tiny_conditional, tmp_path):
    result = run_cli("sample", "-m", tiny_conditional, "--label", "all", "-n", "3", "--seed", "5",
                     "-o", tmp_path / "each")
    assert result.exit_code == 0, result.stderr
    files = sorted((tmp_path / "each").glob("sample-*.png"))
    assert len(files) == 30  # 3 per class, class after class
    one = run_cli("sample", "-m", tiny_conditional, "--label", "4", "-n", "3", "--seed", "5", "-o", tmp_path / "four")
    fours = sorted((tmp_path / "four").glob("sample-*.png"))
    # Row 4 of --label all decodes the same three codes as --label 4 with the same seed.
    assert one.exit_code == 0 and [p.read_bytes() for p in fours] == [p.read_bytes() for p in files[12:15]]
    figure = run_cli("sample", "-m", tiny_conditional, "--label", "all", "-n", "3", "--seed", "5", "--grid",
                     tmp_path / "all.png")
    assert figure.exit_code == 0, figure.stderr
    width, height = Image.open(tmp_path / "all.png").size
    assert height > width  # ten labelled rows of three


@pytest.mark.parametrize(
    ("model", "label", "fragment"),
    [
        ("cond", None, "is conditional on the class: give --label, one of 0 to 9, or all"),
        ("cond", "12", "--label '12': not a class of"),
        ("cond", "cat", "--label 'cat': not a class of"),
        ("plain", "3", "is not conditional (trained without --conditional); drop --label"),
    ],
)
def test_sample_label_errors_are_one_line(tiny_conditional, model, label, fragment, tmp_path):
    path = tiny_conditional if model == "cond" else "mnist"
    args = ["sample", "-m", path, "-n", "2", "--seed", "1", "-o", tmp_path]
    result = run_cli(*args, *(["--label", label] if label is not None else []))
    assert result.exit_code == 2
    assert fragment in one_error_line(result)
    assert not list(tmp_path.glob("sample-*.png"))


def test_info_json_keeps_its_keys_for_a_conditional_model(tiny_conditional):
    data = json.loads(run_cli("info", tiny_conditional, "--json").stdout)
    assert data["config"]["model"]["classes"] == 10
