"""`vae train --weight-decay`: AdamW shrinks the weights, never the biases; resuming goes on exactly."""

from __future__ import annotations

import json

import pytest
import torch

from vaecli.config import ModelConfig, TrainConfig
from vaecli.model.networks import build_model
from vaecli.store.checkpoint import load_checkpoint
from vaecli.training.loop import make_optimizer

from tests.test_resume import RECIPE, assert_resume_matches_a_straight_run

# 50: lr (0.002) x 50 = 10% a step, plain to see after a few steps.
DECAYED = [*RECIPE, "-q", "--weight-decay", "50", "--seed", "3"]


def _step_with_zero_gradients(weight_decay: float) -> tuple[dict, dict]:
    """Weights before and after one optimizer step whose gradients are all 0: only the decay moves them."""
    config = TrainConfig(model=ModelConfig(arch="cnn", latent_dim=4, hidden=8), lr=0.01, weight_decay=weight_decay)
    model = build_model(config.model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return before, dict(model.named_parameters())


def test_one_step_shrinks_each_weight_by_lr_times_decay_and_leaves_biases():
    before, after = _step_with_zero_gradients(0.5)
    for name, value in after.items():
        expected = before[name] * (1 - 0.01 * 0.5) if value.dim() >= 2 else before[name]
        assert torch.allclose(value, expected, rtol=1e-6, atol=0), name


def test_without_decay_the_optimizer_is_plain_adam():
    before, after = _step_with_zero_gradients(0.0)
    assert all(torch.equal(after[name], before[name]) for name in after)


def test_training_with_decay_gives_smaller_weights_and_records_it(cli, tmp_path):
    assert cli("train", *DECAYED, "--epochs", "2", "-o", "decayed.safetensors").exit_code == 0
    plain = [arg for arg in DECAYED if arg not in ("--weight-decay", "50")]
    assert cli("train", *plain, "--epochs", "2", "-o", "plain.safetensors").exit_code == 0

    def weight_norm(name: str) -> float:
        model = load_checkpoint(tmp_path / name).model
        return sum(float(p.detach().square().sum()) for p in model.parameters() if p.dim() >= 2) ** 0.5

    assert weight_norm("decayed.safetensors") < 0.9 * weight_norm("plain.safetensors")
    info = json.loads(cli("info", tmp_path / "decayed.safetensors", "--json").stdout)
    assert "--weight-decay 50.0" in info["command"]
    assert "--weight-decay" not in json.loads(cli("info", tmp_path / "plain.safetensors", "--json").stdout)["command"]


@pytest.mark.slow
def test_resume_with_weight_decay_equals_a_straight_run(cli, tmp_path):
    assert_resume_matches_a_straight_run(cli, tmp_path, DECAYED)
