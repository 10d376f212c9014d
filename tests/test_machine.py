"""Where training and evaluation ran: each epoch's record and `vae eval` name the machine, `vae info` sums it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from vaecli.errors import DeviceError
from vaecli.runtime.device import cpu_name, describe_machine, resolve_device
from vaecli.store.metadata import EpochRecord
from vaecli.store.summary import _machines_line, compute_line

from tests.helpers.safetensors_bytes import edit_metadata


def test_each_epoch_records_the_machine_it_ran_on(tiny_model, cli):
    history = json.loads(cli("info", tiny_model, "--json").stdout)["history"]
    expected = describe_machine(torch.device("cpu"))
    assert [record["machine"] for record in history] == [expected] * len(history)
    threads = torch.get_num_threads()
    assert expected == f"cpu: {cpu_name()}, {threads} thread{'s' if threads > 1 else ''}"


def test_info_sums_the_hours_per_machine(tiny_model, cli, tmp_path):
    # A run resumed on another machine: its first epoch moved to a GPU, and an older file's epoch unrecorded.
    def moved(meta: dict) -> None:
        meta["history"][0]["machine"] = "cuda: NVIDIA H200"
        meta["history"][0]["elapsed_s"] = 7200.0

    edited = tmp_path / "moved.safetensors"
    edited.write_bytes(edit_metadata(tiny_model.read_bytes(), moved))
    result = cli("info", edited)
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("trained on"))
    assert "2.0 h on cuda: NVIDIA H200 (1 epoch);" in line
    assert f"on {describe_machine(torch.device('cpu'))} (1 epoch)" in line
    compute = next(line for line in result.stdout.splitlines() if line.startswith("compute"))
    assert "2.0 GPU-hours" in compute and "CPU core-" in compute


def test_machines_line_puts_the_longest_first_and_names_the_unrecorded():
    history = [EpochRecord(1, 30.0), EpochRecord(2, 600.0, machine="cpu: A, 2 threads"),
               EpochRecord(3, 900.0, machine="cpu: A, 2 threads"), EpochRecord(4, 50.0, machine="cuda: B")]
    assert _machines_line(history) == ("25 min on cpu: A, 2 threads (2 epochs); 50 s on cuda: B (1 epoch); "
                                       "30 s on a machine not recorded (1 epoch)")


def test_eval_names_the_machine(tiny_model, cli):
    result = cli("eval", "-m", tiny_model, "--dataset", "digits", "--limit", "8", "--iw-samples", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["machine"] == describe_machine(torch.device("cpu"))
    shown = cli("eval", "-m", tiny_model, "--dataset", "digits", "--limit", "8", "--iw-samples", "2")
    assert f" s on {describe_machine(torch.device('cpu'))}" in shown.stdout


def test_compute_counts_cores_and_gpus_and_keeps_the_rest_apart():
    history = [EpochRecord(1, 1800.0, machine="cpu: A, 2 threads"), EpochRecord(2, 3600.0, machine="cpu: A, 1 thread"),
               EpochRecord(3, 900.0, machine="2 x cpu: A, 3 threads"), EpochRecord(4, 600.0, machine="4 x cuda: B"),
               EpochRecord(5, 300.0, machine="mps: M"), EpochRecord(6, 45.0)]
    # 1800 x 2 + 3600 + 900 x 6 = 12600 core-seconds; 600 x 4 GPU-seconds.
    assert compute_line(history) == ("3.5 CPU core-hours; 40 GPU-minutes; plus 5 min (wall time) on mps; "
                                     "plus 45 s (wall time) on a machine not recorded")


def _export_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "export_pretrained.py"
    spec = importlib.util.spec_from_file_location("export_pretrained", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_names_the_machine_only_of_epochs_that_lack_one():
    history = [{"epoch": 1}, {"epoch": 2, "machine": None}, {"epoch": 3, "machine": "cpu: B, 1 thread"}]
    _export_script().fill_unrecorded_machine(history, "cpu: A, 2 threads")
    assert [record["machine"] for record in history] == ["cpu: A, 2 threads"] * 2 + ["cpu: B, 1 thread"]
    with pytest.raises(SystemExit, match="as vae records it"):
        _export_script().fill_unrecorded_machine(history, "my laptop")


def test_an_unknown_device_names_the_setting_and_the_cli_the_flag(cli):
    with pytest.raises(DeviceError) as caught:
        resolve_device("tpu")
    assert caught.value.message == "`device=tpu`: unknown device; choose one of auto, cpu, cuda, mps"
    result = cli("sample", "-m", "mnist", "-n", "1", "--device", "tpu", "-o", "x.png")
    assert result.exit_code == 2
    assert result.stderr == "error: --device tpu: unknown device; choose one of auto, cpu, cuda, mps\n"
