"""Hostile datasets: stored paths, deep or locked folders, huge sizes and damaged IDX files get one line."""

from __future__ import annotations

import builtins
import errno
import gzip
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vaecli.data.datasets as data
import vaecli.data.images as images
from vaecli.data.datasets import conform, dataset_for_model, list_image_files, load_dataset, read_idx, same_dataset
from vaecli.data.images import IMAGE_SUFFIXES
from vaecli.errors import DataError, SettingError, UsageError
from vaecli.terminal.console import as_flags

from tests.helpers.cli_checks import one_error_line

# A training run that takes a second; each test adds --dataset and what it needs.
TRAIN = ["train", "--arch", "mlp", "--hidden", "8", "--latent-dim", "4", "--batch-size", "64",
         "--epochs", "1", "--device", "cpu", "--no-report", "-q"]


# --- helpers -------------------------------------------------------------------------------------------


def stroke(size: int = 12) -> Image.Image:
    """A small grey image: a light bar on black."""
    array = np.zeros((size, size), dtype=np.uint8)
    array[2:-2, size // 2 - 1: size // 2 + 1] = 255
    return Image.fromarray(array)


def image_folder(root: Path, per_class: int = 15, classes: tuple[str, ...] = ("a", "b")) -> Path:
    """root/<class>/<nn>.png, `per_class` images per class."""
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            stroke().save(root / name / f"{i:02d}.png")
    return root


def deep_chain(base: Path, depth: int) -> None:
    """`depth` nested folders named `a` under base, an image at the bottom; relative steps only,
    so the chain can go past the system's path length."""
    os.chdir(base)
    for _ in range(depth):
        os.mkdir("a")
        os.chdir("a")
    stroke().save("x.png")
    os.chdir(base)


def remove_deep_chain(base: Path, depth: int) -> None:
    """Undo deep_chain without recursion (shutil.rmtree recurses once per level)."""
    os.chdir(base)
    for _ in range(depth):
        os.chdir("a")
    os.remove("x.png")
    for _ in range(depth):
        os.chdir("..")
        os.rmdir("a")
    os.chdir(base)


def idx_bytes(dims: tuple[int, ...], payload: bytes, ndim: int | None = None) -> bytes:
    """An IDX file of unsigned bytes; `ndim` overrides the dimension count the magic declares."""
    count = len(dims) if ndim is None else ndim
    return bytes([0, 0, 8, count]) + struct.pack(f">{len(dims)}I", *dims) + payload


def mnist_copy(mnist_root: Path, tmp_path: Path) -> Path:
    """A writable copy of MNIST's raw files; tests damage it, never the shared one."""
    root = tmp_path / "root"
    shutil.copytree(mnist_root / "MNIST", root / "MNIST")
    return root


def raw_idx(root: Path, stem: str) -> tuple[tuple[int, ...], bytes]:
    """(dims, payload) of one of the copy's gzipped IDX files."""
    blob = gzip.decompress((root / "MNIST" / "raw" / f"{stem}.gz").read_bytes())
    ndim = blob[3]
    dims = struct.unpack(f">{ndim}I", blob[4:4 + 4 * ndim])
    return dims, blob[4 + 4 * ndim:]


# --- 1. a stored dataset is read only when the user names it --------------------------------------------


def test_stored_dataset_given_or_builtin_needs_no_note(tmp_path):
    assert dataset_for_model("/usr", "digits") == ("digits", None)
    assert dataset_for_model("/usr", "/usr") == ("/usr", None)  # the user named it
    assert dataset_for_model("mnist", None) == ("mnist", None)


def test_stored_folder_inside_the_working_folder_is_used_with_a_note(tmp_path):
    (tmp_path / "pets" / "cats").mkdir(parents=True)
    for stored in ("pets", str(tmp_path / "pets"), "pets/cats/..", "./pets"):
        name, note = dataset_for_model(stored, None)
        assert name == stored
        assert "inside the working folder" in note and "`dataset`" in note and "\n" not in note


@pytest.mark.parametrize("stored", ["/usr", "../elsewhere", "pets/../../etc", "link", "/a\nb" * 2000, "x\0y/.."])
def test_stored_folder_outside_the_working_folder_is_refused(tmp_path, stored):
    (tmp_path / "pets").mkdir()
    (tmp_path / "link").symlink_to("/usr")  # inside by name, outside once resolved
    with pytest.raises(SettingError) as caught:
        dataset_for_model(stored, None)
    message = caught.value.message
    assert "\n" not in message and len(message) < 600, message
    # A folder that is there is named as outside; one that is nowhere, as not a folder here.
    there = "\0" not in stored and os.path.isdir(os.path.expanduser(stored))
    assert ("outside the working folder" if there else "nor a folder here") in message and "`dataset" in message
    if stored == "/usr":
        assert "`dataset=/usr` to read it" in message


def test_stored_name_that_is_nothing_here_is_refused(tmp_path):
    with pytest.raises(SettingError, match="neither a built-in dataset nor a folder here"):
        dataset_for_model("cifar-11", None)  # cifar10 is built in since issue 18


def test_same_dataset_compares_names_and_resolved_folders(tmp_path):
    (tmp_path / "pets").mkdir()
    (tmp_path / "alias").symlink_to("pets")
    assert same_dataset("mnist", "mnist") and not same_dataset("mnist", "digits")
    assert same_dataset("./pets/", str(tmp_path / "pets")) and same_dataset("alias", "pets")
    assert not same_dataset("pets", "mnist") and not same_dataset("pets", "/usr")
    assert not same_dataset("pets", "x\0y")  # unresolvable: never the same


# --- 2. folder scans: deep trees, unreadable folders and files, too many images -------------------------


def test_scan_matches_the_old_rglob_order_and_ignores_link_loops(tmp_path):
    root = image_folder(tmp_path / "imgs", per_class=3)
    (root / "b" / "deeper").mkdir()
    stroke().save(root / "b" / "deeper" / "Z.PNG")
    stroke().save(root / "a-z.png")
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "up").symlink_to("..")  # a folder loop: never followed
    (root / "loop.png").symlink_to("loop.png")  # a link loop named like an image
    (root / "gone.png").symlink_to("/nonexistent")
    (root / "alias.png").symlink_to("a/00.png")  # a linked file still counts, as before
    old = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    assert list_image_files(root) == old
    assert root / "alias.png" in old and len(old) == 9


