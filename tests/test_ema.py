"""`vae train --ema`: a moving average of the weights is tested and saved; resuming goes on exactly."""

from __future__ import annotations

import json

import pytest
import torch

from vaecli.data.datasets import eval_pixels, load_dataset
from vaecli.store.checkpoint import load_checkpoint
from vaecli.training.evaluate import elbo_summary
from vaecli.training.loop import update_average

from tests.test_resume import RECIPE, assert_resume_matches_a_straight_run

EMA = [*RECIPE, "-q", "--ema", "0.9", "--seed", "3"]


def test_update_average_moves_by_the_ramped_rate():
    average, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        for kept, current in zip(average.parameters(), model.parameters(), strict=True):
            kept.zero_()
            current.fill_(1.0)
    update_average(average, model, 0.5, step=0)  # decay min(0.5, 1/10): the first step moves 90% of the way
    assert torch.allclose(average.weight, torch.full_like(average.weight, 0.9))
    update_average(average, model, 0.5, step=1000)  # ramp past 0.5: the decay itself
    assert torch.allclose(average.weight, torch.full_like(average.weight, 0.95))


def test_the_saved_weights_are_the_average_and_the_tested_ones(cli, tmp_path):
    result = cli("train", *EMA, "--epochs", "2", "-o", "ema.safetensors")
    assert result.exit_code == 0, result.stderr
    checkpoint = load_checkpoint(tmp_path / "ema.safetensors", training_state=True)
    averaged, trained = checkpoint.model.state_dict(), checkpoint.training_weights
    assert trained.keys() == averaged.keys()
    assert any(not torch.equal(averaged[name], trained[name]) for name in averaged)
    # The history's test loss is that of the weights in model.*, the ones every command runs.
    config = checkpoint.config
    test = load_dataset(config.dataset, "test", limit=config.limit, shape=config.model.image_shape)
    pixels = eval_pixels(config, test, torch.device("cpu"))
    recorded = checkpoint.meta["history"][-1]["test"]["loss"]
    assert elbo_summary(checkpoint.model, pixels).loss == pytest.approx(recorded, rel=1e-6)
    checkpoint.model.load_state_dict(trained)
    assert elbo_summary(checkpoint.model, pixels).loss != pytest.approx(recorded, rel=1e-6)
    info = cli("info", tmp_path / "ema.safetensors")
    assert "moving average of the weights, decay 0.9" in info.stdout
    assert "--ema 0.9" in json.loads(cli("info", tmp_path / "ema.safetensors", "--json").stdout)["command"]


def test_without_ema_the_file_holds_one_set_of_weights(tiny_model):
    assert load_checkpoint(tiny_model, training_state=True).training_weights == {}


@pytest.mark.slow
def test_resume_with_ema_equals_a_straight_run(cli, tmp_path):
    assert_resume_matches_a_straight_run(cli, tmp_path, EMA)


def test_fit_prior_keeps_the_trained_weights_for_resuming(cli, tmp_path):
    assert cli("train", *EMA, "--epochs", "1", "-o", "ema.safetensors").exit_code == 0
    fitted = cli("fit-prior", "-m", "ema.safetensors", "-o", "fitted.safetensors", "--components", "2", "-q")
    assert fitted.exit_code == 0, fitted.stderr
    before = load_checkpoint(tmp_path / "ema.safetensors", training_state=True).training_weights
    after = load_checkpoint(tmp_path / "fitted.safetensors", training_state=True).training_weights
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    resumed = cli("train", "--resume", "fitted.safetensors", "--epochs", "2", "-q", "--no-report")
    assert resumed.exit_code == 0, resumed.stderr


@pytest.mark.parametrize("damage, message", [
    (lambda tensor: tensor.fill_(float("nan")), "training weights contain NaN or Inf"),
    (lambda tensor: tensor.reshape(-1)[:1].clone(), "do not fit the model"),
])
def test_resume_refuses_damaged_training_weights(cli, tmp_path, damage, message):
    from safetensors import safe_open
    from safetensors.torch import save_file

    assert cli("train", *EMA, "--epochs", "1", "-o", "ema.safetensors").exit_code == 0
    with safe_open(tmp_path / "ema.safetensors", "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        metadata = handle.metadata()
    name = next(key for key in tensors if key.startswith("training.") and key.endswith("weight"))
    tensors[name] = damage(tensors[name])
    save_file(tensors, tmp_path / "damaged.safetensors", metadata=metadata)
    result = cli("train", "--resume", "damaged.safetensors", "--epochs", "2", "-q", "--no-report")
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1
