"""Options shared by several commands, declared once."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from vaecli.config import ARCHITECTURES, LIKELIHOODS, MAX_SEED, MIN_SEED, PRECISIONS, SCHEDULES, UPSAMPLINGS
from vaecli.errors import UsageError
from vaecli.runtime.device import DEVICE_CHOICES
from vaecli.store.checkpoint import BUNDLED_MODELS

Arch = Enum("Arch", {name: name for name in ARCHITECTURES}, type=str)  # follows the registry
Likelihood = Enum("Likelihood", {name: name for name in LIKELIHOODS}, type=str)
Schedule = Enum("Schedule", {name: name for name in SCHEDULES}, type=str)
Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)
Upsampling = Enum("Upsampling", {name: name for name in UPSAMPLINGS}, type=str)


def complete_dataset(incomplete: str) -> list[str]:
    from vaecli.data.datasets import DATASET_NAMES

    return [name for name in DATASET_NAMES if name.startswith(incomplete)]


def complete_device(incomplete: str) -> list[str]:
    return [name for name in DEVICE_CHOICES if name.startswith(incomplete)]


DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        envvar="VAE_DEVICE",
        help="auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps.",
        autocompletion=complete_device,
    ),
]
ModelOption = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help=f"Checkpoint path, or a bundled model: {', '.join(BUNDLED_MODELS)}. "
        "Default: $VAE_MODEL, else ./vae.safetensors, else the bundled MNIST model.",
        show_default=False,
    ),
]


def between(low: int, high: int) -> Callable[[typer.Context, typer.CallbackParam, Optional[int]], Optional[int]]:
    """An option callback refusing a count outside [low, high] while parsing, before any work.

    Typer's min/max would refuse it too; this message names the option and its whole range."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value: Optional[int]) -> Optional[int]:
        if value is not None and not low <= value <= high:
            name = max(param.opts, key=len)  # the long name: --iw-samples, not -k
            raise UsageError(f"{name} must be between {_count(low)} and {_count(high)}, not {value}")
        return value

    return check


FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32: the models compute in float32


