"""Type checks: mypy passes over the files pyproject.toml names, and the package ships its py.typed marker."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy itself depends on tomli there
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")


def run_mypy(*args: str) -> subprocess.CompletedProcess[str]:
    """mypy with the project's settings, from the repository root (as .ci/run runs it)."""
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.slow  # a first run reads torch's stubs: tens of seconds without mypy's cache
@needs_mypy
def test_the_configured_files_type_check():
    result = run_mypy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success: no issues found")


@pytest.mark.slow
@needs_mypy
def test_a_caller_misusing_the_model_is_caught(tmp_path):
    # The model's types reach a caller's code, not Any: a wrong argument or result type is an error.
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from vaecli.config import ModelConfig\n"
        "from vaecli.model.networks import build_model\n"
        "count: int = build_model(ModelConfig()).encode(None)[0]\n"
    )
    result = run_mypy("--config-file", str(ROOT / "pyproject.toml"), str(probe))
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Argument 1 to "encode" of "VAEModel" has incompatible type "None"' in result.stdout
    assert 'expression has type "Tensor", variable has type "int"' in result.stdout


def test_the_package_ships_its_py_typed_marker():
    assert (ROOT / "vaecli" / "py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["vaecli"]


def test_mypy_is_a_test_dependency_and_checks_the_library():
    config = pyproject()
    assert any(req.startswith("mypy") for req in config["project"]["optional-dependencies"]["test"])
    files = config["tool"]["mypy"]["files"]
    assert {"vaecli/model", "vaecli/api.py"} <= set(files)
    assert all((ROOT / name).exists() for name in files)
