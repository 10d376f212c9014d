"""The checkpoint's metadata as dataclasses: each epoch's record and the whole object, to and from JSON.

checkpoint.py validates what a file holds before these read it; the JSON they write keeps the key names
that `vae info --json`, `vae train --json` and scripts read (README: JSON for scripts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vaecli import __version__
from vaecli.config import FORMAT_VERSION, TrainConfig, to_dict, train_config_from_dict

FORMAT_NAME = "vaecli-checkpoint"


def _without_none(data: dict) -> dict:
    # A field an older file lacks stays absent when the record is written back, not null.
    return {key: value for key, value in data.items() if value is not None}


@dataclass
class Losses:
    """Per-image averages over a split, in nats; the test split's also hold the KL per latent dimension."""

    recon: float  # one-sample -log p(x|z)
    kl: float  # KL(q(z|x) || p(z))
    loss: float  # recon + beta * kl in training; the -ELBO, recon + kl, on the test split
    kl_per_dim: list[float] | None = None  # KL to N(0, 1) of each latent dimension
    active_units: int | None = None  # dimensions whose KL is above evaluate.ACTIVE_UNIT_NATS
    kl_per_layer: list[float] | None = None  # a hierarchical model's KL of each stochastic layer, the top first

    def to_dict(self) -> dict:
        return _without_none(
            {"recon": self.recon, "kl": self.kl, "loss": self.loss,
             "kl_per_dim": self.kl_per_dim, "active_units": self.active_units, "kl_per_layer": self.kl_per_layer}
        )

    @classmethod
    def from_dict(cls, data: dict) -> Losses:
        return cls(data.get("recon"), data.get("kl"), data.get("loss"), data.get("kl_per_dim"),
                   data.get("active_units"), data.get("kl_per_layer"))


@dataclass
class EpochRecord:
    """One epoch of training, as the checkpoint's history and `vae train --json` hold it."""

    epoch: int  # counted from 1, over every run of a resumed checkpoint
    elapsed_s: float | None = None  # wall time of the epoch, testing included
    images_per_s: float | None = None  # training images per second, testing excluded
    lr: float | None = None  # the learning rate of the epoch's last step
    beta: float | None = None  # the KL weight of the epoch's last step
    train: Losses | None = None  # averaged over the epoch's steps, as the weights changed
    test: Losses | None = None  # the test split after the epoch (evaluate.elbo_summary)
    machine: str | None = None  # where the epoch ran (device.describe_machine); absent in older files

    def to_dict(self) -> dict:
        return _without_none({
            "epoch": self.epoch, "elapsed_s": self.elapsed_s, "images_per_s": self.images_per_s,
            "lr": self.lr, "beta": self.beta, "machine": self.machine,
            "train": None if self.train is None else self.train.to_dict(),
            "test": None if self.test is None else self.test.to_dict(),
        })

    @classmethod
    def from_dict(cls, data: dict) -> EpochRecord:
        train, test = data.get("train"), data.get("test")
        return cls(
            epoch=data.get("epoch"), elapsed_s=data.get("elapsed_s"), images_per_s=data.get("images_per_s"),
            lr=data.get("lr"), beta=data.get("beta"), machine=data.get("machine"),
            train=Losses.from_dict(train) if isinstance(train, dict) else None,
            test=Losses.from_dict(test) if isinstance(test, dict) else None,
        )


@dataclass
class DatasetInfo:
    """The images a model was trained and tested on."""

    n_train: int | None = None
    n_test: int | None = None
    class_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"n_train": self.n_train, "n_test": self.n_test, "class_names": self.class_names}

    @classmethod
    def from_dict(cls, data: dict) -> DatasetInfo:
        return cls(data.get("n_train"), data.get("n_test"), list(data.get("class_names", [])))


@dataclass
class CheckpointMeta:
    """The object stored under the `vaecli` key of a checkpoint's safetensors metadata."""

    config: TrainConfig  # the recipe; arch, latent_dim, image_shape, likelihood, dataset, seed repeat it
    epochs_done: int | None = None
    history: list[EpochRecord] | None = None  # absent from files written before any epoch
    dataset_info: DatasetInfo | None = None
    command: str | None = None  # the `vae train` command that reproduces the config from scratch
    torch_version: str | None = None
    prior: dict | None = None  # `vae fit-prior`'s record, when the prior was fitted
    recipe: list[str] | None = None  # every command from scratch, once a prior was fitted
    tf32: bool | None = None  # whether float32 matmuls and convolutions ran in TF32 (CUDA) in training
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    vaecli_version: str | None = __version__
    # Fields written by other tools (`evaluation`, `full_evaluation`, `bundled_as`): kept as they are.
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        model = self.config.model
        return {
            "format": self.format,
            "format_version": self.format_version,
            "vaecli_version": self.vaecli_version,
            "arch": model.arch,
            "latent_dim": model.latent_dim,
            "image_shape": list(model.image_shape),
            "likelihood": model.likelihood,
            "dataset": self.config.dataset,
            "seed": self.config.seed,
            "config": to_dict(self.config),
            **_without_none({
                "epochs_done": self.epochs_done,
                "history": None if self.history is None else [record.to_dict() for record in self.history],
                "dataset_info": None if self.dataset_info is None else self.dataset_info.to_dict(),
                "command": self.command,
                "torch_version": self.torch_version,
                "prior": self.prior,
                "recipe": self.recipe,
                "tf32": self.tf32,
            }),
            **self.extra,
        }

    @classmethod
    def from_dict(cls, meta: dict) -> CheckpointMeta:
        """Read metadata that checkpoint.read_metadata has validated; absent fields stay None."""
        info = meta.get("dataset_info")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"} | set(SUMMARY_KEYS)
        return cls(
            config=train_config_from_dict(meta.get("config")),
            epochs_done=meta.get("epochs_done"),
            history=[EpochRecord.from_dict(record) for record in meta["history"]] if "history" in meta else None,
            dataset_info=DatasetInfo.from_dict(info) if isinstance(info, dict) else None,
            command=meta.get("command"),
            torch_version=meta.get("torch_version"),
            prior=meta.get("prior"),
            recipe=meta.get("recipe"),
            tf32=meta.get("tf32"),
            format=meta.get("format"),
            format_version=meta.get("format_version", FORMAT_VERSION),
            vaecli_version=meta.get("vaecli_version"),
            extra={key: value for key, value in meta.items() if key not in known},
        )


# Written from the config, for readers that do not parse it; from_dict reads the config instead.
SUMMARY_KEYS = ("arch", "latent_dim", "image_shape", "likelihood", "dataset", "seed")
