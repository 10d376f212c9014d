"""`vae train` and `vae info` end to end: datasets, output streams, checkpoints, devices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vaecli.config import ARCHITECTURES, ModelConfig
from vaecli.model.networks import build_model
from vaecli.store.checkpoint import load_checkpoint, read_metadata, save_checkpoint

TINY = ["--hidden", "8", "--latent-dim", "4", "--device", "cpu"]


def test_python_m_vaecli_runs():
    out = subprocess.run([sys.executable, "-m", "vaecli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("vaecli ")


@pytest.mark.slow
def test_digits_run_prints_only_the_checkpoint_path(cli, tmp_path):
    result = cli("train", "--dataset", "digits", "--arch", "mlp", "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "vae.safetensors\n"
    assert "epoch   1/1" in result.stderr and "test" in result.stderr
    assert (tmp_path / "vae.safetensors").is_file()
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left


@pytest.mark.slow
def test_quiet_prints_nothing_on_stderr(cli):
    result = cli("train", "--dataset", "digits", "--epochs", "1", "-q", *TINY)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == "vae.safetensors\n"


@pytest.mark.slow
def test_mnist_slice_json_lines(cli, mnist_root, tmp_path):
    out = tmp_path / "m.safetensors"
    result = cli(
        "train", "--dataset", "mnist", "--data-root", mnist_root, "--limit", "300",
        "--epochs", "2", "--json", "-o", out, *TINY,
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for epoch, record in enumerate(records, start=1):
        assert record["epoch"] == epoch
        assert record["elapsed_s"] > 0 and record["images_per_s"] > 0
        for split in ("train", "test"):
            parts = record[split]
            assert parts["loss"] == pytest.approx(parts["recon"] + parts["kl"], rel=1e-6)
            assert 0 < parts["recon"] < 800 and parts["kl"] >= 0
    meta = read_metadata(out)
    assert meta["dataset_info"]["n_train"] == 300
    assert meta["history"] == records


def test_checkpoint_metadata_is_complete_and_rebuilds_the_model(cli, tmp_path):
    result = cli("train", "--dataset", "digits", "--epochs", "2", "--seed", "3", *TINY)
    assert result.exit_code == 0, result.stderr
    meta = read_metadata(tmp_path / "vae.safetensors")
    for key in ("format_version", "vaecli_version", "arch", "latent_dim", "image_shape", "dataset",
                "likelihood", "config", "epochs_done", "history", "seed", "command"):
        assert key in meta, key
    assert meta["epochs_done"] == 2 and len(meta["history"]) == 2
    assert meta["image_shape"] == [1, 28, 28] and meta["latent_dim"] == 4 and meta["seed"] == 3
    assert meta["command"].startswith("vae train --arch cnn --dataset digits")

    first = load_checkpoint(tmp_path / "vae.safetensors")
    save_checkpoint(tmp_path / "copy.safetensors", first.model, first.meta)
    second = load_checkpoint(tmp_path / "copy.safetensors")
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(first.model.decode(z), second.model.decode(z))
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_same_seed_gives_identical_weights(cli, tmp_path):
    for name in ("a", "b"):
        result = cli("train", "--dataset", "digits", "--epochs", "1", "--seed", "5", "-o", f"{name}.safetensors", *TINY)
        assert result.exit_code == 0, result.stderr
    other = cli("train", "--dataset", "digits", "--epochs", "1", "--seed", "6", "-o", "c.safetensors", *TINY)
    assert other.exit_code == 0
    a, b, c = (load_checkpoint(tmp_path / f"{n}.safetensors").model.state_dict() for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _image_folder(root: Path, mode: str) -> Path:
    generator = torch.Generator().manual_seed(0)
    for label in ("circles", "squares"):
        (root / label / "nested").mkdir(parents=True)
        for i in range(12):
            size = (20 + i, 18)  # deliberately not square and not the model's size
            channels = 3 if mode == "RGB" else 1
            pixels = (torch.rand(size[1], size[0], channels, generator=generator) * 255).byte().numpy()
            image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
            folder = root / label / ("nested" if i % 2 else "")
            image.save(folder / f"{i}.{'png' if i % 3 else 'jpg'}")
    return root


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3)])
def test_image_folder_run(cli, tmp_path, mode, channels):
    folder = _image_folder(tmp_path / "images", mode)
    result = cli(
        "train", "--dataset", folder, "--channels", str(channels), "--image-size", "16",
        "--epochs", "1", "--arch", "mlp", *TINY,
    )
    assert result.exit_code == 0, result.stderr
    meta = read_metadata(tmp_path / "vae.safetensors")
    assert meta["image_shape"] == [channels, 16, 16]
    assert meta["dataset_info"]["class_names"] == ["circles", "squares"]
    assert meta["dataset_info"]["n_train"] + meta["dataset_info"]["n_test"] == 24


def test_info_table_and_json(cli, tiny_model):
    table = cli("info", tiny_model)
    assert table.exit_code == 0
    assert "latent dim" in table.stdout and "history" in table.stdout
    data = json.loads(cli("info", tiny_model, "--json").stdout)
    assert data["config"]["model"]["latent_dim"] == 4
    assert data["epochs_done"] == 2


def test_info_without_model_explains(cli, monkeypatch):
    monkeypatch.setattr("vaecli.store.bundled.PRETRAINED_DIR", Path("/nonexistent"))
    result = cli("info")
    assert result.exit_code == 2
    assert "vae train" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "tpu"])
def test_unavailable_device_is_a_usage_error(cli, device):
    result = cli("train", "--dataset", "digits", "--device", device, "--epochs", "1")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and device.split(":")[0] in lines[0] and "Traceback" not in result.stderr


def test_offline_without_data_names_the_fixes(cli, tmp_path):
    result = cli("train", "--dataset", "mnist", "--data-root", tmp_path / "empty", "--epochs", "1")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "--data-root" in line and "--dataset digits" in line


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 17, 23), (1, 64, 48)])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_fits_any_image_shape(arch, shape):
    config = ModelConfig(arch=arch, channels=shape[0], height=shape[1], width=shape[2], latent_dim=3, hidden=8)
    model = build_model(config)
    x = torch.rand(2, *shape)
    logits = model(x, torch.Generator().manual_seed(0)).output
    mu, logvar = model.encode(x)
    assert logits.shape == x.shape and mu.shape == (2, 3) and logvar.shape == (2, 3)
    assert model.decode(mu).shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_path(cli, tmp_path, precision):
    result = cli("train", "--dataset", "digits", "--epochs", "1", "--hidden", "8", "--device", "cuda",
                 "--precision", precision)
    assert result.exit_code == 0, result.stderr
    meta = read_metadata(tmp_path / "vae.safetensors")
    assert meta["history"][0]["test"]["loss"] > 0
    evaluated = cli("eval", "-m", "vae.safetensors", "--limit", "50", "--iw-samples", "20", "--json",
                    "--device", "cuda")
    assert evaluated.exit_code == 0, evaluated.stderr
    figures = json.loads(evaluated.stdout)
    assert 0 < figures["nll"] <= figures["neg_elbo"]["loss"] + 1.0
