"""What the page needs to know of a model before its weights are loaded, read from the checkpoint's header."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vaecli.config import SCORE_NAMES
from vaecli.store.bundled import model_name
from vaecli.store.metadata import config_of, read_header


@dataclass(frozen=True)
class ModelFacts:
    """A checkpoint's shape of things: enough to build the page while torch and the weights load."""

    name: str
    arch: str
    latent_dim: int
    shape: tuple[int, int, int]  # (C, H, W)
    likelihood: str
    class_names: tuple[str, ...]  # empty for an unconditional model
    layers: int  # stochastic layers, the top one included
    prior_components: int  # 0 for N(0, I)
    dataset: str
    scores: tuple[str, ...]  # what `vae score` computes for this model; none for a conditional one

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def as_json(self) -> dict:
        channels, height, width = self.shape
        prior = (f"a mixture of {self.prior_components} Gaussians fitted to the training codes"
                 if self.prior_components else "N(0, I)")
        return {"name": self.name, "arch": self.arch, "latent_dim": self.latent_dim, "channels": channels,
                "height": height, "width": width, "likelihood": self.likelihood,
                "class_names": list(self.class_names), "layers": self.layers, "prior": prior,
                "dataset": self.dataset, "scores": list(self.scores)}


def read_facts(path: Path) -> ModelFacts:
    """The facts of the checkpoint at `path`: its header checked, no weights read (CheckpointError if damaged)."""
    _, meta = read_header(path)
    config = config_of(path, meta)
    model = config.model
    names = [str(name) for name in (meta.get("dataset_info") or {}).get("class_names") or []]
    if model.classes:  # numbers stand in for names a file lacks, as the commands show them
        names = names if len(names) == model.classes else [str(i) for i in range(model.classes)]
    layers = model.groups or 1  # a hierarchical model's layers; 0 for a one-layer model
    return ModelFacts(name=model_name(path), arch=model.arch, latent_dim=model.latent_dim, shape=model.image_shape,
                      likelihood=model.likelihood, class_names=tuple(names if model.classes else ()), layers=layers,
                      prior_components=model.prior_components, dataset=config.dataset,
                      scores=supported_scores(bool(model.classes), layers))


def supported_scores(conditional: bool, layers: int) -> tuple[str, ...]:
    """The scores `vae score` gives for such a model: none need p(x|y); regret refits a one-layer model's z."""
    if conditional:
        return ()
    return tuple(name for name in SCORE_NAMES if name != "regret" or layers == 1)
