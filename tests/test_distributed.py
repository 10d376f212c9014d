"""Data-parallel training under torchrun: two CPU processes behave like one with the same batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaecli.model.networks import build_model
from vaecli.store.checkpoint import load_checkpoint

RECIPE = ["--dataset", "digits", "--limit", "256", "--epochs", "2", "--batch-size", "64", "--hidden", "8",
          "--latent-dim", "4", "--device", "cpu", "--seed", "11", "--no-report", "--ema", "0.9"]
TOLERANCE = 1e-5  # gloo's gradient all-reduce sums in another order than one process does


def _watching_finalization(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose Python processes each leave a file named for their rank when finalized."""
    hooks, marks = tmp_path / "hooks", tmp_path / "finalized"
    hooks.mkdir()
    marks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import atexit, os, pathlib\n"
        f"atexit.register(lambda: (pathlib.Path({str(marks)!r}) / os.environ.get('RANK', 'alone')).touch())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))}
    return env, marks


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    env, finalized = _watching_finalization(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "-m", "vaecli", "train", *RECIPE, "-o", "ddp.safetensors"]
    ddp = subprocess.run(launch, cwd=runs, capture_output=True, text=True, timeout=300, env=env)
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout == "ddp.safetensors\n"  # rank 0 alone prints the path, flushed before its fast exit
    assert ddp.stderr.count("epoch   2/2") == 1  # and reports progress
    # Neither rank runs interpreter finalization, where a gloo thread that still holds a tensor aborts it.
    assert not {"0", "1"} & {p.name for p in finalized.iterdir()}
    (finalized / "alone").unlink(missing_ok=True)  # torchrun's own process finalizes as usual
    single = subprocess.run([sys.executable, "-m", "vaecli", "train", *RECIPE, "-o", "one.safetensors"],
                            cwd=runs, capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr
    assert (finalized / "alone").exists()  # the hook works: one process ends the ordinary way
    assert sorted(p.name for p in runs.iterdir()) == ["ddp.safetensors", "one.safetensors"]

    a, b = (load_checkpoint(runs / name, training_state=True) for name in ("ddp.safetensors", "one.safetensors"))
    torch.manual_seed(11)
    untrained = build_model(a.config.model).state_dict()
    for name, weight in a.model.state_dict().items():
        assert torch.allclose(weight, b.model.state_dict()[name], atol=TOLERANCE, rtol=0), name
    assert any(not torch.allclose(w, untrained[k], atol=1e-3) for k, w in a.model.state_dict().items())
    # --ema: each rank keeps the same average of the same weights; the weights as trained match too.
    for name, weight in a.training_weights.items():
        assert torch.allclose(weight, b.training_weights[name], atol=TOLERANCE, rtol=0), name
    assert a.meta["history"][-1]["machine"].startswith("2 x cpu: ")
    assert b.meta["history"][-1]["machine"].startswith("cpu: ")
    assert a.meta["history"][-1]["train"]["loss"] == pytest.approx(b.meta["history"][-1]["train"]["loss"], rel=1e-6)
