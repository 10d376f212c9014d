"""Lossless codecs on the images a model is measured on: PNG, WebP and JPEG 2000 bits/dim and encoding time.

Usage: python benchmarks/codecs.py [--folder PHOTOS] [-m MODEL] [--limit 10000] [--alternatives]
Prints, for MNIST's test split (its first --limit images) and for the test split of an image folder if given
(as `vae train` holds it out: a folder's test/, or every tenth file in name order), each codec's bits/dim
(each image its own file, headers included, as vaecli.analysis.codecs measures them), bytes per image, and the
seconds to encode and decode-check every file. -m adds the model's own bits/dim from its checkpoint, as a
reference line; --alternatives times the settings the module's defaults were chosen against, on the same images.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import features

from vaecli.analysis.codecs import CODECS, JPEG2000, Codec, codec_bits
from vaecli.data.datasets import fixed_pixels, load_dataset
from vaecli.runtime.device import describe_machine
from vaecli.store.bundled import resolve_model
from vaecli.store.metadata import read_meta, read_metadata
from vaecli.training.evaluate import reported_bits_per_dim

from _common import data_root

# What the defaults were chosen against (see the comments in vaecli/analysis/codecs.py).
ALTERNATIVES = (
    Codec("png level 9", "PNG, zlib level 9, not optimize", "PNG", "zlib", ({"compress_level": 9},), bilevel=True),
    Codec("webp -z 9", "WebP, quality 100, method 6", "WEBP", "webp",
          ({"lossless": True, "quality": 100, "method": 6},)),
    Codec("j2k 6 levels", "JPEG 2000, its default 6 levels", "JPEG2000", "jpg_2000",
          ({"irreversible": False, "no_jp2": True},), rgb_settings={"mct": 1}),
    Codec("jp2 wrapper", "JPEG 2000 as a .jp2 file", "JPEG2000", "jpg_2000",
          tuple({**options, "no_jp2": False} for options in JPEG2000.settings), rgb_settings={"mct": 1}),
)


def report(title: str, images: np.ndarray, codecs: tuple[Codec, ...], workers: int) -> None:
    """One table: each codec's bits/dim, bytes per image, and seconds over these images."""
    count = len(images)
    print(f"\n{title}: {count:,} images of {'x'.join(map(str, images.shape[1:]))} ({images.size:,} dims)")
    print(f"{'codec (lossless)':<34} {'bits/dim':>9} {'bytes/image':>12} {'seconds':>8} {'images/s':>9}")
    for result in codec_bits(images, codecs, workers):
        if result.bits_per_dim is None:
            print(f"{result.title:<34} not measured: {result.skipped}")
            continue
        print(f"{result.title:<34} {result.bits_per_dim:>9.4f} {result.bytes / count:>12.1f} {result.seconds:>8.2f} "
              f"{count / result.seconds:>9.0f}")


def model_line(model: str) -> str:
    """The model's bits/dim as its checkpoint records them: eval's if stored, else the last epoch's test -ELBO."""
    path, _ = resolve_model(model)
    meta = read_meta(read_metadata(path))
    config = meta.config
    evaluation = meta.extra.get("full_evaluation") or meta.extra.get("evaluation")
    if isinstance(evaluation, dict) and "bits_per_dim" in evaluation:
        binarized = "binarized " if evaluation.get("binarized") else ""
        return (f"model {model}: -log p(x) {evaluation['bits_per_dim']:.4f} bits/dim on {evaluation.get('images')} "
                f"{binarized}{config.dataset} test images (its stored `vae eval`, K = {evaluation.get('iw_samples')})")
    tested = [record for record in meta.history or [] if record.test is not None]
    bits = reported_bits_per_dim(tested[-1].test.loss, config.model) if tested else None
    if bits is None:
        return (f"model {model}: no bits/dim to show ({config.model.likelihood} likelihood, or no test record); "
                "`vae eval --codecs` says which models compare")
    return (f"model {model}: test -ELBO {bits:.4f} bits/dim after epoch {tested[-1].epoch} on {config.dataset} "
            f"(an upper bound on -log p(x); `vae eval -m {model} --codecs` measures both on the same images)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="an image folder, such as scripts/photo_crops.py writes")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3), help="the folder's images as read")
    parser.add_argument("--image-size", type=int, default=32, help="the folder's images as read (default: 32)")
    parser.add_argument("--limit", type=int, default=10_000, help="MNIST test images (default: all 10,000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding threads")
    parser.add_argument("-m", "--model", help="a checkpoint or bundled model: its bits/dim as a reference line")
    parser.add_argument("--alternatives", action="store_true", help="also the settings the defaults beat")
    args = parser.parse_args()
    versions = ", ".join(f"{name} {features.version(feature)}" for name, feature in
                         (("zlib", "zlib"), ("libwebp", "webp"), ("OpenJPEG", "jpg_2000")) if features.check(feature))
    machine = describe_machine(torch.device("cpu"))
    print(f"Pillow {features.version('pil')} ({versions}); {args.workers} encoding threads; {machine}")
    codecs = CODECS + (ALTERNATIVES if args.alternatives else ())
    started = time.perf_counter()
    mnist = load_dataset("mnist", "test", data_root=data_root(), limit=args.limit).images.numpy()
    report("MNIST test", mnist, codecs, args.workers)
    binarized = fixed_pixels(torch.from_numpy(mnist), torch.device("cpu"), True).mul(255).byte().numpy()
    report("MNIST test, binarized once with seed 0 as `vae eval --binarize` sees it", binarized, codecs, args.workers)
    if args.folder is not None:
        shape = (args.channels, args.image_size, args.image_size)
        folder = load_dataset(str(args.folder), "test", shape=shape).images.numpy()
        report(f"{args.folder} test split", folder, codecs, args.workers)
    if args.model:
        print(f"\n{model_line(args.model)}")
    print(f"\n{time.perf_counter() - started:.1f} s in all")


if __name__ == "__main__":
    main()
