"""Interrupted training: clean exits on signals, bit-exact resumption, atomic writes, numerical faults."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaecli.checkpoint import load_checkpoint

TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "4", "--batch-size", "32", "--device", "cpu",
        "--no-report", "-q"]
SMALL = [*TINY, "--limit", "96"]  # three steps an epoch: enough to test resumption, quick to run


def same_training_state(a: Path, b: Path) -> None:
    """Weights, Adam moments and the RNG state of two checkpoints are bit-identical."""
    first, second = (load_checkpoint(p, training_state=True) for p in (a, b))
    assert first.epochs_done == second.epochs_done
    for (name, x), (other, y) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert name == other
        assert torch.equal(x, y), f"weight {name} differs"
    assert first.optimizer_state.keys() == second.optimizer_state.keys()
    for key, value in first.optimizer_state.items():
        assert torch.equal(value, second.optimizer_state[key]), f"optimizer state {key} differs"
    assert torch.equal(first.rng_state, second.rng_state)


def test_resume_continues_exactly_with_a_constant_schedule(cli, tmp_path):
    recipe = [*SMALL, "--lr-schedule", "constant"]
    assert cli("train", *recipe, "--epochs", "4", "-o", "straight.safetensors").exit_code == 0
    assert cli("train", *recipe, "--epochs", "2", "-o", "split.safetensors").exit_code == 0
    assert load_checkpoint(tmp_path / "split.safetensors").epochs_done == 2
    result = cli("train", "--resume", "split.safetensors", "--epochs", "4", "--no-report", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "split.safetensors\n"
    same_training_state(tmp_path / "straight.safetensors", tmp_path / "split.safetensors")
    history = load_checkpoint(tmp_path / "split.safetensors").meta["history"]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]


def test_interrupted_cosine_run_resumed_equals_the_uninterrupted_run(cli, tmp_path):
    from vaecli.config import ModelConfig, TrainConfig
    from vaecli.data import load_dataset
    from vaecli.train import fit, start_run

    recipe = [*SMALL, "--lr-schedule", "cosine", "--epochs", "3", "--seed", "3"]
    assert cli("train", *recipe, "-o", "straight.safetensors").exit_code == 0

    # The same recipe in-process, stopped by a Ctrl-C that arrives just after epoch 1 is saved.
    config = TrainConfig(
        model=ModelConfig(arch="cnn", latent_dim=4, hidden=8), dataset="digits", epochs=3, batch_size=32,
        lr_schedule="cosine", seed=3, limit=96,
    )
    train_set, test_set = (load_dataset("digits", split, limit=96) for split in ("train", "test"))
    run = start_run(config, torch.device("cpu"))

    def ctrl_c(record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, run, train_set, test_set, tmp_path / "cut.safetensors", on_epoch=ctrl_c)
    assert load_checkpoint(tmp_path / "cut.safetensors").epochs_done == 1

    result = cli("train", "--resume", "cut.safetensors", "--no-report", "-q")
    assert result.exit_code == 0, result.stderr
    same_training_state(tmp_path / "straight.safetensors", tmp_path / "cut.safetensors")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_training_keeps_the_last_epoch_and_says_how_to_resume(tmp_path, signum, code):
    out = tmp_path / "run.safetensors"
    process = subprocess.Popen(
        [sys.executable, "-m", "vaecli", "train", *TINY, "--limit", "320", "--epochs", "500", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        env={**os.environ, "VAE_OFFLINE": "1", "NO_COLOR": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "no checkpoint after a minute"
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = stderr.decode()
    assert process.returncode == code, text
    assert stdout == b""
    assert "Traceback" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("error: interrupted") and f"vae train --resume {out}" in last, text
    checkpoint = load_checkpoint(out, training_state=True)
    assert checkpoint.epochs_done >= 1
    assert len(checkpoint.meta["history"]) == checkpoint.epochs_done
    assert checkpoint.optimizer_state and checkpoint.rng_state is not None
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


WRITER = """
import sys
from vaecli.checkpoint import write_atomic
number = int(sys.argv[2])
while True:
    number += 1
    write_atomic(sys.argv[1], b"%08d" % number * 1_000_000)  # 8 MB, every block the same number
    print(number, flush=True)
"""


def test_sigkill_while_writing_leaves_a_complete_earlier_file(tmp_path):
    target = tmp_path / "ckpt.safetensors"
    target.write_bytes(b"%08d" % 0 * 1_000_000)
    rng = random.Random(7)
    for round_ in range(4):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(round_ * 1000)],
                                   stdout=subprocess.PIPE)
        process.stdout.readline()  # at least one write finished
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        data = target.read_bytes()
        assert len(data) == 8_000_000
        assert data == data[:8] * 1_000_000, "the file holds parts of two writes"
        assert int(data[:8]) > round_ * 1000


def test_non_finite_loss_stops_with_epoch_step_and_advice(cli, tmp_path, monkeypatch):
    import vaecli.train

    real = vaecli.train.reconstruction_nll
    calls = []

    def poisoned(model, output, x):
        calls.append(1)
        value = real(model, output, x)
        # Calls 1-3 are epoch 1's three steps; 4 its test; then NaN from epoch 2, step 2.
        return value if len(calls) <= 5 else value * float("nan")

    monkeypatch.setattr(vaecli.train, "reconstruction_nll", poisoned)
    result = cli("train", *SMALL, "--epochs", "3", "--lr", "0.002", "-o", "nan.safetensors")
    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert "nan" in line and "epoch 2, step 2" in line and "--lr" in line, line
    checkpoint = load_checkpoint(tmp_path / "nan.safetensors")  # refuses NaN weights, so these are good
    assert checkpoint.epochs_done == 1


def test_encoder_log_variance_is_bounded():
    from vaecli.config import ModelConfig
    from vaecli.models import LOGVAR_BOUND, build_model
    from vaecli.objective import kl_to_standard_normal

    for arch in ("mlp", "cnn", "resnet"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch=arch, latent_dim=4, hidden=8))
        with torch.no_grad():
            for param in model.encoder.parameters():
                param.mul_(1e3)
            x = torch.full((2, 1, 28, 28), 1e6)
            x[1] = -1e6
            mu, logvar = model.encode(x)
        assert torch.isfinite(logvar).all() and logvar.abs().max() <= LOGVAR_BOUND
        assert torch.isfinite(torch.exp(logvar)).all() and (torch.exp(logvar) > 0).all()
        assert torch.isfinite(kl_to_standard_normal(mu.clamp(-1e3, 1e3), logvar)).all()


def test_two_runs_writing_the_same_checkpoint_leave_a_loadable_file(tmp_path):
    out = tmp_path / "shared.safetensors"
    env = {**os.environ, "VAE_OFFLINE": "1", "NO_COLOR": "1"}
    runs = [
        subprocess.Popen([sys.executable, "-m", "vaecli", "train", *SMALL, "--epochs", "2", "--seed", str(seed),
                          "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
        for seed in (1, 2)
    ]
    for run in runs:
        stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr.decode()
        assert stdout.decode() == f"{out}\n"
    checkpoint = load_checkpoint(out, training_state=True)
    assert checkpoint.epochs_done == 2 and checkpoint.config.seed in (1, 2)
    assert not list(tmp_path.glob(".*.tmp"))