def test_a_tree_deeper_than_the_recursion_limit_is_scanned(tmp_path):
    depth = 1500
    assert depth > sys.getrecursionlimit()
    deep_chain(tmp_path, depth)
    try:
        found = load_dataset(str(tmp_path / "a"), "train", shape=(1, 8, 8))
        assert len(found) == 1 and found.class_names == ["a"]
    finally:
        remove_deep_chain(tmp_path, depth)


def test_a_tree_past_the_path_length_limit_is_one_line(cli, tmp_path, tiny_model):
    depth = 2100  # 4,200+ bytes of path: past Linux's PATH_MAX of 4,096
    deep_chain(tmp_path, depth)
    try:
        with pytest.raises(DataError, match="too long"):
            list_image_files(tmp_path / "a")
        result = cli("eval", "-m", tiny_model, "--dataset", tmp_path / "a", "-k", "1")
        assert result.exit_code == 2
        line = one_error_line(result)
        assert str(tmp_path / "a") in line and "too long" in line and len(line) < 800
    finally:
        remove_deep_chain(tmp_path, depth)
    long_name = cli(*TRAIN, "--dataset", "x" * 5000)
    assert long_name.exit_code == 2 and len(one_error_line(long_name)) < 800


def test_unreadable_sub_folder_is_one_line(cli, tmp_path, monkeypatch):
    root = image_folder(tmp_path / "imgs", per_class=3)
    locked = os.fspath(root / "b")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:  # tests run as root, for whom chmod locks nothing
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match="permission denied"):
        list_image_files(root)
    result = cli(*TRAIN, "--dataset", root)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert f"{root}: cannot read its sub-folder b (permission denied)" in line and "--dataset" in line
    assert not (tmp_path / "vae.safetensors").exists()


def test_unreadable_image_file_is_one_line(cli, tmp_path, monkeypatch, tiny_model):
    root = image_folder(tmp_path / "imgs", per_class=3)
    locked = os.fspath(root / "b" / "01.png")
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and os.fspath(file) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    result = cli("eval", "-m", tiny_model, "--dataset", root, "-k", "1")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert locked in line and "permission denied" in line


def test_too_many_images_is_one_line(cli, tmp_path, monkeypatch, tiny_model):
    root = image_folder(tmp_path / "imgs", per_class=3)
    monkeypatch.setattr(data, "MAX_FOLDER_IMAGES", 5)
    result = cli("eval", "-m", tiny_model, "--dataset", root, "-k", "1")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert str(root) in line and "more than 5 images" in line


# --- 3. --limit decodes only the images it keeps --------------------------------------------------------


