"""Hostile torchvision datasets: the decoded cache is vaecli's own private file, keyed on every file read;
no pickle from a data folder is loaded; a broken image in a dataset is one line naming it."""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaecli.data.cache as cache
import vaecli.data.datasets as data
import vaecli.data.torchvision_sets as tv
from vaecli.data.datasets import load_dataset
from vaecli.errors import DataError

from tests.helpers.cli_checks import one_error_line
from tests.helpers.fabricate import trust_fabricated, write_cifar10
from tests.helpers.signals import foreground_signals

SCORE = ["--score", "nll", "-k", "1", "--device", "cpu", "--format", "jsonl"]
VICTIM = b"a file outside the cache that must survive\n"


@pytest.fixture(autouse=True)
def _trusted(monkeypatch):
    trust_fabricated(monkeypatch)


@pytest.fixture
def no_hang():
    """Fail (instead of waiting forever) if a FIFO is opened as a file."""
    def hung(*_):
        raise AssertionError("blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- Fabricated layouts ---------------------------------------------------------------------------------------


def write_country211(root: Path, per_class: int = 3) -> Path:
    """country211/{train,test}/{AD,AE}/NN.png: torchvision's Country211, an item-by-item ImageFolder."""
    for split, seed in (("train", 1), ("test", 2)):
        rng = np.random.default_rng(seed)
        for name in ("AD", "AE"):
            folder = root / "country211" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return root


def write_mnist_raw(root: Path, folder: str = "MNIST", train: int = 12, test: int = 6) -> np.ndarray:
    """<folder>/raw/*-ubyte, unpacked as torchvision's MNIST family reads them; returns the train images."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for stem, count, seed in (("train", train, 3), ("t10k", test, 4)):
        images = np.random.default_rng(seed).integers(0, 256, (count, 28, 28), dtype=np.uint8)
        (raw / f"{stem}-images-idx3-ubyte").write_bytes(struct.pack(">4I", 0x803, count, 28, 28) + images.tobytes())
        labels = bytes(i % 10 for i in range(count))
        (raw / f"{stem}-labels-idx1-ubyte").write_bytes(struct.pack(">2I", 0x801, count) + labels)
        if stem == "train":
            kept = images
    return kept


class Marker:
    """Unpickling this makes a folder: proof that a pickle from the data folder ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def cached(name: str, split: str, root: Path, shape: tuple[int, int, int]) -> Path:
    return cache.cache_path(tv.resolve(name), split, root, shape)


def no_second_open(monkeypatch):
    monkeypatch.setattr(tv, "open_split", lambda *a: pytest.fail("opened again: the cache missed"))


# --- 1. The cache is vaecli's own file, in the user's cache folder ---------------------------------------------


def read_cached(source, root, shape):
    """The training split from the cache, with the memory budget data.py reads it under (None: a miss)."""
    return cache.read_split(source, "train", root, shape, None, lambda count: data._fits(count, shape),
                            data.MAX_DATASET_BYTES)


def test_the_cache_is_private_under_the_users_cache_folder_and_nothing_goes_into_the_data(tmp_path):
    write_cifar10(tmp_path / "data", train=10, test=5)
    before = sorted(p.relative_to(tmp_path / "data") for p in (tmp_path / "data").rglob("*"))
    first = load_dataset("cifar10", "train", data_root=tmp_path / "data", shape=(3, 32, 32))
    path = cached("cifar10", "train", tmp_path / "data", (3, 32, 32))
    assert path.parent == Path(os.environ["XDG_CACHE_HOME"]) / "vaecli" / "datasets"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.relative_to(tmp_path / "data") for p in (tmp_path / "data").rglob("*")) == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left

    from safetensors import safe_open  # still a plain safetensors file

    with safe_open(str(path), framework="pt") as handle:
        assert torch.equal(handle.get_tensor("images"), first.images)


