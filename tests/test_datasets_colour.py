"""Colour datasets by name through torchvision's classes: fabricated files, nothing downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import vaecli.data.torchvision_sets as tv
from vaecli.data.cache import cache_path
from vaecli.data.datasets import load_dataset, native_shape
from vaecli.errors import DataError, SettingError

from tests.helpers.cli_checks import one_error_line
from tests.helpers.fabricate import (
    CIFAR10_NAMES,
    STL10_NAMES,
    trust_fabricated,
    write_celeba,
    write_cifar10,
    write_cifar100,
    write_stl10,
    write_svhn,
)


@pytest.fixture(autouse=True)
def _trusted(monkeypatch):
    trust_fabricated(monkeypatch)


def _cached(name: str, split: str, root: Path, shape: tuple[int, int, int]) -> Path:
    """The cache file of one split, in the user's cache folder (a fresh one per test, see conftest)."""
    return cache_path(tv.resolve(name), split, root, shape)


def _no_second_open(monkeypatch):
    """Make any further construction of a torchvision class fail the test: the cache must answer."""
    def refuse(*args, **kwargs):
        raise AssertionError("the torchvision class was constructed again; the cache missed")

    monkeypatch.setattr(tv, "open_split", refuse)


def test_cifar10_loads_as_uint8_nchw_with_labels_and_names_then_from_the_cache(tmp_path, monkeypatch):
    images = write_cifar10(tmp_path, train=50, test=20)
    train = load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32))
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape) == (50, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(images))  # the pixels, in order, channels first
    assert train.labels.tolist() == [i % 10 for i in range(50)] and train.class_names == CIFAR10_NAMES
    test = load_dataset("cifar10", "test", data_root=tmp_path, shape=(3, 32, 32))
    assert len(test) == 20 and test.labels.tolist() == [(i * 3) % 10 for i in range(20)]
    assert _cached("cifar10", "train", tmp_path, (3, 32, 32)).is_file()
    assert not (tmp_path / "vaecli-cache").exists()  # nothing is written into the data folder

    _no_second_open(monkeypatch)
    again = load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32))
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    assert again.class_names == CIFAR10_NAMES
    limited = load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32), limit=7)
    assert torch.equal(limited.images, train.images[:7])


def test_a_changed_source_file_or_a_damaged_cache_is_decoded_again(tmp_path):
    write_cifar10(tmp_path, train=10, test=5)
    first = load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32))
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    write_cifar10(tmp_path / "other", train=10, test=5)
    os.replace(tmp_path / "other" / "cifar-10-batches-py" / "data_batch_1", batch)  # same bytes, new mtime
    stat = batch.stat()
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cache = _cached("cifar10", "train", tmp_path, (3, 32, 32))
    before = cache.stat().st_mtime_ns
    assert torch.equal(load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32)).images, first.images)
    assert cache.stat().st_mtime_ns != before  # rewritten under the new key
    cache.write_bytes(cache.read_bytes()[:100])  # cut short
    assert torch.equal(load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32)).images, first.images)


def test_a_limited_cache_serves_smaller_limits_and_a_full_run_decodes_the_rest(tmp_path, monkeypatch):
    write_cifar10(tmp_path, train=30, test=5)
    assert len(load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32), limit=10)) == 10
    assert len(load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32))) == 30
    _no_second_open(monkeypatch)
    assert len(load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32), limit=12)) == 12


def test_cifar10_at_another_size_and_in_grey(tmp_path):
    write_cifar10(tmp_path, train=10, test=5)
    small = load_dataset("cifar10", "train", data_root=tmp_path, shape=(1, 16, 16))
    assert tuple(small.images.shape) == (10, 1, 16, 16) and small.images.dtype == torch.uint8
    assert _cached("cifar10", "train", tmp_path, (1, 16, 16)).is_file()


