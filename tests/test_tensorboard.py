"""`vae train --tensorboard`: what TensorBoard's own reader finds in the run's folder, against the checkpoint."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vaecli
from vaecli.data.datasets import load_dataset
from vaecli.data.images import GRID_PADDING
from vaecli.errors import SettingError
from vaecli.store.checkpoint import read_metadata

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
plugin_data_pb2 = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")

TINY = ["--dataset", "digits", "--arch", "mlp", "--hidden", "32", "--latent-dim", "2", "--limit", "256",
        "--batch-size", "64", "--device", "cpu", "--no-report", "-q"]
EXTRA_LINE = "pip install 'vaecli[tensorboard]'"


def _events(run: Path):
    """The run folder as TensorBoard reads it: every scalar and image kept, purges applied."""
    accumulator = event_accumulator.EventAccumulator(
        str(run), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
    accumulator.Reload()
    return accumulator


def _expected_scalars(record: dict, shape: list[int], logistic: bool = False) -> dict[str, float]:
    """Each number of a history entry under the tag docs/tensorboard.md gives it."""
    expected = {}
    for split in ("train", "test"):
        losses = record[split]
        expected |= {f"loss/{split}": losses["loss"], f"recon/{split}": losses["recon"], f"kl/{split}": losses["kl"]}
        expected |= {f"kl_per_dim/{split}/{i}": kl for i, kl in enumerate(losses.get("kl_per_dim") or [], 1)}
        expected |= {f"kl_per_layer/{split}/{i}": kl for i, kl in enumerate(losses.get("kl_per_layer") or [], 1)}
        if losses.get("active_units") is not None:
            expected[f"active_units/{split}"] = losses["active_units"]
    if logistic:  # nats per image over (C H W ln 2)
        expected["bits_per_dim/test"] = record["test"]["loss"] / (math.prod(shape) * math.log(2))
    expected |= {"schedule/lr": record["lr"], "schedule/beta": record["beta"],
                 "time/elapsed_s": record["elapsed_s"], "time/images_per_s": record["images_per_s"]}
    return expected


def _assert_scalars_match_history(run: Path, checkpoint: Path, logistic: bool = False) -> None:
    """Every scalar TensorBoard shows is a number of the checkpoint's history, once per epoch, and none is missing."""
    meta = read_metadata(checkpoint)
    history, shape = meta["history"], meta["image_shape"]
    events = _events(run)
    expected_tags = set(_expected_scalars(history[0], shape, logistic))
    assert set(events.Tags()["scalars"]) == expected_tags
    for tag in expected_tags:
        logged = events.Scalars(tag)
        assert [event.step for event in logged] == [record["epoch"] for record in history], tag
        wanted = [_expected_scalars(record, shape, logistic)[tag] for record in history]
        assert [event.value for event in logged] == pytest.approx(wanted, rel=1e-6), tag  # stored as float32


def _grid_side(tiles: int) -> int:
    """A grid's width or height in pixels across this many 28-pixel tiles, drawn at twice their size."""
    return 2 * (tiles * 28 + (tiles - 1) * GRID_PADDING)


def _hparams(events, tag: str):
    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(events.SummaryMetadata(tag).plugin_data.content)
    return data


