"""Cut square colour crops from sample photographs into train/ and test/ folders that hold out whole photographs.

    pip install scikit-image
    python scripts/photo_crops.py photos/        # 3,600 train crops of 8 photographs, 900 test crops of 2
    vae train --dataset photos/ --channels 3 --image-size 32 --likelihood logistic --epochs 30 -o photos.safetensors

The photographs, all offline: scikit-image's colour photographs (skimage.data.astronaut, chelsea, coffee,
rocket, hubble_deep_field, immunohistochemistry, retina, and the left view of stereo_motorcycle) and, since
scikit-learn is one of vaecli's dependencies, scikit-learn's two (sklearn.datasets.load_sample_image:
china.jpg and flower.jpg; left out, with a note, where scikit-learn is missing). The held-out photographs
(--test-photos, default chelsea and coffee) go to OUT/test/PHOTO/PHOTO-NNNN.png, the others to
OUT/train/PHOTO/PHOTO-NNNN.png: `vae train` then trains on the train/ photographs and tests on crops of
photographs it never saw (docs/usage.md, image folders).

The recipe: each photograph is shrunk (Lanczos) so its shorter side is one of SCALES = 48, 64, 96, 128 pixels
(whole objects at small scales, texture at large ones), crop i taken at scale i mod 4, --per-photo crops of
--size pixels (default 450 of 32x32 for every photograph, train and test alike) at positions drawn by
numpy's default_rng([--seed, CRC-32 of the photograph's name]) (default seed 0): a photograph's crops do not
depend on which others are held out or installed. Nothing else is random.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

# scikit-image's colour photographs that ship inside its wheel (skimage.data in 0.26; `cat` is `chelsea` again,
# eagle, lily and skin need pooch and the network, colorwheel and logo are drawings, the rest are grey).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "stereo_motorcycle")
SKLEARN_PHOTOS = ("china", "flower")  # sklearn.datasets.load_sample_image(NAME + ".jpg")
# Held out by subject, fixed before any result was measured: one ordinary camera photograph of objects
# (coffee) and one of an animal (chelsea), like most of what a user would train on, both from scikit-image so
# the default needs nothing else. Not chosen for being easy or hard to compress or model.
TEST_PHOTOS = ("chelsea", "coffee")
SCALES = (48, 64, 96, 128)


def _turns() -> tuple:
    from PIL import Image

    t = Image.Transpose
    return (t.FLIP_LEFT_RIGHT, t.FLIP_TOP_BOTTOM, t.ROTATE_90, t.ROTATE_180, t.ROTATE_270, t.TRANSPOSE,
            t.TRANSVERSE)


def available() -> dict[str, Callable]:
    """Each photograph's name -> a function returning it as an HxWx3 uint8 array (no network)."""
    from skimage import data

    photos: dict[str, Callable] = {name: getattr(data, name) for name in SKIMAGE_PHOTOS}
    try:
        from sklearn.datasets import load_sample_image
    except ImportError:
        print("note: scikit-learn is not installed; its photographs (china, flower) are left out", file=sys.stderr)
        return photos
    for name in SKLEARN_PHOTOS:
        photos[name] = lambda name=name: load_sample_image(f"{name}.jpg")
    return photos


def crops(photo, size: int, count: int, rng, turn: bool = False) -> list:
    """`count` random size x size crops of one photograph (an HxWx3 uint8 array) at the SCALES; with `turn`,
    each crop is also mirrored or turned by a multiple of 90 degrees, one of the eight picked at random."""
    from PIL import Image

    image = Image.fromarray(photo[..., :3])
    shrunk = []
    for short in SCALES:
        factor = max(short, size) / min(image.size)
        shape = (max(size, round(image.width * factor)), max(size, round(image.height * factor)))
        shrunk.append(image.resize(shape, Image.Resampling.LANCZOS))
    out = []
    for i in range(count):
        scaled = shrunk[i % len(SCALES)]
        left = int(rng.integers(0, scaled.width - size + 1))
        top = int(rng.integers(0, scaled.height - size + 1))
        crop = scaled.crop((left, top, left + size, top + size))
        if turn:
            # Texture has no up or left, so each turned crop is a new training image of the same statistics.
            pick = int(rng.integers(0, 8))
            turns = _turns()
            crop = crop.transpose(turns[pick]) if pick < len(turns) else crop
        out.append(crop)
    return out


