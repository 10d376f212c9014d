"""The bundled models: they load, decode, reproduce their recorded metrics, and are the default."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vaecli.model.objective import output_to_image
from vaecli.store.bundled import BUNDLED_MODELS, resolve_model
from vaecli.store.checkpoint import load_checkpoint, read_metadata

REPO = Path(__file__).resolve().parents[1]
MODELS_PAGE = REPO / "docs" / "models.md"  # the table of bundled models
NLL_TOLERANCE = 0.05  # nats; the same seed gives the same draws, only summation order may differ


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_model_loads_and_decodes(name):
    path, note = resolve_model(name)
    assert note is None and path.is_file()
    assert path.stat().st_size < 8_000_000  # a few MB in all
    checkpoint = load_checkpoint(path)
    assert checkpoint.meta["bundled_as"] == name
    assert checkpoint.meta["command"].startswith("vae train ")
    folder = checkpoint.config.dataset
    if not folder.startswith(("mnist", "fashion-mnist")):  # a folder a script writes, named as the script names it
        assert checkpoint.meta["dataset_command"].startswith(f"python scripts/photo_crops.py {folder}")
        assert f"--dataset {folder} " in checkpoint.meta["command"]
    if checkpoint.config.model.prior_components:  # every step from scratch is recorded
        assert checkpoint.meta["recipe"][0].startswith("vae train ")
        assert checkpoint.meta["recipe"][-1] == checkpoint.meta["prior"]["command"]
    z = torch.randn(6, checkpoint.config.model.latent_dim, generator=torch.Generator().manual_seed(0))
    classes = checkpoint.config.model.classes
    labels = torch.arange(6) % classes if classes else None  # a conditional model draws each class in turn
    with torch.no_grad():
        pixels = output_to_image(checkpoint.model, checkpoint.model.decode(z, labels))
    assert pixels.shape == (6, *checkpoint.config.model.image_shape) and torch.isfinite(pixels).all()
    assert 0.02 < float(pixels.mean()) < 0.6  # images, not blank or saturated


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_eval_reproduces_the_recorded_metrics(cli, name, mnist_root):
    checkpoint = load_checkpoint(resolve_model(name)[0])
    recorded = checkpoint.meta["evaluation"]
    args = shlex.split(recorded["command"])[1:]  # the exact `vae eval ...` that was recorded
    if checkpoint.config.dataset == "photos-32":
        # The recipe's folder, written again by its script where the recorded command looks for it.
        pytest.importorskip("skimage")
        crops = subprocess.run([sys.executable, str(REPO / "scripts" / "photo_crops.py"), "photos-32"],
                               capture_output=True, text=True, timeout=300, cwd=Path.cwd())
        assert crops.returncode == 0, crops.stderr
    elif checkpoint.config.dataset != "mnist":
        pytest.importorskip("torchvision")
        root = mnist_root.parent / "fashion"
        if not (root / "FashionMNIST").exists():
            import os
            import shutil

            shutil.copytree(Path(os.environ["VAE_DATA_ROOT"]) / "FashionMNIST", root / "FashionMNIST")
        args += ["--data-root", str(root)]
    elif checkpoint.config.dataset == "mnist":
        args += ["--data-root", str(mnist_root)]
    result = cli(*args, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    now = json.loads(result.stdout)
    assert now["images"] == recorded["images"] and now["iw_samples"] == recorded["iw_samples"]
    assert now["nll"] == pytest.approx(recorded["nll"], abs=NLL_TOLERANCE)
    assert now["neg_elbo"]["loss"] == pytest.approx(recorded["neg_elbo"]["loss"], abs=NLL_TOLERANCE)


def test_commands_fall_back_to_the_bundled_mnist_model(cli, tmp_path):
    result = cli("sample", "-n", "4", "--grid", "samples.png")
    assert result.exit_code == 0, result.stderr
    assert "bundled MNIST model" in result.stderr
    assert result.stdout == "samples.png\n"
    assert Image.open(tmp_path / "samples.png").size[0] > 28


def test_the_model_option_names_every_bundled_model(cli):
    # Help text wraps a long name at its hyphens: fashion-mnist-<newline>binarized.
    shown = " ".join(cli("sample", "--help").stdout.split()).replace("- ", "-")
    assert all(name in shown for name in BUNDLED_MODELS)


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_the_docs_list_each_model_with_its_recorded_likelihood(name):
    rows = [line for line in MODELS_PAGE.read_text().splitlines() if line.startswith(f"| `{name}` |")]
    assert len(rows) == 1, f"the table of bundled models in docs/models.md needs one row for {name}"
    record = read_metadata(resolve_model(name)[0]).get("full_evaluation")
    if record is not None:  # the headline, as `vae info NAME` shows it
        assert f" = {record['nll']:.2f} nats**" in rows[0]
        assert f"-ELBO {record['neg_elbo']['loss']:.2f}" in rows[0]