def test_cifar100_has_its_hundred_fine_classes(tmp_path):
    write_cifar100(tmp_path, train=30, test=10)
    train = load_dataset("cifar100", "train", data_root=tmp_path, shape=(3, 32, 32))
    assert tuple(train.images.shape) == (30, 3, 32, 32)
    assert train.labels.tolist() == [(i * 7) % 100 for i in range(30)]
    assert train.class_names == [f"fine{i}" for i in range(100)]


def test_svhn_reads_the_mat_files_with_digit_names(tmp_path):
    pytest.importorskip("scipy.io", reason="torchvision reads SVHN's .mat files with scipy")
    images = write_svhn(tmp_path, train=30, test=10)
    train = load_dataset("svhn", "train", data_root=tmp_path, shape=(3, 32, 32))
    assert torch.equal(train.images, torch.from_numpy(images))
    assert train.labels.tolist() == [(i % 10 + 1) % 10 for i in range(30)]  # torchvision maps 10 to 0
    assert train.class_names == [str(d) for d in range(10)]
    assert len(load_dataset("svhn", "test", data_root=tmp_path, shape=(3, 32, 32))) == 10


def test_stl10_is_96_pixels_with_its_class_names(tmp_path):
    images = write_stl10(tmp_path, train=12, test=8)
    assert native_shape("stl10") == (3, 96, 96)
    train = load_dataset("stl10", "train", data_root=tmp_path, shape=(3, 96, 96))
    assert torch.equal(train.images, torch.from_numpy(images))
    assert train.labels.tolist() == [i % 10 for i in range(12)] and train.class_names == STL10_NAMES
    assert len(load_dataset("stl10", "test", data_root=tmp_path, shape=(3, 96, 96))) == 8


def test_celeba_is_centre_cropped_and_resized(tmp_path, monkeypatch):
    write_celeba(tmp_path, train=6, test=3)
    assert native_shape("celeba") == (3, 64, 64)
    folder = tmp_path / "celeba" / "img_align_celeba"
    from PIL import Image

    # A white frame outside the centre 148x148 square: none of it may survive the crop.
    for path in sorted(folder.iterdir()):
        image = Image.open(path).convert("RGB")
        framed = Image.new("RGB", image.size, (255, 255, 255))
        framed.paste(image.crop((15, 35, 163, 183)), (15, 35))
        framed.save(path, quality=95)
    train = load_dataset("celeba", "train", data_root=tmp_path, shape=(3, 64, 64))
    assert tuple(train.images.shape) == (6, 3, 64, 64) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0] * 6 and train.class_names == ["face"]
    first = Image.open(folder / "000001.jpg").convert("RGB").getpixel((89, 109))
    inner = train.images[0, :, 2:-2, 2:-2].float()
    assert (inner - torch.tensor(first).float().view(3, 1, 1)).abs().max() < 12, "the white frame leaked in"
    assert len(load_dataset("celeba", "test", data_root=tmp_path, shape=(3, 64, 64))) == 3
    bigger = load_dataset("celeba", "test", data_root=tmp_path, shape=(3, 100, 100))
    assert tuple(bigger.images.shape) == (3, 3, 100, 100)
    _no_second_open(monkeypatch)
    assert len(load_dataset("celeba", "train", data_root=tmp_path, shape=(3, 64, 64))) == 6


def test_torchvision_prefix_reads_any_suitable_class_item_by_item(tmp_path, monkeypatch):
    write_cifar10(tmp_path, train=10, test=5)
    assert native_shape("torchvision:CIFAR10", tmp_path) == (3, 32, 32)
    generic = load_dataset("torchvision:CIFAR10", "train", data_root=tmp_path, shape=(3, 32, 32))
    named = load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32))
    assert torch.equal(generic.images, named.images) and torch.equal(generic.labels, named.labels)
    assert generic.class_names == CIFAR10_NAMES
    _no_second_open(monkeypatch)
    assert native_shape("torchvision:cifar10", tmp_path) == (3, 32, 32)  # remembered, any case
    assert len(load_dataset("torchvision:CIFAR10", "train", data_root=tmp_path, shape=(3, 32, 32))) == 10