def test_scalars_images_projector_and_settings_are_what_tensorboard_reads(cli, tmp_path):
    result = cli("train", *TINY, "--epochs", "2", "-o", "runs/digits.safetensors", "--tensorboard", "tb")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "runs/digits.safetensors\n"  # the log's files and notes stay off stdout
    run, checkpoint = tmp_path / "tb" / "digits", tmp_path / "runs" / "digits.safetensors"
    _assert_scalars_match_history(run, checkpoint)
    # The hyper-parameters sit in the run's own folder, beside its scalars, not in a sub-run.
    assert [path.parent for path in (tmp_path / "tb").rglob("events.out.tfevents.*")] == [run]

    events = _events(run)
    for tag, rows in (("samples", 2), ("reconstructions", 2)):  # 16 samples; 8 test images over their 8
        images = events.Images(tag)
        assert [image.step for image in images] == [1, 2]
        picture = Image.open(io.BytesIO(images[-1].encoded_image_string))
        assert picture.size == (_grid_side(8), _grid_side(rows))
    first, last = (np.asarray(Image.open(io.BytesIO(image.encoded_image_string))) for image in events.Images("samples"))
    assert not np.array_equal(first, last)  # the same codes, decoded by a model that trained on

    start = _hparams(events, "_hparams_/session_start_info").session_start_info.hparams
    assert start["arch"].string_value == "mlp" and start["latent_dim"].number_value == 2
    assert start["epochs"].number_value == 2 and start["lr"].number_value == pytest.approx(2e-3)
    experiment = _hparams(events, "_hparams_/experiment").experiment
    assert [metric.name.tag for metric in experiment.metric_infos] == ["loss/test"]

    # The projector: the first 256 test images' posterior means, their classes and thumbnails, at epoch 2.
    config = (run / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "00002/test_codes/tensors.tsv"' in config and "single_image_dim: 28" in config
    folder = run / "00002" / "test_codes"
    test = load_dataset("digits", "test", shape=(1, 28, 28), limit=256)
    codes = np.loadtxt(folder / "tensors.tsv", delimiter="\t")
    assert codes.shape == (256, 2)
    np.testing.assert_allclose(codes, vaecli.load(checkpoint, device="cpu").encode(test.images), atol=1e-5)
    rows = (folder / "metadata.tsv").read_text().splitlines()
    assert rows[0] == "class\timage" and len(rows) == 257
    assert rows[1:] == [f"{test.class_names[label]}\t{i}" for i, label in enumerate(test.labels.tolist())]
    sprite = np.asarray(Image.open(folder / "sprite.png").convert("L"), dtype=np.int16)
    assert sprite.shape == (16 * 28, 16 * 28)  # a square of 16 x 16 thumbnails
    first_image = test.images[0, 0].numpy().astype(np.int16)
    assert np.abs(sprite[:28, :28] - first_image).max() <= 1


def test_resuming_logs_each_epoch_once_and_hides_what_a_crash_left(cli, tmp_path):
    assert cli("train", *TINY, "--epochs", "1", "-o", "r.safetensors", "--tensorboard", "tb").exit_code == 0
    shutil.copy(tmp_path / "r.safetensors", tmp_path / "after-1.safetensors")
    # A run that logged epoch 2 and 3, then lost its checkpoint: training goes on again from epoch 1's.
    resumed = cli("train", "--resume", "r.safetensors", "--epochs", "3", "--tensorboard", "tb", "-q", "--no-report")
    assert resumed.exit_code == 0, resumed.stderr
    shutil.copy(tmp_path / "after-1.safetensors", tmp_path / "r.safetensors")
    again = cli("train", "--resume", "r.safetensors", "--epochs", "2", "--tensorboard", "tb", "-q", "--no-report")
    assert again.exit_code == 0, again.stderr

    run = tmp_path / "tb" / "r"
    _assert_scalars_match_history(run, tmp_path / "r.safetensors")  # steps 1 and 2, once each; 3 is hidden
    events = _events(run)
    assert [image.step for image in events.Images("samples")] == [1, 2]
    assert 'tensor_name: "test_codes:00002"' in (run / "projector_config.pbtxt").read_text()


def test_resuming_a_run_trained_without_tensorboard_logs_its_earlier_epochs(cli, tmp_path):
    assert cli("train", *TINY, "--epochs", "1", "-o", "plain.safetensors").exit_code == 0
    result = cli("train", "--resume", "plain.safetensors", "--epochs", "2", "--tensorboard", "tb", "-q", "--no-report")
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "tb" / "plain"
    _assert_scalars_match_history(run, tmp_path / "plain.safetensors")
    assert [image.step for image in _events(run).Images("samples")] == [2]  # no model of epoch 1 to draw with


def test_a_hierarchical_model_logs_each_layers_kl_and_bits_per_dim(cli, tmp_path):
    result = cli("train", *TINY, "--arch", "hvae", "--groups", "2", "--hidden", "8", "--group-channels", "2",
                 "--likelihood", "logistic", "--limit", "128", "--epochs", "1", "-o", "h.safetensors",
                 "--tensorboard", "tb")
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "tb" / "h"
    _assert_scalars_match_history(run, tmp_path / "h.safetensors", logistic=True)
    assert {"kl_per_layer/test/1", "kl_per_layer/test/2", "bits_per_dim/test"} <= set(_events(run).Tags()["scalars"])


def test_without_the_extra_one_line_names_it_and_nothing_is_made(tmp_path):
    # tensorboard made unimportable, as where the extra is not installed.
    code = ("import sys\nsys.modules['tensorboard'] = None\nfrom vaecli.cli import main\n"
            f"sys.argv = ['vae', 'train', *{TINY!r}, '--epochs', '1', '--tensorboard', 'tb']\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VAE_OFFLINE": "1"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and EXTRA_LINE in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def _setup_file(root: Path) -> None:
    (root / "tb").write_text("a file")


def _setup_run_file(root: Path) -> None:
    (root / "tb").mkdir()
    (root / "tb" / "vae").write_text("a file where the run's folder goes")


@pytest.mark.parametrize("folder,setup,named", [
    ("tb", _setup_file, "--tensorboard tb:"),
    ("tb/deeper", _setup_file, "--tensorboard tb/deeper: tb is not a folder"),
    ("tb", _setup_run_file, "--tensorboard tb/vae:"),
    ("/dev/null", None, "--tensorboard /dev/null:"),
])
def test_a_folder_that_cannot_be_written_is_refused_before_anything_is_made(cli, tmp_path, folder, setup, named):
    if setup is not None:
        setup(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = cli("train", *TINY, "--epochs", "1", "--tensorboard", folder)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {named}") and result.stderr.count("\n") == 1, result.stderr
    assert sorted(tmp_path.rglob("*")) == before  # no checkpoint, no folder


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_a_read_only_folder_is_refused(cli, tmp_path):
    (tmp_path / "tb").mkdir(mode=0o555)
    result = cli("train", *TINY, "--epochs", "1", "--tensorboard", "tb")
    assert result.exit_code == 2 and "permission denied" in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["tb"]


def test_an_earlier_runs_events_are_kept_unless_the_run_resumes_or_is_forced(cli, tmp_path):
    (tmp_path / "tb" / "vae").mkdir(parents=True)
    (tmp_path / "tb" / "vae" / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    result = cli("train", *TINY, "--epochs", "1", "--tensorboard", "tb")
    assert result.exit_code == 2
    assert result.stderr == ("error: --tensorboard tb/vae: holds the events of an earlier run of this name; go on "
                             "with its checkpoint with --resume, start it over with --force, or choose another "
                             "folder\n")
    assert not (tmp_path / "vae.safetensors").exists()


def test_the_python_api_logs_as_the_command_does(tmp_path):
    seen = []
    model = vaecli.train(tmp_path / "api.safetensors", dataset="digits", arch="mlp", hidden=32, latent_dim=2,
                         limit=128, epochs=1, batch_size=64, device="cpu", tensorboard=tmp_path / "tb",
                         on_epoch=seen.append)
    assert [record.epoch for record in seen] == [1]  # the caller's own hook still runs
    _assert_scalars_match_history(tmp_path / "tb" / "api", model.path)
    assert (tmp_path / "tb" / "api" / "00001" / "test_codes" / "tensors.tsv").is_file()


def test_the_python_api_without_the_extra_names_it(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorboard" else real(name, *args))
    with pytest.raises(SettingError, match=re.escape(EXTRA_LINE)):
        vaecli.train(tmp_path / "x.safetensors", dataset="digits", epochs=1, tensorboard=tmp_path / "tb")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_under_torchrun_rank_0_alone_writes(tmp_path):
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "-m", "vaecli", "train", *TINY, "--epochs", "1", "-o", "ddp.safetensors", "--tensorboard", "tb"]
    done = subprocess.run(launch, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ddp.safetensors\n"
    assert len(list((tmp_path / "tb" / "ddp").glob("events.out.tfevents.*"))) == 1
    _assert_scalars_match_history(tmp_path / "tb" / "ddp", tmp_path / "ddp.safetensors")
