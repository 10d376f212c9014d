"""The models shipped with vaecli, and which checkpoint the `model` setting (or its absence) names."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from vaecli.errors import CheckpointError
from vaecli.store.files import kind_of

PRETRAINED_DIR = Path(__file__).parent.parent / "pretrained"  # vaecli/pretrained
# Names that `model` accepts instead of a path.
BUNDLED_MODELS = ("mnist", "mnist-resnet", "fashion-mnist", "fashion-mnist-binarized", "mnist-conditional",
                  "photos-32")
DEFAULT_MODEL_FILE = "vae.safetensors"


def model_name(path: Path) -> str:
    """How to name a model to the user: a bundled model by its name, any other by its path."""
    path = Path(path)
    return path.stem if path.parent == PRETRAINED_DIR and path.stem in BUNDLED_MODELS else str(path)


def resolve_model(option: str | None) -> tuple[Path, str | None]:
    """The checkpoint to use: `model`, else $VAE_MODEL, else ./vae.safetensors, else bundled MNIST.

    Returns the path and, when a fallback was taken silently, a note for stderr.
    """
    if option is None and os.environ.get("VAE_MODEL"):
        option = os.environ["VAE_MODEL"]
        if kind_of(Path(option).expanduser(), "VAE_MODEL") != "file" and option not in BUNDLED_MODELS:
            raise CheckpointError(
                f"VAE_MODEL={option}: not a checkpoint file; point VAE_MODEL at a .safetensors file, "
                "or unset it to use ./vae.safetensors or the bundled model"
            )
    if option is None:
        if Path(DEFAULT_MODEL_FILE).exists():
            return Path(DEFAULT_MODEL_FILE), None
        bundled = PRETRAINED_DIR / "mnist.safetensors"
        if bundled.exists():
            return bundled, "no `model` given and no ./vae.safetensors: using the bundled MNIST model"
        raise CheckpointError(
            f"no model: ./{DEFAULT_MODEL_FILE} does not exist; train one with `vae train` or pass `model=PATH`"
        )
    # A folder cannot be a model: `-m photos-32` beside the folder of its recipe's crops is the bundled one.
    if option in BUNDLED_MODELS and not Path(option).is_file():
        bundled = PRETRAINED_DIR / f"{option}.safetensors"
        if not bundled.exists():
            raise CheckpointError(f"the bundled {option} model is missing from this install; reinstall vaecli")
        return bundled, None
    _suggest_bundled(option)
    return Path(option).expanduser(), None


def _suggest_bundled(option: str) -> None:
    """Refuse a bare name that is no file but close to a bundled model's (`model=minst`), naming that model."""
    if os.sep in option or (os.altsep and os.altsep in option) or kind_of(Path(option)) != "missing":
        return
    name = option[: -len(".safetensors")] if option.endswith(".safetensors") else option
    close = difflib.get_close_matches(name.lower(), BUNDLED_MODELS, n=1, cutoff=0.6)
    if close:
        raise CheckpointError(f"{option}: no such checkpoint or bundled model; did you mean {close[0]}? "
                              f"(bundled: {', '.join(BUNDLED_MODELS)})")