def test_offline_and_missing_is_one_line_naming_data_root(tmp_path):
    for name in ("cifar10", "svhn", "celeba", "torchvision:CIFAR10"):
        with pytest.raises(DataError) as caught:
            load_dataset(name, "train", data_root=tmp_path / "empty", shape=(3, 32, 32))
        message = str(caught.value)
        assert "VAE_OFFLINE=1" in message and "`data_root=DIR`" in message and "\n" not in message, message
    assert not (tmp_path / "empty").exists()


def test_memory_is_checked_before_the_class_reads_its_files(tmp_path, monkeypatch):
    import vaecli.data.datasets as data

    monkeypatch.setattr(data, "MAX_DATASET_BYTES", 10_000)
    monkeypatch.setattr(tv, "open_split", lambda *a: pytest.fail("opened before the size check"))
    with pytest.raises(SettingError, match="`limit=3`"):
        load_dataset("cifar10", "train", data_root=tmp_path, shape=(3, 32, 32))


@pytest.mark.parametrize(("name", "said"), [
    ("torchvision:NoSuchDataset", "no dataset class 'NoSuchDataset'"),
    ("torchvision:ImageFolder", "does not take a root folder and a train flag or split"),
    ("torchvision:Kinetics", "needs frames_per_clip"),
    ("torchvision:FakeData", "does not take a root folder"),
])
def test_unknown_or_unsuitable_classes_are_one_line_usage_errors(cli, name, said):
    result = cli("train", "--dataset", name, "--epochs", "1")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert said in line and result.stdout == "", line


def test_unknown_name_lists_the_colour_datasets(cli):
    line = one_error_line(cli("train", "--dataset", "cifar-11"))
    assert all(name in line for name in ("cifar10", "cifar100", "svhn", "celeba", "stl10", "torchvision:NAME"))


def test_train_end_to_end_on_fabricated_cifar10(cli, tmp_path, monkeypatch):
    write_cifar10(tmp_path / "data", train=80, test=20)
    result = cli("train", "--dataset", "cifar10", "--data-root", tmp_path / "data", "--epochs", "1",
                 "--limit", "64", "--arch", "mlp", "--likelihood", "gaussian", "--hidden", "32",
                 "--latent-dim", "4", "--device", "cpu", "--no-report", "-o", "c.safetensors")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "c.safetensors"
    from vaecli.store.checkpoint import read_metadata

    meta = read_metadata(tmp_path / "c.safetensors")
    assert meta["config"]["dataset"] == "cifar10"
    assert meta["config"]["model"]["channels"] == 3 and meta["config"]["model"]["height"] == 32
    _no_second_open(monkeypatch)  # training decoded the test split too: eval reads it from the cache
    again = cli("eval", "-m", "c.safetensors", "--data-root", tmp_path / "data", "--device", "cpu")
    assert again.exit_code == 0, again.stderr


@pytest.mark.parametrize("dataset, class_name", [("mnist", "MNIST"), ("cifar10", "CIFAR10")])
def test_a_failed_download_is_one_line_and_leaves_no_empty_folders(tmp_path, monkeypatch, dataset, class_name):
    import torchvision.datasets as tvd

    class Unreachable:  # torchvision's signature, a download that fails after making the root
        def __init__(self, root, train=True, transform=None, download=False):
            if download:
                Path(root).mkdir(parents=True, exist_ok=True)
            raise RuntimeError("Error downloading: no route to host\nmore detail")

    for name in ("MNIST", "CIFAR10"):
        monkeypatch.setattr(tvd, name, Unreachable)
    monkeypatch.delenv("VAE_OFFLINE", raising=False)
    root = tmp_path / "data" / "deeper"
    with pytest.raises(DataError) as error:
        load_dataset(dataset, "train", data_root=root, shape=native_shape(dataset))
    message = str(error.value)
    assert "could not be downloaded (Error downloading: no route to host)" in message and "`data_root=DIR`" in message
    assert not (tmp_path / "data").exists()  # every folder the attempt made is gone
    assert class_name in message or dataset in message
