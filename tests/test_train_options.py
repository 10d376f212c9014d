"""Training options the literature's numbers need: binarization, likelihoods, warm-up, schedules, best."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vaecli.config import TrainConfig
from vaecli.store.checkpoint import load_checkpoint, read_metadata
from vaecli.training.loop import kl_weight, learning_rate

TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "4", "--device", "cpu", "--limit", "256",
        "--no-report", "-q"]


@pytest.mark.slow
def test_binarize_warmup_and_constant_schedule_are_recorded(cli, tmp_path):
    result = cli("train", *TINY, "--epochs", "2", "--binarize", "--warmup", "2", "--lr-schedule", "constant")
    assert result.exit_code == 0, result.stderr
    meta = read_metadata(tmp_path / "vae.safetensors")
    config = meta["config"]
    assert config["binarize"] is True and config["warmup"] == 2 and config["lr_schedule"] == "constant"
    assert "--binarize" in meta["command"] and "--warmup 2" in meta["command"]
    first, second = meta["history"]
    assert first["beta"] < second["beta"] < 1.0  # KL weight still ramping at the end of epoch 2
    assert first["lr"] == second["lr"] == pytest.approx(2e-3)


def test_schedules_and_warmup_functions():
    config = TrainConfig(lr=1e-3, lr_schedule="cosine", warmup=4, beta=2.0)
    assert learning_rate(config, 0.0) == pytest.approx(1e-3)
    assert learning_rate(config, 0.5) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert learning_rate(config, 1.0) == pytest.approx(1e-4)
    assert kl_weight(config, 0.0) == 0.0 and kl_weight(config, 2.0) == pytest.approx(1.0)
    assert kl_weight(config, 9.0) == pytest.approx(2.0)


def test_gaussian_likelihood_on_an_rgb_folder(cli, tmp_path):
    generator = torch.Generator().manual_seed(0)
    for label in ("red", "blue"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(6):
            pixels = (torch.rand(12, 12, 3, generator=generator) * 255).byte().numpy()
            Image.fromarray(pixels, "RGB").save(tmp_path / "pics" / label / f"{i}.png")
    result = cli("train", "--dataset", tmp_path / "pics", "--channels", "3", "--image-size", "12",
                 "--likelihood", "gaussian", "--epochs", "1", "--arch", "mlp", "--hidden", "16",
                 "--latent-dim", "3", "--device", "cpu", "--no-report", "-q")
    assert result.exit_code == 0, result.stderr
    checkpoint = load_checkpoint(tmp_path / "vae.safetensors")
    assert checkpoint.meta["likelihood"] == "gaussian"
    assert checkpoint.model.decoder_logvar.shape == (3,)  # the learned variance is stored with the weights
    assert "decoder_logvar" in dict(checkpoint.model.named_parameters())


@pytest.mark.slow
def test_keep_best_writes_the_lowest_test_loss_epoch(cli, tmp_path):
    result = cli("train", *TINY, "--epochs", "3", "--keep-best", "-o", "run.safetensors")
    assert result.exit_code == 0, result.stderr
    last = read_metadata(tmp_path / "run.safetensors")
    best = read_metadata(tmp_path / "run-best.safetensors")
    losses = [record["test"]["loss"] for record in last["history"]]
    assert best["epochs_done"] == 1 + losses.index(min(losses))
    assert best["history"][-1]["test"]["loss"] == min(losses)


@pytest.mark.slow
def test_bf16_autocast_trains_and_is_recorded(cli, tmp_path):
    fp32 = cli("train", *TINY, "--epochs", "1", "-o", "fp32.safetensors")
    bf16 = cli("train", *TINY, "--epochs", "1", "--precision", "bf16", "-o", "bf16.safetensors")
    assert fp32.exit_code == 0 and bf16.exit_code == 0, bf16.stderr
    meta = read_metadata(tmp_path / "bf16.safetensors")
    assert meta["config"]["precision"] == "bf16" and "--precision bf16" in meta["command"]
    assert "--precision" not in read_metadata(tmp_path / "fp32.safetensors")["command"]
    # Same seed and data: bf16 rounding moves the loss a little, not a lot, and the weights stay fp32.
    low, full = (read_metadata(tmp_path / f"{p}.safetensors")["history"][0]["test"]["loss"] for p in ("bf16", "fp32"))
    assert low != full and abs(low - full) < 0.05 * full
    weights = load_checkpoint(tmp_path / "bf16.safetensors").model.state_dict().values()
    assert all(t.dtype == torch.float32 for t in weights)
    refused = cli("train", "--resume", "bf16.safetensors", "--epochs", "2", "--precision", "fp32")
    assert refused.exit_code == 2 and "--precision cannot change when resuming" in refused.stderr
