"""Faults during work: a numerical blow-up stops cleanly keeping the last good checkpoint; concurrent writers
never leave a partial file.

Bad input given on the command line is tests/test_bad_input.py's table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from vaecli.store.checkpoint import load_checkpoint

from tests.helpers.cli_checks import one_error_line

# Arguments that make any training run tiny; tests add their own.
TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "4", "--batch-size", "64", "--limit", "128",
        "--device", "cpu", "--no-report", "-q"]


# --- numerical faults ----------------------------------------------------------------------------------


def test_non_finite_loss_stops_naming_epoch_step_and_lr(cli, monkeypatch, tmp_path):
    """A learning rate far too high from epoch 2 on: the loss turns non-finite at its second step."""
    import vaecli.training.loop

    real = vaecli.training.loop.learning_rate
    monkeypatch.setattr(vaecli.training.loop, "learning_rate",
                        lambda c, progress: 1e30 if progress >= 0.5 else real(c, progress))
    result = cli("train", *TINY, "--epochs", "2", "-o", "run.safetensors")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = one_error_line(result)
    assert "epoch 2, step 2" in line and "--lr" in line and ("nan" in line or "inf" in line), line
    kept = load_checkpoint(tmp_path / "run.safetensors")  # it refuses NaN weights, so these are good
    assert kept.epochs_done == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_non_finite_weights_after_an_epoch_keep_the_last_good_checkpoint(cli, monkeypatch, tmp_path):
    """An infinite step on the last batch of epoch 2 leaves a finite loss but inf weights: not saved."""
    import vaecli.training.loop

    real = vaecli.training.loop.learning_rate
    # 128 images, 64 a batch, 2 epochs: four steps, the last at progress 3/4.
    monkeypatch.setattr(vaecli.training.loop, "learning_rate",
                        lambda c, progress: float("inf") if progress >= 0.75 else real(c, progress))
    result = cli("train", *TINY, "--epochs", "2", "-o", "run.safetensors")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert "epoch 2" in line and "--lr" in line, line
    assert load_checkpoint(tmp_path / "run.safetensors").epochs_done == 1


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_encoder_log_variance_is_bounded(arch):
    import torch

    class Extreme(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raw = torch.tensor([[1e30] * 4, [-1e30] * 4])
            return torch.cat([torch.zeros(2, 4), raw], dim=1)  # (B, 2 * latent): mu, then raw logvar

    from vaecli.config import ModelConfig
    from vaecli.model.blocks import LOGVAR_BOUND
    from vaecli.model.gaussian import kl_divergence
    from vaecli.model.networks import build_model, reparameterize

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, latent_dim=4, hidden=8)).eval()
    x = torch.full((2, 1, 28, 28), 1e4)
    x[1] = -1e4
    with torch.no_grad():
        mu, logvar = model.encode(x)
        assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()
        assert logvar.abs().max() <= LOGVAR_BOUND
        # Whatever the network's last layer says, exp(logvar) stays finite and positive.
        model.encoder = Extreme()
        mu, logvar = model.encode(x)
        variance = torch.exp(logvar)
        assert torch.isfinite(variance).all() and (variance > 0).all()
        z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
        assert torch.isfinite(z).all() and torch.isfinite(kl_divergence(mu, logvar)).all()


# --- concurrency ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_of_two_trainings_writing_the_same_out_one_stops_and_a_whole_checkpoint_stays(tmp_path):
    out = tmp_path / "shared.safetensors"
    env = {**os.environ, "VAE_OFFLINE": "1", "NO_COLOR": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-m", "vaecli", "train", *TINY, "--limit", "64", "--epochs", "3",
                          "--seed", str(seed), "-o", str(out), "--force"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for seed in (1, 2)
    ]
    loads = 0
    while any(p.poll() is None for p in processes):
        if out.exists():  # meanwhile, this process reads whatever is there
            load_checkpoint(out)
            loads += 1
        time.sleep(0.05)
    results = [(p.returncode, *(stream.decode() for stream in p.communicate(timeout=60))) for p in processes]
    # The run that saved first keeps the file; the other stops at its next save, naming it (--force
    # only allowed replacing what was there at the start).
    winners = [seed for seed, (code, _, _) in zip((1, 2), results, strict=True) if code == 0]
    assert len(winners) == 1, results
    for code, stdout, stderr in results:
        if code == 0:
            assert stdout == f"{out}\n"
        else:
            assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
            assert "another run wrote it" in stderr and "stopping without overwriting it" in stderr
    checkpoint = load_checkpoint(out, training_state=True)
    assert checkpoint.epochs_done == 3 and checkpoint.config.seed == winners[0]
    assert [p.name for p in tmp_path.iterdir()] == ["shared.safetensors"], "temporary files were left"


WRITER = """
import sys, time
from pathlib import Path
from vaecli.store.files import write_atomic
payload = Path(sys.argv[2]).read_bytes()
stop = time.monotonic() + float(sys.argv[3])
count = 0
while time.monotonic() < stop:
    write_atomic(Path(sys.argv[1]), payload)
    count += 1
print(count)
"""


def test_atomic_writes_from_two_processes_never_show_a_partial_file(tiny_model, tmp_path):
    """Two writers replace the file with different checkpoints over and over; every read sees one whole."""
    import torch

    from vaecli.config import ModelConfig, TrainConfig
    from vaecli.model.networks import build_model
    from vaecli.store.checkpoint import build_metadata, save_checkpoint

    # A second checkpoint of another architecture, so a load mixing the two files cannot pass.
    config = TrainConfig(model=ModelConfig(arch="mlp", latent_dim=3, hidden=16), dataset="digits", epochs=1)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "other.safetensors", build_model(config.model), build_metadata(config, epochs_done=0))
    payloads = {tiny_model.read_bytes(): "cnn", (tmp_path / "other.safetensors").read_bytes(): "mlp"}
    target = tmp_path / "target.safetensors"
    target.write_bytes(tiny_model.read_bytes())
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(source), "3"], stdout=subprocess.PIPE)
        for source in (tiny_model, tmp_path / "other.safetensors")
    ]
    seen = {"cnn": 0, "mlp": 0}
    while any(w.poll() is None for w in writers):
        checkpoint = load_checkpoint(target)
        seen[checkpoint.config.model.arch] += 1
        assert target.read_bytes() in payloads
    counts = [int(w.communicate()[0]) for w in writers]
    assert all(w.returncode == 0 for w in writers)
    assert min(counts) > 1, counts
    assert sum(seen.values()) > 5, seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.safetensors", "target.safetensors"]