def test_limit_decodes_only_the_images_it_keeps(cli, tmp_path, monkeypatch):
    root = image_folder(tmp_path / "imgs")
    # Sorted, the 30 files are a/00..a/14, b/00..b/14; indices 9, 19, 29 form the test split.
    test_split = {"a/09.png", "b/04.png", "b/14.png"}
    for path in (root / "b").iterdir():
        if f"b/{path.name}" not in test_split:
            path.write_text("not an image")  # train images past the first five
    decoded = []
    real_load = images.load_image
    monkeypatch.setattr(data, "load_image", lambda path, shape: decoded.append(path) or real_load(path, shape))

    kept = load_dataset(str(root), "train", shape=(1, 8, 8), limit=5)
    assert len(kept) == 5 and len(decoded) == 5
    assert kept.class_names == ["a", "b"] and kept.labels.tolist() == [0] * 5  # names from the whole split
    assert cli(*TRAIN, "--dataset", root, "--image-size", "8", "--limit", "5").exit_code == 0
    everything = cli(*TRAIN, "--dataset", root, "--image-size", "8", "-o", "all.safetensors")
    assert everything.exit_code == 2 and "b/00.png: not a readable image" in one_error_line(everything)
    with pytest.raises(SettingError, match="`limit` must be 1 or more"):
        load_dataset(str(root), "train", limit=0)


def test_a_python_caller_is_told_the_setting_and_the_terminal_the_flag():
    # load_dataset's keyword is `limit`; only the command line calls it --limit (and raises UsageError).
    with pytest.raises(SettingError) as caught:
        load_dataset("digits", "train", limit=0)
    assert not isinstance(caught.value, UsageError)
    assert caught.value.message == "`limit` must be 1 or more, not 0"
    assert as_flags(caught.value.message) == "--limit must be 1 or more, not 0"


# --- 4. sizes are checked before memory is committed ---------------------------------------------------


