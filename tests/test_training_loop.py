"""The hot loop (issue 16): no wait for the device per step, a late check that still names the first
bad step, the optimizer stepped without torch._dynamo, and a `vae train` start without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaecli.training.loop
from vaecli.config import ModelConfig, TrainConfig
from vaecli.data.datasets import ImageSet
from vaecli.store.checkpoint import load_checkpoint
from vaecli.training.loop import Outputs, fit, optimizer_step, start_run

REPO = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "4", "--batch-size", "32", "--limit", "128",
        "--device", "cpu", "--no-report", "-q"]


def _images(count: int) -> ImageSet:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return ImageSet(images, torch.zeros(count, dtype=torch.int64), ["x"])


class _DeviceReads:
    """Counts the ways a tensor's value reaches Python (each one waits for the device)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
            real = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(real))

    def _counted(self, real):
        def read(tensor, *args, **kwargs):
            self.count += 1
            return real(tensor, *args, **kwargs)

        return read


def _reads_in_one_epoch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, steps: int) -> int:
    config = TrainConfig(model=ModelConfig(arch="mlp", hidden=16, latent_dim=2), epochs=1, batch_size=8)
    run = start_run(config, torch.device("cpu"))
    counted = {}
    real_epoch = vaecli.training.loop._train_epoch

    def epoch_only(loop, epoch, started):
        reads = _DeviceReads(monkeypatch)
        done = real_epoch(loop, epoch, started)
        counted["reads"] = reads.count
        monkeypatch.undo()  # the epoch's record, test and save read values as usual
        return done

    monkeypatch.setattr(vaecli.training.loop, "_train_epoch", epoch_only)
    monkeypatch.setattr(vaecli.training.loop, "CHECK_EVERY_S", 1e9)
    fit(config, run, _images(8 * steps), _images(8), Outputs(tmp_path / f"{steps}.safetensors"))
    return counted["reads"]


def test_the_hot_loop_waits_for_the_device_once_per_epoch_whatever_its_length(monkeypatch, tmp_path):
    short = _reads_in_one_epoch(monkeypatch, tmp_path, steps=3)
    long = _reads_in_one_epoch(monkeypatch, tmp_path, steps=24)
    assert short == long == 1  # the end-of-epoch loss check; nothing per step


def test_a_planted_nan_seen_late_still_names_its_step_and_keeps_the_last_good_epoch(cli, monkeypatch, tmp_path):
    """128 images, 32 a batch: 4 steps an epoch. The loss of epoch 2's second step is NaN; the
    check runs only at the epoch's end, two steps later, and names that step."""
    real = vaecli.training.loop.loss_terms
    calls = {"n": 0}

    def planted(model, result, x):
        calls["n"] += 1
        recon, kls = real(model, result, x)
        return (recon * float("nan") if calls["n"] == 6 else recon), kls

    monkeypatch.setattr(vaecli.training.loop, "loss_terms", planted)
    monkeypatch.setattr(vaecli.training.loop, "CHECK_EVERY_S", 1e9)
    result = cli("train", *TINY, "--epochs", "3", "-o", "run.safetensors")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "the loss became nan at epoch 2, step 2;" in lines[0] and "--lr" in lines[0], lines[0]
    assert calls["n"] == 8  # it trained on to the end of the epoch, then stopped before saving
    assert load_checkpoint(tmp_path / "run.safetensors").epochs_done == 1


def test_the_optimizer_step_without_its_wrappers_is_the_same_update():
    torch.manual_seed(0)
    models = [torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01, fused=True) for m in models]
    x = torch.randn(4, 5)
    for _ in range(3):
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad(set_to_none=True)
            model(x).square().sum().backward()
        optimizers[0].step()
        optimizer_step(optimizers[1])
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_vae_train_starts_without_dynamo_sympy_or_matplotlib(tmp_path):
    """`python -X importtime` lists every module a run imported; the report is off, so no matplotlib."""
    env = dict(os.environ, PYTHONPATH=str(REPO), VAE_OFFLINE="1")
    command = [sys.executable, "-X", "importtime", "-m", "vaecli", "train", *TINY, "--epochs", "1",
               "-o", str(tmp_path / "a.safetensors")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported and "torch.optim.adam" in imported  # the listing is real
    assert not {"torch._dynamo", "sympy", "matplotlib"} & imported


def test_a_cpu_run_records_that_it_did_not_use_tf32(cli, tmp_path):
    result = cli("train", *TINY, "--epochs", "1", "-o", "run.safetensors")
    assert result.exit_code == 0, result.stderr
    assert load_checkpoint(tmp_path / "run.safetensors").meta["tf32"] is False
    shown = cli("info", "run.safetensors")
    assert "TF32" not in shown.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_run_allows_tf32_and_records_it(cli, tmp_path):
    on_cuda = [("cuda" if arg == "cpu" else arg) for arg in TINY]
    result = cli("train", *on_cuda, "--epochs", "1", "-o", "run.safetensors")
    assert result.exit_code == 0, result.stderr
    assert load_checkpoint(tmp_path / "run.safetensors").meta["tf32"] is True
    assert "TF32" in cli("info", "run.safetensors").stdout


def test_optimizer_step_hooks_fire_and_the_update_is_torchs():
    import torch

    from vaecli.training.loop import optimizer_step

    def make() -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
        weight = torch.nn.Parameter(torch.ones(3))
        optimizer = torch.optim.AdamW([weight], lr=0.1)
        weight.grad = torch.tensor([1.0, -2.0, 0.5])
        return weight, optimizer

    plain_weight, plain = make()
    optimizer_step(plain)  # no hook: the fast path
    hooked_weight, hooked = make()
    seen = []
    hooked.register_step_post_hook(lambda optimizer, args, kwargs: seen.append("post"))
    hooked.register_step_pre_hook(lambda optimizer, args, kwargs: seen.append("pre"))
    optimizer_step(hooked)
    assert seen == ["pre", "post"]
    reference_weight, reference = make()
    reference.step()
    assert torch.equal(plain_weight, reference_weight) and torch.equal(hooked_weight, reference_weight)
    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(lambda *args: seen.append("global"))
    try:
        optimizer_step(plain)
    finally:
        handle.remove()
    assert seen[-1] == "global"
