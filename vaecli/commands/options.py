"""Options shared by several commands, declared once."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from vaecli.config import (
    ARCHITECTURES,
    DEVICE_CHOICES,
    LIKELIHOODS,
    MAX_SEED,
    MIN_SEED,
    PRECISIONS,
    SCHEDULES,
    SCORE_NAMES,
    UPSAMPLINGS,
)
from vaecli.errors import UsageError
from vaecli.store.bundled import BUNDLED_MODELS

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
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=f"Checkpoint path, or a bundled model: {', '.join(BUNDLED_MODELS)}. "
        "Default: $VAE_MODEL, else ./vae.safetensors, else the bundled MNIST model.",
        show_default=False,
    ),
]


def between(low: int, high: int) -> Callable[[typer.Context, typer.CallbackParam, int | None], int | None]:
    """An option callback refusing a count outside [low, high] while parsing, before any work.

    Typer's min/max would refuse it too; this message names the option and its whole range."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value: int | None) -> int | None:
        if value is not None and not low <= value <= high:
            name = max(param.opts, key=len)  # the long name: --iw-samples, not -k
            raise UsageError(f"{name} must be between {_count(low)} and {_count(high)}, not {value}")
        return value

    return check


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
def dataset_option(help_text: str, **settings: Any) -> typer.models.OptionInfo:
    """--dataset: a dataset's name or a folder of images, completed from the registry's names."""
    return typer.Option("--dataset", help=help_text, autocompletion=complete_dataset, **settings)


DatasetOption = Annotated[
    str,
    dataset_option(
        "mnist, fashion-mnist, kmnist, digits (offline, bundled with scikit-learn), cifar10, cifar100, "
        "svhn, celeba, stl10, torchvision:NAME (a torchvision.datasets class), "
        "or a folder of PNG/JPEG images (sub-folder names are labels).",
    ),
]
ModelDatasetOption = Annotated[
    str | None,
    dataset_option(
        "Dataset name or image folder [default: the model's training dataset; a folder is read "
        "only when named here or inside the working folder]",
        show_default=False,
    ),
]
DataRootOption = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Where torchvision datasets are found or downloaded "
        "(default: $VAE_DATA_ROOT, else ~/.cache/vaecli/data).",
        show_default=False,
    ),
]
def limit_option(help_text: str, **checks: Any) -> typer.models.OptionInfo:
    """--limit N: how many images a command reads, with a command's own help."""
    return typer.Option("--limit", min=1, help=help_text, **{"show_default": False, **checks})


def scale_option(help_text: str) -> typer.models.OptionInfo:
    """--scale K: nearest-neighbour enlargement of what a command writes."""
    return typer.Option("--scale", min=1, max=64, help=help_text)


def nrow_option(help_text: str) -> typer.models.OptionInfo:
    """--nrow: images per row of a grid, a square grid without it."""
    return typer.Option("--nrow", min=1, help=help_text, show_default=False)


def out_option(what: str, **settings: Any) -> typer.models.OptionInfo:
    """-o/--out: where a command's output goes, in every command (the help says so first: "Output: ...")."""
    return typer.Option("--out", "-o", help=f"Output: {what}", **settings)


def force_option(help_text: str) -> typer.models.OptionInfo:
    """-f/--force: replace what is already at the output, each command saying what that means for it."""
    return typer.Option("--force", "-f", help=help_text)


def split_option(help_text: str) -> typer.models.OptionInfo:
    """--split: which split of a dataset a command reads (train or test)."""
    return typer.Option("--split", help=help_text)


def steps_option(help_text: str, low: int, high: int) -> typer.models.OptionInfo:
    """--steps: points along a path or a sweep."""
    return typer.Option("--steps", min=low, max=high, help=help_text)


def count_option(help_text: str, **checks: Any) -> typer.models.OptionInfo:
    """-n/--count: how many draws from the prior."""
    return typer.Option("--count", "-n", help=help_text, **checks)


