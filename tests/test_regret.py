"""Likelihood regret starts the refit at the encoder's posterior and keeps the best fit: never negative."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vaecli.analysis.scores import ScoreSettings, likelihood_regret
from vaecli.data.datasets import load_dataset
from vaecli.store.checkpoint import load_checkpoint


def _regrets(result) -> list[float]:
    assert result.exit_code == 0, result.stderr
    return [float(line.split(",")[-1]) for line in result.stdout.strip().splitlines()[1:]]


def test_regret_is_never_negative_and_the_refit_gains_on_some_images(cli, tiny_model):
    # Ten one-draw Adam steps left 15% of these images worse off than the encoder's fit before the best was kept.
    regrets = _regrets(cli("score", "-m", tiny_model, "--dataset", "digits", "--limit", "40", "-s", "regret",
                           "--regret-steps", "10", "--format", "csv"))
    assert len(regrets) == 40
    assert min(regrets) >= 0
    assert sum(r > 0.01 for r in regrets) >= 10


@pytest.mark.parametrize("settings", [ScoreSettings(regret_steps=0), ScoreSettings(regret_steps=5, regret_lr=1e-9)])
def test_no_refit_gives_no_regret(tiny_model, settings):
    model = load_checkpoint(tiny_model).model.eval()
    pixels = load_dataset("digits", "test", limit=16).images.float() / 255
    regret = likelihood_regret(model, pixels, settings)
    assert regret.shape == (16,) and regret.min() >= 0
    if settings.regret_steps == 0:
        assert torch.equal(regret, torch.zeros(16, dtype=torch.float64))
    else:  # steps too small to move the fit: at most rounding's worth of gain
        assert regret.max() < 1e-3


def test_regret_still_separates_grey_images_from_digits(cli, mnist_root, tmp_path):
    for i, value in enumerate((64, 128, 160)):
        Image.new("L", (28, 28), value).save(tmp_path / f"grey{i}.png")
    common = ("-m", "mnist-resnet", "-s", "regret", "--regret-steps", "10", "--format", "csv", "--device", "cpu")
    digits = _regrets(cli("score", "--dataset", "mnist", "--limit", "8", "--data-root", mnist_root, *common))
    grey = _regrets(cli("score", *(tmp_path / f"grey{i}.png" for i in range(3)), "--invert", "no", *common))
    assert min(digits) >= 0 and min(grey) > 10 * max(digits) + 10
