"""Write a dataset's test images as PNG files, to try the commands on (the README's a.png, b.png, drawing.png).

    python scripts/export_images.py a.png b.png                              # MNIST test images 0 and 1
    python scripts/export_images.py --first 2 --invert --scale 4 drawing.png  # image 2, black on white, 112 px

The i-th FILE gets test image --first + i, as the model sees it (8-bit grey, or RGB for a colour set).
--invert writes dark strokes on white, as a drawing on paper is (`--invert auto`, the commands' default,
turns it back); --scale K enlarges it K times. The dataset is read (downloaded on first use) as `vae train
--dataset` reads it: $VAE_DATA_ROOT, else ~/.cache/vaecli/data. Prints each path with its class on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaecli.errors import UsageError, VaeError


def export(files: list[Path], dataset: str, first: int, invert: bool, scale: int, data_root: Path | None) -> None:
    """Write test images first, first + 1, ... of `dataset` to `files`, in order."""
    from vaecli.data.datasets import load_dataset, native_shape
    from vaecli.data.images import png_bytes
    from vaecli.store.files import check_output_file, write_atomic

    for file in files:
        check_output_file(file)
    shape = native_shape(dataset, data_root) or (1, 28, 28)
    data = load_dataset(dataset, "test", data_root=data_root, shape=shape, limit=first + len(files))
    if len(data) < first + len(files):
        raise UsageError(f"{dataset} has {len(data)} test images; lower --first or name fewer files")
    for i, file in enumerate(files):
        pixels = data.images[first + i]
        write_atomic(file, png_bytes(255 - pixels if invert else pixels, scale))
        label = int(data.labels[first + i])
        name = data.class_names[label] if label < len(data.class_names) else str(label)
        print(f"{file}: {dataset} test image {first + i}, class {name}", file=sys.stderr)
        print(file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE.png", help="the PNG files to write")
    parser.add_argument("--dataset", default="mnist", help="a dataset name, as for vae train (default: mnist)")
    parser.add_argument("--first", type=int, default=0, help="the test image the first file gets (default: 0)")
    parser.add_argument("--invert", action="store_true", help="dark on light, as drawn on paper")
    parser.add_argument("--scale", type=int, default=1, help="enlarge each image K times (default: 1)")
    parser.add_argument("--data-root", type=Path, default=None, help="where datasets are found")
    args = parser.parse_args()
    if args.first < 0 or not 1 <= args.scale <= 64:
        parser.error("--first must be 0 or more and --scale from 1 to 64")
    try:
        export(args.files, args.dataset, args.first, args.invert, args.scale, args.data_root)
    except VaeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
