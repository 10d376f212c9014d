"""Cut square colour crops from scikit-image's sample photographs into a folder, to train on real photos.

    pip install scikit-image
    python scripts/photo_crops.py photos/                  # 3,600 crops of 32x32 from 8 photographs
    vae train --dataset photos/ --channels 3 --image-size 32 --likelihood logistic --epochs 30 -o photos.safetensors

Each photograph is shrunk so its shorter side is one of SCALES pixels (whole objects at small scales, texture
at large ones), and crops are taken at positions drawn with --seed. Files are named PHOTO/PHOTO-NNNN.png, so
the photograph is each crop's class and `vae train` takes every tenth file in name order as the test split.
No network: the photographs ship inside scikit-image.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

# scikit-image's bundled colour photographs (skimage.data), by the name of the function that loads each
# (stereo_motorcycle gives a pair; its left view is used). Its colour wheel is a drawing, left out.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "stereo_motorcycle")
SCALES = (48, 64, 96, 128)


def crops(photo, size: int, count: int, rng) -> list:
    """`count` random size x size crops of one photograph (an HxWx3 uint8 array) at the SCALES."""
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
        out.append(scaled.crop((left, top, left + size, top + size)))
    return out


def write(folder: Path, size: int, per_photo: int, seed: int) -> int:
    """Write per_photo crops of every photograph under folder; the number of files written."""
    import numpy as np
    from skimage import data

    from vaecli.store.files import write_atomic

    rng = np.random.default_rng(seed)
    written = 0
    for name in PHOTOS:
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        photo = getattr(data, name)()
        photo = photo[0] if isinstance(photo, tuple) else photo
        for i, crop in enumerate(crops(photo, size, per_photo, rng)):
            buffer = io.BytesIO()
            crop.save(buffer, format="PNG")
            write_atomic(target / f"{name}-{i:04d}.png", buffer.getvalue())  # vaecli's one path for files
            written += 1
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write the crops (created)")
    parser.add_argument("--size", type=int, default=32, help="side of each crop in pixels (default: 32)")
    parser.add_argument("--per-photo", type=int, default=450, help="crops per photograph (default: 450)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the crops' positions (default: 0)")
    args = parser.parse_args()
    if not 4 <= args.size <= 128 or not 1 <= args.per_photo <= 100_000:
        parser.error("--size must be from 4 to 128 and --per-photo from 1 to 100000")
    try:
        import skimage  # noqa: F401
    except ImportError:
        print("error: this script needs scikit-image: pip install scikit-image", file=sys.stderr)
        return 2
    from vaecli.errors import VaeError

    try:
        written = write(args.folder, args.size, args.per_photo, args.seed)
    except VaeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write under {args.folder}: {exc.strerror or exc}; name a writable folder",
              file=sys.stderr)
        return 2
    print(f"{written} crops in {args.folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