def test_links_and_fifos_at_the_old_and_new_cache_paths_are_never_followed(tmp_path, monkeypatch, no_hang):
    root = tmp_path / "data"
    write_cifar10(root, train=10, test=5)
    old, new = root / "vaecli-cache", cached("cifar10", "train", root, (3, 32, 32))
    old.mkdir()
    new.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    (old / "cifar10-train-3x32x32.safetensors").symlink_to(victim)
    os.mkfifo(old / "cifar10-shape.json")
    new.symlink_to(victim)
    images = load_dataset("cifar10", "train", data_root=root, shape=(3, 32, 32)).images
    assert victim.read_bytes() == VICTIM and not new.is_symlink() and new.is_file()  # replaced, not written through
    os.unlink(new)
    os.mkfifo(new)
    assert torch.equal(load_dataset("cifar10", "train", data_root=root, shape=(3, 32, 32)).images, images)
    assert stat.S_ISREG(os.lstat(new).st_mode)


def test_a_fifo_at_the_cache_path_neither_hangs_nor_fails_vae_score(cli, tmp_path, tiny_model, no_hang):
    root = write_country211(tmp_path / "data")
    from vaecli.store.checkpoint import read_metadata

    model = read_metadata(tiny_model)["config"]["model"]
    fifo = cached("torchvision:Country211", "test", root, (model["channels"], model["height"], model["width"]))
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    result = cli("score", "-m", tiny_model, "--dataset", "torchvision:Country211", "--data-root", root, *SCORE)
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 6 and stat.S_ISREG(os.lstat(fifo).st_mode)


def test_a_cache_folder_that_is_a_link_is_not_used(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "data", train=10, test=5)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "xdg" / "vaecli").mkdir(parents=True)
    (tmp_path / "xdg" / "vaecli" / "datasets").symlink_to(elsewhere)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert len(load_dataset("cifar10", "train", data_root=tmp_path / "data", shape=(3, 32, 32))) == 10
    assert list(elsewhere.iterdir()) == []


def test_a_shared_cache_folder_is_made_private_again(tmp_path):
    write_cifar10(tmp_path / "data", train=10, test=5)
    folder = Path(os.environ["XDG_CACHE_HOME"]) / "vaecli" / "datasets"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    load_dataset("cifar10", "train", data_root=tmp_path / "data", shape=(3, 32, 32))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def _forge(path: Path, header: dict, payload: bytes = b"") -> None:
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + payload)


def _our_header(source, split, root, shape, count: int, key: str | None = None) -> dict:
    image_bytes = count * int(np.prod(shape))
    return {"__metadata__": {"format": cache.CACHE_FORMAT, "complete": "1", "class_names": '["a", "b"]',
                             "key": key or cache.fingerprint(source, split, root, shape)},
            "images": {"dtype": "U8", "shape": [count, *shape], "data_offsets": [0, image_bytes]},
            "labels": {"dtype": "I64", "shape": [count], "data_offsets": [image_bytes, image_bytes + 8 * count]}}


@pytest.mark.parametrize("forgery", ["huge count", "length past the file", "short payload", "wrong dtype",
                                     "extra tensor", "label out of range"])
def test_a_forged_cache_is_a_miss_and_nothing_is_allocated_for_it(tmp_path, monkeypatch, forgery):
    root, shape = tmp_path / "data", (3, 32, 32)
    write_cifar10(root, train=10, test=5)
    source = tv.resolve("cifar10")
    path = cached("cifar10", "train", root, shape)
    path.parent.mkdir(parents=True, mode=0o700)
    header = _our_header(source, "train", root, shape, 10)
    payload = bytes(10 * 3072) + np.full(10, 0, "<i8").tobytes()
    if forgery == "huge count":  # declares 6.9 GB in a file of a few bytes
        header = _our_header(source, "train", root, shape, 2_250_000)
    elif forgery == "length past the file":
        path.write_bytes((1 << 62).to_bytes(8, "little") + b"{}")
    elif forgery == "short payload":
        payload = payload[:-1]
    elif forgery == "wrong dtype":
        header["images"]["dtype"] = "F32"
    elif forgery == "extra tensor":
        header["more"] = header["labels"]
    else:
        payload = bytes(10 * 3072) + np.full(10, 7, "<i8").tobytes()  # two class names, label 7
    if forgery != "length past the file":
        _forge(path, header, payload)
    with monkeypatch.context() as patched:
        if forgery != "label out of range":  # labels are checked once read: all else before any allocation
            patched.setattr(cache, "_payload", lambda *a: pytest.fail("read a forged cache's payload"))
        assert read_cached(source, root, shape) is None
    loaded = load_dataset("cifar10", "train", data_root=root, shape=shape)
    assert loaded.class_names[0] == "airplane" and path.stat().st_size > 10 * 3072  # decoded and rewritten


