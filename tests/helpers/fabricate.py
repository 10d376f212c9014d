"""Tiny colour datasets written in each torchvision class's exact on-disk format, for tests offline.

torchvision checks its downloads' MD5s; `trust_fabricated` turns that check (and nothing else) off.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
CELEBA_ATTRIBUTES = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald"]


def trust_fabricated(monkeypatch) -> None:
    """Skip torchvision's MD5 checks, which fabricated files cannot pass; everything else runs as shipped."""
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as cifar

    for cls in (tvd.CIFAR10, tvd.SVHN, tvd.STL10, tvd.CelebA):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: True)  # CIFAR's meta file


def pixels(count: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Deterministic uint8 noise; each image's first byte is its index, so order can be checked."""
    array = np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)
    array.reshape(count, -1)[:, 0] = np.arange(count) % 256
    return array


def _pickle(path: Path, payload: dict) -> None:
    path.write_bytes(pickle.dumps(payload, protocol=2))


def write_cifar10(root: Path, train: int = 50, test: int = 20) -> np.ndarray:
    """cifar-10-batches-py/ with five train batches, a test batch and batches.meta; returns the train images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = pixels(train, (3, 32, 32), 1)
    labels = [i % 10 for i in range(train)]
    for batch, part in enumerate(np.array_split(np.arange(train), 5), start=1):
        _pickle(folder / f"data_batch_{batch}",
                {"batch_label": f"training batch {batch} of 5", "data": images[part].reshape(len(part), -1),
                 "labels": [labels[i] for i in part], "filenames": [f"{i}.png" for i in part]})
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1",
                                     "data": pixels(test, (3, 32, 32), 2).reshape(test, -1),
                                     "labels": [(i * 3) % 10 for i in range(test)]})
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": train // 5,
                                      "num_vis": 3072})
    return images


def write_cifar100(root: Path, train: int = 30, test: int = 10) -> None:
    """cifar-100-python/ with train, test and meta (fine and coarse labels)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, count, seed in (("train", train, 3), ("test", test, 4)):
        _pickle(folder / name, {"data": pixels(count, (3, 32, 32), seed).reshape(count, -1),
                                "fine_labels": [(i * 7) % 100 for i in range(count)],
                                "coarse_labels": [i % 20 for i in range(count)]})
    _pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                              "coarse_label_names": [f"coarse{i}" for i in range(20)]})


def write_svhn(root: Path, train: int = 30, test: int = 10) -> np.ndarray:
    """train_32x32.mat and test_32x32.mat as the SVHN site ships them: X is (32, 32, 3, N), y is 1..10."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", train, 5), ("test", test, 6)):
        images = pixels(count, (3, 32, 32), seed)  # (N, C, H, W)
        labels = np.array([[i % 10 + 1] for i in range(count)], dtype=np.uint8)  # the digit 0 is stored as 10
        savemat(str(root / f"{name}_32x32.mat"), {"X": images.transpose(2, 3, 1, 0), "y": labels})
        if name == "train":
            kept = images
    return kept


def write_stl10(root: Path, train: int = 12, test: int = 8) -> np.ndarray:
    """stl10_binary/*.bin: column-major 3x96x96 images, labels 1..10, class_names.txt."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for name, count, seed in (("train", train, 7), ("test", test, 8), ("unlabeled", 2, 9)):
        images = pixels(count, (3, 96, 96), seed)  # (N, C, H, W)
        (folder / f"{name}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
        if name != "unlabeled":
            (folder / f"{name}_y.bin").write_bytes(bytes(i % 10 + 1 for i in range(count)))
        if name == "train":
            kept = images
    (folder / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n")
    (folder / "fold_indices.txt").write_text("0 1 2\n" * 10)
    return kept


def write_celeba(root: Path, train: int = 6, test: int = 3) -> None:
    """celeba/img_align_celeba/*.jpg (178x218) and the five text files torchvision reads."""
    from PIL import Image

    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(train + 1 + test)]
    splits = [0] * train + [1] + [2] * test  # one validation image, which neither split reads
    rng = np.random.default_rng(10)
    for name in names:
        array = np.zeros((218, 178, 3), dtype=np.uint8)
        array[...] = rng.integers(0, 256, 3, dtype=np.uint8)  # one colour per face, so JPEG keeps it
        Image.fromarray(array).save(folder / "img_align_celeba" / name, quality=95)
    count = f"{len(names)}\n"
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, splits, strict=True)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} {i + 1}\n" for i, n in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(
        count + "image_id x_1 y_1 width height\n" + "".join(f"{n} 95 71 226 313\n" for n in names))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        count + "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
        "rightmouth_y\n" + "".join(f"{n} 69 109 106 113 77 142 73 152 108 154\n" for n in names))
    (folder / "list_attr_celeba.txt").write_text(
        count + " ".join(CELEBA_ATTRIBUTES) + "\n"
        + "".join(f"{n} " + " ".join("1" if (i + j) % 2 else "-1" for j in range(5)) + "\n"
                  for i, n in enumerate(names)))