def test_budget_is_half_the_available_memory_at_most(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    1000000 kB\n")
    monkeypatch.setattr("vaecli.runtime.memory.MEMINFO", str(meminfo))
    assert data.dataset_budget() == 1000000 * 1024 // 2
    meminfo.write_text("MemAvailable:   999999999 kB\n")
    assert data.dataset_budget() == data.MAX_DATASET_BYTES
    monkeypatch.setattr("vaecli.runtime.memory.MEMINFO", str(tmp_path / "missing"))
    assert 0 < data.dataset_budget() <= data.MAX_DATASET_BYTES  # sysconf's free pages


def test_oversized_folder_split_is_refused_before_decoding(cli, tmp_path, monkeypatch):
    root = image_folder(tmp_path / "imgs")
    monkeypatch.setattr(data, "MAX_DATASET_BYTES", 1000)

    def never(path, shape):
        raise AssertionError("decoded an image before the size check")

    monkeypatch.setattr(data, "load_image", never)
    with pytest.raises(SettingError) as caught:
        load_dataset(str(root), "train", shape=(1, 16, 16))
    # 27 train images of 256 bytes; 1,000 bytes hold 3 of them, or 27 of 6x6.
    assert "`limit=3`" in caught.value.message and "`image_size=6`" in caught.value.message
    result = cli(*TRAIN, "--dataset", root, "--image-size", "16")
    assert result.exit_code == 2 and "--limit 3" in one_error_line(result)


def test_oversized_mnist_is_refused_from_its_header(cli, tmp_path, monkeypatch, mnist_root):
    def never(*args, **kwargs):
        raise AssertionError("read an IDX payload before the size check")

    monkeypatch.setattr(data, "read_idx", never)
    monkeypatch.setattr(data, "MAX_DATASET_BYTES", 1 << 30)
    result = cli(*TRAIN, "--dataset", "mnist", "--data-root", mnist_root, "--channels", "3", "--image-size", "256")
    assert result.exit_code == 2
    line = one_error_line(result)
    # 60,000 x 3 x 256 x 256 bytes is 11.0 GiB; 1 GiB holds 5,461 such images, or 60,000 of 77x77.
    assert "60,000 images of 3x256x256" in line and "--limit 5461" in line and "--image-size 77" in line


def test_conform_in_chunks_is_bit_identical_to_one_pass(mnist_root, monkeypatch):
    digits = read_idx(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", count=50).unsqueeze(1)
    monkeypatch.setattr(data, "CONFORM_CHUNK", 7)  # 50 images in 8 uneven passes

    # The one-pass computation conform() did before it worked in chunks.
    rgb = digits.expand(-1, 3, -1, -1)
    resized = F.interpolate(rgb.float(), size=(32, 32), mode="bilinear", antialias=True)
    expected = resized.round().clamp(0, 255).to(torch.uint8).contiguous()
    assert torch.equal(conform(digits, (3, 32, 32)), expected)

    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    grey = (expected.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    shrunk = F.interpolate(grey.float(), size=(20, 20), mode="bilinear", antialias=True)
    expected_grey = shrunk.round().clamp(0, 255).to(torch.uint8).contiguous()
    assert torch.equal(conform(expected, (1, 20, 20)), expected_grey)


# --- 5. damaged IDX files under --data-root ------------------------------------------------------------

TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def _write(root: Path, stem: str, blob: bytes, compress: bool = True) -> None:
    raw = root / "MNIST" / "raw"
    (raw / f"{stem}.gz").unlink()
    if compress:
        (raw / f"{stem}.gz").write_bytes(gzip.compress(blob, compresslevel=1))
    else:
        (raw / stem).write_bytes(blob)


def damage(kind: str, root: Path, images_stem: str, labels_stem: str) -> str:
    """Damage one file of a split in the copy; returns the stem of the file the error must name."""
    dims, pixels = raw_idx(root, images_stem)
    label_dims, labels = raw_idx(root, labels_stem)
    gz = root / "MNIST" / "raw" / f"{images_stem}.gz"
    if kind == "zero_dimensions":
        _write(root, images_stem, bytes([0, 0, 8, 0]) + pixels)
    elif kind in ("declared_past_file_raw", "declared_past_file_gz", "declared_past_any_gzip"):
        # Both headers lie alike, so the counts match and the lie itself must be caught.
        count = {"declared_past_file_raw": dims[0] * 1000, "declared_past_file_gz": dims[0] + 5000}.get(kind, 2**32 - 1)
        _write(root, images_stem, idx_bytes((count, 28, 28), pixels), compress=kind != "declared_past_file_raw")
        _write(root, labels_stem, idx_bytes((count,), labels))
    elif kind == "absurd_item":
        _write(root, images_stem, idx_bytes((dims[0], 60000, 60000), pixels[:1000]))
    elif kind == "corrupt_gzip":
        blob = bytearray(gz.read_bytes())
        blob[len(blob) // 2: len(blob) // 2 + 64] = b"\xff" * 64
        gz.write_bytes(bytes(blob))
    elif kind == "cut_gzip":
        gz.write_bytes(gz.read_bytes()[: len(gz.read_bytes()) // 2])
    elif kind == "trailing_data":
        _write(root, images_stem, idx_bytes(dims, pixels + b"more"))
    elif kind == "not_gzip":
        gz.write_bytes(b"<html>a captive portal page</html>\n")
    elif kind == "count_mismatch":
        _write(root, labels_stem, idx_bytes((label_dims[0] - 1,), labels[:-1]))
    elif kind == "labels_not_1d":
        _write(root, labels_stem, idx_bytes((label_dims[0], 1), labels))
        return labels_stem
    elif kind == "images_not_3d":
        _write(root, images_stem, idx_bytes((dims[0], 784), pixels))
    elif kind == "zero_images":
        _write(root, images_stem, idx_bytes((0, 28, 28), b""))
        _write(root, labels_stem, idx_bytes((0,), b""))
    elif kind == "label_out_of_range":
        _write(root, labels_stem, idx_bytes(label_dims, b"\xc8" + labels[1:]))
        return labels_stem
    return images_stem


IDX_DAMAGE = {
    "zero_dimensions": "zero dimensions",
    "declared_past_file_raw": "truncated",
    "declared_past_file_gz": "truncated",
    "declared_past_any_gzip": "more than a gzip file",
    "absurd_item": "60000x60000",
    "corrupt_gzip": "gzip stream is damaged",
    "cut_gzip": "gzip stream is damaged",
    "not_gzip": "gzip stream is damaged",
    "trailing_data": "more data than its header declares",
    "count_mismatch": "labels",
    "labels_not_1d": "not labels (1-D)",
    "images_not_3d": "not images (3-D)",
    "zero_images": "holds no images",
    "label_out_of_range": "label 200",
}


@pytest.mark.parametrize("kind", IDX_DAMAGE)
def test_damaged_idx_file_is_one_data_error(kind, tmp_path, mnist_root):
    root = mnist_copy(mnist_root, tmp_path)
    named = damage(kind, root, TEST_IMAGES, TEST_LABELS)
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", "test", data_root=root)
    message = caught.value.message
    assert "\n" not in message and named in message and IDX_DAMAGE[kind] in message, message
    assert "download it again" in message or "download them again" in message


@pytest.mark.parametrize("kind", ["declared_past_file_gz", "corrupt_gzip", "count_mismatch", "zero_images"])
def test_train_on_damaged_mnist_is_one_line(kind, cli, tmp_path, mnist_root):
    root = mnist_copy(mnist_root, tmp_path)
    damage(kind, root, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    result = cli(*TRAIN, "--dataset", "mnist", "--data-root", root)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "train-" in line and "again" in line and IDX_DAMAGE[kind] in line
    assert not (tmp_path / "vae.safetensors").exists()