def write_photo(target: Path, name: str, photo, size: int, count: int, seed: int, turn: bool = False) -> int:
    """Write one photograph's crops as target/NAME-NNNN.png; the number written."""
    import numpy as np

    from vaecli.store.files import write_atomic

    target.mkdir(parents=True, exist_ok=True)
    # Seeded by the name, so a photograph's crops stay the same whichever others are held out or installed.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    photo = photo[0] if isinstance(photo, tuple) else photo
    for i, crop in enumerate(crops(photo, size, count, rng, turn)):
        buffer = io.BytesIO()
        crop.save(buffer, format="PNG")
        write_atomic(target / f"{name}-{i:04d}.png", buffer.getvalue())  # vaecli's one path for files
    return count


def write(folder: Path, photos: dict[str, Callable], held_out: set[str], size: int, per_photo: int,
          seed: int, train_per_photo: int | None = None, turn: bool = False) -> dict[str, int]:
    """Write every photograph's crops under folder/train or folder/test (test crops never turned); files written
    per split."""
    written = {"train": 0, "test": 0}
    for name, load in photos.items():
        test = name in held_out
        count = per_photo if test or train_per_photo is None else train_per_photo
        target = folder / ("test" if test else "train") / name
        written["test" if test else "train"] += write_photo(target, name, load(), size, count, seed, turn and not test)
    return written


def prepare(folder: Path, force: bool) -> str | None:
    """Empty train/ and test/ under folder when forced; a one-line reason to stop, or None."""
    try:
        if not folder.is_dir() or not any(folder.iterdir()):
            return None
        if not force:
            return f"{folder} is not empty; name a new folder, or pass --force to replace its train/ and test/"
        for split in ("train", "test"):  # stale crops of another --test-photos would land in both splits
            if (folder / split).is_dir() and not (folder / split).is_symlink():
                shutil.rmtree(folder / split)
    except OSError as exc:
        return f"cannot prepare {folder}: {exc.strerror or exc}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write train/ and test/ (created)")
    parser.add_argument("--size", type=int, default=32, help="side of each crop in pixels (default: 32)")
    parser.add_argument("--per-photo", type=int, default=450, help="crops per photograph (default: 450)")
    parser.add_argument("--train-per-photo", type=int, default=None,
                        help="crops per training photograph (default: --per-photo)")
    parser.add_argument("--turn", action="store_true",
                        help="mirror or turn each training crop by a random one of the square's eight symmetries")
    parser.add_argument("--seed", type=int, default=0, help="seeds the crops' positions (default: 0)")
    parser.add_argument("--test-photos", default=",".join(TEST_PHOTOS),
                        help=f"photographs held out as the test split (default: {','.join(TEST_PHOTOS)})")
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder, replacing train/, test/")
    args = parser.parse_args()
    counts = (args.per_photo, args.per_photo if args.train_per_photo is None else args.train_per_photo)
    if not 4 <= args.size <= 128 or not all(1 <= count <= 100_000 for count in counts):
        parser.error("--size must be from 4 to 128 and --per-photo and --train-per-photo from 1 to 100000")
    try:
        import skimage  # noqa: F401
    except ImportError:
        print("error: this script needs scikit-image: pip install scikit-image", file=sys.stderr)
        return 2
    photos = available()
    held_out = {name.strip() for name in args.test_photos.split(",") if name.strip()}
    if not held_out or not held_out < set(photos):
        parser.error(f"--test-photos takes one or more, not all, of {','.join(photos)}")
    problem = prepare(args.folder, args.force)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from vaecli.errors import VaeError

    try:
        written = write(args.folder, photos, held_out, args.size, args.per_photo, args.seed, args.train_per_photo,
                        args.turn)
    except VaeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write under {args.folder}: {exc.strerror or exc}; name a writable folder",
              file=sys.stderr)
        return 2
    trained = len(photos) - len(held_out)
    print(f"{written['train']} train crops of {trained} photographs, {written['test']} test crops of "
          f"{len(held_out)} ({', '.join(sorted(held_out))}) in {args.folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
