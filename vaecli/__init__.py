"""vaecli: train Variational Autoencoders on images and use them from the shell or from Python.

    import vaecli
    model = vaecli.load("mnist")        # a bundled model, or the path of a checkpoint
    images = model.sample(16, seed=0)   # uint8 (16, 1, 28, 28)

See help(vaecli.Model), help(vaecli.load), help(vaecli.train) and docs/api.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "ModelConfig", "TrainConfig", "load", "train", "__version__"]

if TYPE_CHECKING:
    from vaecli.api import Model, load, train
    from vaecli.config import ModelConfig, TrainConfig

# The API imports torch; `vae --help` imports this package and must not, so the names load on first use.
_LAZY = {"Model": "vaecli.api", "load": "vaecli.api", "train": "vaecli.api",
         "ModelConfig": "vaecli.config", "TrainConfig": "vaecli.config"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vaecli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
