"""Shared fixtures: the CLI runner, the MNIST location, and one tiny model trained per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.runner import run_cli


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A private copy of MNIST (from $VAE_DATA_ROOT), so tests never write to the shared folder."""
    source = os.environ.get("VAE_DATA_ROOT")
    if not source or not (Path(source) / "MNIST" / "raw").is_dir():
        pytest.skip("MNIST not available: set VAE_DATA_ROOT to a folder holding MNIST/raw/*.gz")
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(Path(source) / "MNIST", root / "MNIST")
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small CNN trained for one epoch on the offline digits set: shared by command tests."""
    out = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    result = run_cli(
        "train", "--dataset", "digits", "--arch", "cnn", "--hidden", "8", "--latent-dim", "4",
        "--epochs", "2", "--batch-size", "64", "--device", "cpu", "--seed", "7", "-q", "--no-report", "-o", out,
    )
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def tiny_conditional(tmp_path_factory) -> Path:
    """tiny_model's recipe with --conditional: decodes and encodes under one of the digits' ten classes."""
    out = tmp_path_factory.mktemp("model") / "tiny-conditional.safetensors"
    result = run_cli(
        "train", "--dataset", "digits", "--arch", "cnn", "--hidden", "8", "--latent-dim", "4", "--conditional",
        "--epochs", "2", "--batch-size", "64", "--device", "cpu", "--seed", "7", "-q", "--no-report", "-o", out,
    )
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path, tmp_path_factory):
    """Each test starts in an empty folder with no model or data defaults leaking in."""
    monkeypatch.chdir(tmp_path)
    # The dataset cache (and any other per-user cache) goes to a fresh folder, never the real home's.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    monkeypatch.delenv("VAE_MODEL", raising=False)
    monkeypatch.delenv("VAE_DEVICE", raising=False)
    monkeypatch.setenv("VAE_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