def test_a_cache_too_large_for_the_memory_free_is_a_miss_before_its_payload_is_read(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_cifar10(root, train=10, test=5)
    load_dataset("cifar10", "train", data_root=root, shape=(3, 32, 32))
    monkeypatch.setattr(data, "MAX_DATASET_BYTES", 5_000)
    monkeypatch.setattr(cache, "_payload", lambda *a: pytest.fail("read a cache that does not fit"))
    assert read_cached(tv.resolve("cifar10"), root, (3, 32, 32)) is None


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_an_interrupted_cache_write_leaves_no_temporary(tmp_path, monkeypatch, how):
    from vaecli.runtime import signals

    write_cifar10(tmp_path / "data", train=10, test=5)
    monkeypatch.setattr(cache.os, "fsync", lambda fd: os.kill(os.getpid(), getattr(signal, how)))
    # As the CLI runs every command, in a process that has Ctrl-C's handler even when the suite itself was
    # started as a background job (SIGINT ignored).
    with foreground_signals(), signals.raised_as_interrupts(), pytest.raises(KeyboardInterrupt):
        load_dataset("cifar10", "train", data_root=tmp_path / "data", shape=(3, 32, 32))
    assert list((Path(os.environ["XDG_CACHE_HOME"]) / "vaecli" / "datasets").iterdir()) == []


# --- 11. The key covers every file below the dataset's folder ---------------------------------------------------


def test_an_image_changed_below_the_top_folder_is_decoded_again(tmp_path, monkeypatch):
    root = write_country211(tmp_path / "data")
    first = load_dataset("torchvision:Country211", "train", data_root=root, shape=(3, 8, 8))
    assert len(first) == 6
    changed = root / "country211" / "train" / "AE" / "01.png"  # item 4: AD's three come first
    Image.new("RGB", (8, 8), (10, 200, 30)).save(changed)
    status = changed.stat()
    os.utime(changed, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    again = load_dataset("torchvision:Country211", "train", data_root=root, shape=(3, 8, 8))
    assert again.images[4, :, 0, 0].tolist() == [10, 200, 30]
    assert torch.equal(again.images[:4], first.images[:4])
    no_second_open(monkeypatch)
    assert torch.equal(load_dataset("torchvision:Country211", "train", data_root=root, shape=(3, 8, 8)).images,
                       again.images)


def test_past_its_bounds_the_fingerprint_still_sees_an_added_file(tmp_path, monkeypatch):
    root = write_country211(tmp_path / "data")
    source = tv.resolve("torchvision:Country211")
    monkeypatch.setattr(cache, "MAX_FINGERPRINT_STATS", 2)
    before = cache.fingerprint(source, "train", root, (3, 8, 8))
    assert cache.fingerprint(source, "train", root, (3, 8, 8)) == before
    (root / "country211" / "train" / "AE" / "09.png").write_bytes(b"")
    added = cache.fingerprint(source, "train", root, (3, 8, 8))
    assert added != before
    monkeypatch.setattr(cache, "MAX_FINGERPRINT_NAMES", 3)  # past this, a folder counts by its own mtime
    listed = cache.fingerprint(source, "train", root, (3, 8, 8))
    (root / "country211" / "train" / "extra.png").write_bytes(b"")
    assert cache.fingerprint(source, "train", root, (3, 8, 8)) != listed


# --- 12. No pickle from a data folder ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "KMNIST"])
def test_the_mnist_family_never_loads_processed_pickles(tmp_path, monkeypatch, capfd, name):
    root = tmp_path / "data"
    images = write_mnist_raw(root, name)
    (root / name / "processed").mkdir()
    for file in ("training.pt", "test.pt"):
        (root / name / "processed" / file).write_bytes(pickle.dumps(Marker(tmp_path / "ran")))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load on a data folder's file"))
    loaded = load_dataset(f"torchvision:{name}", "train", data_root=root, shape=(1, 28, 28))
    assert torch.equal(loaded.images[:, 0], torch.from_numpy(images))  # the raw files' pixels
    assert not (tmp_path / "ran").exists() and capfd.readouterr().err == ""


def test_vae_score_on_torchvision_mnist_with_a_planted_pickle_is_clean(cli, tmp_path, tiny_model):
    root = tmp_path / "data"
    write_mnist_raw(root)
    (root / "MNIST" / "processed").mkdir()
    for file in ("training.pt", "test.pt"):
        (root / "MNIST" / "processed" / file).write_bytes(pickle.dumps(Marker(tmp_path / "ran")))
    result = cli("score", "-m", tiny_model, "--dataset", "torchvision:MNIST", "--data-root", root, *SCORE)
    assert result.exit_code == 0, result.stderr
    assert "warn" not in result.stderr.lower() and len(result.stderr.splitlines()) == 1, result.stderr  # its note
    assert len(result.stdout.splitlines()) == 6 and not (tmp_path / "ran").exists()


def test_the_download_path_of_mnist_never_loads_processed_pickles(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    (tmp_path / "MNIST" / "processed").mkdir(parents=True)
    for file in ("training.pt", "test.pt"):
        (tmp_path / "MNIST" / "processed" / file).write_bytes(pickle.dumps(Marker(tmp_path / "ran")))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load on a data folder's file"))
    with pytest.raises(RuntimeError, match="Dataset not found"):  # the raw files are missing: no legacy path
        tv.safe_class(tvd.MNIST)(str(tmp_path), train=True, download=False)


def test_a_cifar_batch_that_names_a_function_is_refused_before_it_runs(cli, tmp_path, tiny_model):
    root = tmp_path / "data"
    write_cifar10(root, train=10, test=5)
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Marker(tmp_path / "ran")}))
    result = cli("score", "-m", tiny_model, "--dataset", "cifar10", "--data-root", root, *SCORE)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "test_batch" in line and "never runs" in line and not (tmp_path / "ran").exists()