def within(low: float, high: float) -> Callable[[typer.Context, typer.CallbackParam, Any], Any]:
    """An option callback refusing a float (or each of a tuple of floats) that is not finite or not in [low, high].

    Python's floats reach 1.8e308, past float32's 3.4e38: bounds inside float32's keep torch from overflowing."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        for number in value if isinstance(value, tuple) else (value,):
            if number is not None and not (math.isfinite(number) and low <= number <= high):
                name = max(param.opts, key=len)
                raise UsageError(f"{name} must be a finite number from {low:g} to {high:g}, not {number:g}")
        return value

    return check


def _count(number: int) -> str:
    # Four digits read best without a separator (1000), larger numbers with one (1,000,000).
    return f"{number:,}" if abs(number) >= 10_000 else str(number)


def seed_option(help_text: str) -> typer.models.OptionInfo:
    """--seed, within what torch's generators accept (64 bits, signed or not), with a command's own help."""
    return typer.Option("--seed", min=MIN_SEED, max=MAX_SEED, help=help_text)


SeedOption = Annotated[int, seed_option("Seed for every random draw.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors on stderr.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Write JSON to stdout for scripts.")]
DatasetOption = Annotated[
    str,
    typer.Option(
        "--dataset",
        help="mnist, fashion-mnist, kmnist, digits (offline, bundled with scikit-learn), cifar10, cifar100, "
        "svhn, celeba, stl10, torchvision:NAME (a torchvision.datasets class), "
        "or a folder of PNG/JPEG images (sub-folder names are labels).",
        autocompletion=complete_dataset,
    ),
]
ModelDatasetOption = Annotated[
    Optional[str],
    typer.Option(
        "--dataset",
        help="Dataset name or image folder [default: the model's training dataset; a folder is read "
        "only when named here or inside the working folder]",
        show_default=False,
        autocompletion=complete_dataset,
    ),
]
DataRootOption = Annotated[
    Optional[Path],
    typer.Option(
        "--data-root",
        help="Where torchvision datasets are found or downloaded "
        "(default: $VAE_DATA_ROOT, else ~/.cache/vaecli/data).",
        show_default=False,
    ),
]
LimitOption = Annotated[
    Optional[int],
    typer.Option("--limit", min=1, help="Use only the first N images.", show_default=False),
]
ScaleOption = Annotated[
    int,
    typer.Option("--scale", min=1, max=64, help="Enlarge written images K times (nearest neighbour)."),
]
NrowOption = Annotated[
    int | None,
    typer.Option("--nrow", min=1, help="Images per grid row (default: a square grid).", show_default=False),
]


OutFolderOption = Annotated[
    str,
    typer.Option(
        "--out", "-o",
        help="Folder for the numbered PNGs (created if missing), or - for the grid as PNG bytes on stdout.",
    ),
]
GridOption = Annotated[
    Optional[Path],
    typer.Option("--grid", help="Write one grid PNG to this file instead of one PNG per image.",
                 show_default=False, dir_okay=False),
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", "-f", help="Number from 1 and overwrite, instead of going on after existing files."),
]


class Invert(str, Enum):
    yes = "yes"
    no = "no"
    auto = "auto"


InvertOption = Annotated[
    Invert,
    typer.Option(
        "--invert",
        help="Invert input images: yes, no, or auto (a grey model's input when its border is light, "
        "since such models expect light strokes on a dark background; colour images are left alone).",
    ),
]


# The per-image scores of `vae score` and `vae ood` (vaecli.analysis.scores.SCORE_NAMES, without importing torch).
SCORE_NAMES = ("nll", "elbo", "recon", "kl", "complexity", "regret")
DEFAULT_SCORES = "complexity,nll"
MAX_IW_SAMPLES = 1_000_000  # K = 1000 is the literature's; a million already takes days on a CPU
MAX_REGRET_STEPS = 100_000
MAX_BATCH_ROWS = 1 << 20


def complete_score(incomplete: str) -> list[str]:
    return [name for name in SCORE_NAMES if name.startswith(incomplete)]


ScoresOption = Annotated[
    Optional[list[str]],
    typer.Option("--score", "-s", autocompletion=complete_score, show_default=False, metavar="NAMES",
                 help=f"Scores to compute, comma-separated or repeated: {', '.join(SCORE_NAMES)} "
                 f"[default: {DEFAULT_SCORES}]"),
]
IwSamplesOption = Annotated[
    int, typer.Option("--iw-samples", "-k", callback=between(1, MAX_IW_SAMPLES),
                 help="Importance samples K per image for nll and complexity.")
]
RegretStepsOption = Annotated[
    int, typer.Option("--regret-steps", callback=between(1, MAX_REGRET_STEPS),
                 help="Adam steps refitting each image's posterior for regret.")
]
BinarizeOption = Annotated[
    bool, typer.Option("--binarize", help="Binarize the images once with a fixed seed, as `vae eval --binarize`.")
]
BatchRowsOption = Annotated[
    Optional[int],
    typer.Option("--batch-size", show_default=False, callback=between(1, MAX_BATCH_ROWS),
                 help="Images x samples decoded per pass for nll [default: 256 on a CPU, 8192 on a GPU]"),
]
ScoreSeedOption = Annotated[int, seed_option("Seed of every score's noise (nll's is `vae eval`'s).")]


KL_IMAGES = 1000  # test images that rank the latent dimensions by KL: enough for a stable order, quick on a CPU
TestLimitOption = Annotated[
    int,
    typer.Option("--limit", min=1, help="Test images encoded (the first N of the split); fewer is faster."),
]

SamplePixelsOption = Annotated[
    bool,
    typer.Option(
        "--sample-pixels",
        help="Draw each pixel from p(x|z) instead of showing the distribution's mean "
        "(for --likelihood logistic, the mixture's mean to within half a level).",
    ),
]
PixelSeedOption = Annotated[int, seed_option("Seed of the pixel draws of --sample-pixels.")]
MAX_SAMPLES = 1_000_000  # vae sample -n: a million PNGs; a grid is bounded by its pixels first
MAX_TEMPERATURE = 100.0  # z at 100 prior deviations already decodes to saturated images
FigureOutOption = Annotated[str, typer.Option("--out", "-o", help="The figure PNG, or - for its bytes on stdout.")]
def label_option(help_text: str) -> typer.models.OptionInfo:
    """--label: a class by number or name (common.chosen_class reads it), with a command's own help."""
    return typer.Option("--label", show_default=False,
                        help=f"{help_text} A class named like another's number (a folder named 3) is taken by name.")


LabelOption = Annotated[
    Optional[str], label_option("The class for a conditional model (vae train --conditional): its number or name.")
]