def gif_option(help_text: str, **checks: Any) -> typer.models.OptionInfo:
    """--gif FILE.gif: also write an animation."""
    return typer.Option("--gif", metavar="FILE.gif", show_default=False, help=help_text, **checks)


LimitOption = Annotated[int | None, limit_option("Use only the first N images.")]
ScaleOption = Annotated[int, scale_option("Enlarge written images K times (nearest neighbour).")]
NrowOption = Annotated[int | None, nrow_option("Images per grid row (default: a square grid).")]


OutFolderOption = Annotated[
    str,
    out_option("a folder for the numbered PNGs (created if missing), or - for the grid as PNG bytes on stdout."),
]
GridOption = Annotated[
    Path | None,
    typer.Option("--grid", help="Write one grid PNG to this file instead of one PNG per image.",
                 show_default=False, dir_okay=False),
]
ForceOption = Annotated[
    bool, force_option("Number from 1 and overwrite, instead of going on after existing files."),
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


DEFAULT_SCORES = "complexity,nll"
MAX_IW_SAMPLES = 1_000_000  # K = 1000 is the literature's; a million already takes days on a CPU
MAX_REGRET_STEPS = 100_000
MAX_BATCH_ROWS = 1 << 20


def complete_score(incomplete: str) -> list[str]:
    return [name for name in SCORE_NAMES if name.startswith(incomplete)]


def scores_option(help_text: str) -> typer.models.OptionInfo:
    """-s/--score NAMES: which per-image scores, comma-separated or repeated."""
    return typer.Option("--score", "-s", autocompletion=complete_score, show_default=False, metavar="NAMES",
                        help=help_text)


def iw_samples_option(help_text: str) -> typer.models.OptionInfo:
    """-k/--iw-samples K: importance samples per image."""
    return typer.Option("--iw-samples", "-k", callback=between(1, MAX_IW_SAMPLES), help=help_text)


ScoresOption = Annotated[
    list[str] | None,
    scores_option(f"Scores to compute, comma-separated or repeated: {', '.join(SCORE_NAMES)} "
                  f"[default: {DEFAULT_SCORES}]"),
]
IwSamplesOption = Annotated[int, iw_samples_option("Importance samples K per image for nll and complexity.")]
RegretStepsOption = Annotated[
    int, typer.Option("--regret-steps", callback=between(1, MAX_REGRET_STEPS),
                 help="Adam steps refitting each image's posterior for regret.")
]
# One option, two protocols, said here once: training wants fresh noise every batch (against overfitting),
# while a test number must be reproducible, so eval, score and ood draw the binary pixels once, seed 0.
BinarizeOption = Annotated[
    bool,
    typer.Option("--binarize", help="Binarize the pixels (Bernoulli draws of their grey levels): afresh every "
                 "batch in train (dynamic binarization), once with seed 0 in eval, score and ood (the literature's "
                 "test protocol: the same images every run)."),
]
# Not train's --batch-size (images per optimizer step): rows are image x importance-sample pairs, so that
# memory stays bounded for any K. The old spelling --batch-size is in RENAMED.
DecodeRowsOption = Annotated[
    int | None,
    typer.Option("--decode-rows", show_default=False, callback=between(1, MAX_BATCH_ROWS),
                 help="Images x importance samples decoded per pass (nll, complexity, eval's -log p(x)); bounds "
                 "memory for any K [default: 256 on a CPU, 8192 on a GPU]"),
]
ScoreSeedOption = Annotated[int, seed_option("Seed of every score's noise (nll's is `vae eval`'s).")]


KL_IMAGES = 1000  # test images that rank the latent dimensions by KL: enough for a stable order, quick on a CPU
TestLimitOption = Annotated[
    int, limit_option("Test images encoded (the first N of the split); fewer is faster.", show_default=True),
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
FigureOutOption = Annotated[str, out_option("the figure PNG, or - for its bytes on stdout.")]


def label_option(help_text: str) -> typer.models.OptionInfo:
    """--label: a class by number or name (common.chosen_class reads it), with a command's own help."""
    return typer.Option("--label", show_default=False,
                        help=f"{help_text} A class named like another's number (a folder named 3) is taken by name.")


LabelOption = Annotated[
    str | None, label_option("The class for a conditional model (vae train --conditional): its number or name.")
]


# --- Renamed spellings: accepted for one release, then removed --------------------------------------------
# cli.VaeCommand rewrites them in the words before click parses them, so no --help and no completion script
# shows them. Each old spelling used prints one warning line on stderr per invocation, unless -q: -q promises
# only errors on stderr, and a warning is not one.

FIGURE_SUFFIX = ".png"  # what `vae ood -o` writes


def _ood_out_names_images(value: str, given: set[str]) -> bool:
    """Whether ood's `--out VALUE` is the old form (the images to flag, now --unusual) rather than the figure.

    Old when --unusual is absent and VALUE is no .png name; with --unusual absent and a .png name it is refused."""
    if "--unusual" in given:
        return False
    if value.lower().endswith(FIGURE_SUFFIX):
        raise UsageError(f"--out {value} without --unusual is ambiguous: -o/--out is now the ROC figure and no "
                         "longer the images to flag; name those with --unusual")
    return True


@dataclass(frozen=True)
class Renamed:
    """An old option spelling and its new name; `applies` decides when the old name is still a live one."""

    new: str
    old_form: str = ""  # how the warning names the old spelling, where its name alone is still in use
    note: str = ""
    applies: Callable[[str, set[str]], bool] | None = None  # (its value, the option names given) -> old meaning?


_DECODE_ROWS = Renamed("--decode-rows", note=" (images x samples per pass; train's --batch-size is unchanged)")
RENAMED: dict[str, dict[str, Renamed]] = {
    "eval": {"--batch-size": _DECODE_ROWS},
    "score": {"--batch-size": _DECODE_ROWS},
    "ood": {
        "--in": Renamed("--known"),
        "--out": Renamed("--unusual", old_form="--out DATASET", note=" (-o/--out is now the ROC figure)",
                         applies=_ood_out_names_images),
        "--roc": Renamed("--out"),
        "--batch-size": _DECODE_ROWS,
    },
}


def renamed_words(command: str, words: list[str], value_counts: dict[str, int]) -> tuple[list[str], list[str]]:
    """`words` with each old spelling of `command`'s options given its new name, and one warning per old spelling.

    value_counts gives how many words each live option name takes, so that a value is never read as an option."""
    table = RENAMED.get(command, {})
    found = list(_options_in(words, {**value_counts, **{old: 1 for old in table}}))
    given = {name for _, name, _ in found}
    if "--help" in given or "-h" in words:  # the help is shown whatever else the line says
        return list(words), []
    words, warnings = list(words), {}
    for index, name, value in found:
        renamed = table.get(name)
        if renamed is None or (renamed.applies is not None and not renamed.applies(value or "", given)):
            continue
        words[index] = renamed.new + words[index][len(name):]  # keeps an attached =VALUE
        warnings.setdefault(name, f"{renamed.old_form or name} is renamed {renamed.new}{renamed.note}; "
                                  "the old spelling goes in the next release")
    return words, list(warnings.values())


def _options_in(words: list[str], value_counts: dict[str, int]) -> Iterator[tuple[int, str, str | None]]:
    """(index, long name, value) of each --name in words, stepping over option values and stopping at --."""
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            return
        name, equals, attached = word.partition("=")
        if word.startswith("--"):
            count = 0 if equals else value_counts.get(name, 0)
            following = words[index + 1] if count and index + 1 < len(words) else None
            yield index, name, attached if equals else following
        else:
            count = _short_values(word, value_counts)
        index += 1 + count


def _short_values(word: str, value_counts: dict[str, int]) -> int:
    """How many following words a short-option word (-k, or grouped flags such as -qk) takes as values."""
    if not word.startswith("-") or word == "-":
        return 0
    for position, letter in enumerate(word[1:], start=1):
        count = value_counts.get(f"-{letter}", 0)
        if count:  # the rest of the word, if any, is the value
            return count if position == len(word) - 1 else count - 1
    return 0