# --- 7. A broken image in a torchvision dataset is one line naming it -------------------------------------------


def _break(path: Path, kind: str) -> None:
    if kind == "truncated":
        whole = path.read_bytes()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: len(whole) // 2 + 200])
    elif kind == "bomb":
        path.write_bytes(png_header_only(30_000, 30_000))
    elif kind == "not an image":
        path.write_text("name,country\nx,AD\n")
    else:
        path.unlink()
        os.mkfifo(path)


@pytest.mark.parametrize(("kind", "said"), [
    ("truncated", "not a readable image"), ("bomb", "larger than Pillow's safety limit"),
    ("not an image", "not a readable image (cannot identify image file"), ("fifo", "not a regular file"),
])
def test_a_broken_image_in_a_torchvision_dataset_is_one_line_naming_it(cli, tmp_path, tiny_model, no_hang,
                                                                       kind, said):
    root = write_country211(tmp_path / "data")
    bad = root / "country211" / "test" / "AE" / "01.png"
    _break(bad, kind)
    result = cli("score", "-m", tiny_model, "--dataset", "torchvision:Country211", "--data-root", root, *SCORE)
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result)
    assert str(bad) in line and said in line and "download torchvision:Country211 again" in line, line


def test_train_on_a_dataset_whose_first_image_is_broken_is_one_line(cli, tmp_path):
    root = write_country211(tmp_path / "data")
    _break(root / "country211" / "train" / "AD" / "00.png", "not an image")
    result = cli("train", "--dataset", "torchvision:Country211", "--data-root", root, "--arch", "mlp",
                 "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--device", "cpu", "--no-report", "-q")
    assert result.exit_code == 2
    assert "00.png: not a readable image" in one_error_line(result)
    assert not (tmp_path / "vae.safetensors").exists()


def test_an_item_without_a_known_file_is_named_by_its_index(tmp_path):
    class Items:
        def __len__(self):
            return 2

        def __getitem__(self, index):
            if index == 1:
                raise OSError("image file is truncated (3 bytes not processed)")
            return Image.new("RGB", (4, 4)), 0

    source = tv.Source("torchvision:Fake", "Fake")
    with pytest.raises(DataError, match=r"torchvision:Fake: image 1: not a readable image \(image file is truncated"):
        tv.decode(Items(), source, (3, 4, 4), 2)
