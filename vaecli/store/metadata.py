"""The checkpoint's metadata, declared once: each field with its check; store/schema.py reads and writes them.

The JSON keeps the key names that the JSON of `vae info` and `vae train`, and scripts, read (README: JSON for
scripts). The configs (config.py) are checked by their fields' types, then validated as `vae train`'s options.
read_metadata reads it from a checkpoint's header without torch, so that `vae info` starts fast.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vaecli import __version__
from vaecli.config import (
    FORMAT_VERSION,
    MAX_GROUPS,
    MAX_LATENT_DIM,
    MAX_PRIOR_COMPONENTS,
    MAX_SEED,
    MIN_SEED,
    ModelConfig,
    TrainConfig,
)
from vaecli.errors import CheckpointError, SettingError
from vaecli.store.safetensors_file import not_checkpoint, read_file
from vaecli.store.schema import (
    FLAG,
    NUMBER,
    REST,
    Check,
    Derived,
    Record,
    Refusal,
    count,
    from_dict,
    is_count,
    is_number,
    is_whole,
    keep_null,
    list_of,
    nullable,
    record,
    records,
    stored,
    text,
    whole,
)

FORMAT_NAME = "vaecli-checkpoint"
# Bounds on what the commands read from the metadata: past them a file is damaged, not big.
MAX_COUNT = 2**63 - 1
MAX_EPOCHS_DONE = 10**6
MAX_TEXT_CHARS = 65_536  # a command line with paths in it; PATH_MAX is 4096
MAX_RECIPE_STEPS = 10_000
MAX_CLASSES = 1_000_000
# vaecli nests 5 levels (meta, history, epoch, test, kl_per_dim). Deeper JSON can parse, then overflow
# the stack when `vae info`'s JSON or a resumed run writes it back.
MAX_METADATA_DEPTH = 32
TEXT = text(MAX_TEXT_CHARS)
SEED = whole(MIN_SEED, MAX_SEED)


class StoredConfigError(CheckpointError):
    """A stored config that its fields' types or validation refuse: a damaged file, or one for another vaecli."""


def train_config_from_dict(data: Any, name: str = "config") -> TrainConfig:
    """A stored training config: its fields' types checked, then validated as `vae train` validates options."""
    return _stored_config(TrainConfig, data, name)


def model_config_from_dict(data: Any, name: str = "model") -> ModelConfig:
    """A stored model config, checked as train_config_from_dict checks a training config."""
    return _stored_config(ModelConfig, data, name)


def _stored_config(cls: type, data: Any, name: str) -> Any:
    try:
        config = from_dict(cls, data, name)
        config.validate()
    except Refusal as exc:
        raise StoredConfigError(exc.message) from None
    except SettingError as exc:  # a stored config that fails validation is a bad file, not a bad setting
        raise StoredConfigError(f"stored config is invalid: {exc.message}") from None
    return config


@dataclass
class Losses(Record):
    """Per-image averages over a split, in nats; the test split's also hold the KL per latent dimension."""

    recon: float = stored(NUMBER, required=True)  # one-sample -log p(x|z)
    kl: float = stored(NUMBER, required=True)  # KL(q(z|x) || p(z))
    loss: float = stored(NUMBER, required=True)  # recon + beta * kl in training; the -ELBO, recon + kl, when tested
    # KL to N(0, 1) of each latent dimension
    kl_per_dim: list[float] | None = stored(
        list_of(is_number, MAX_LATENT_DIM, "is not a list of numbers, one per latent dimension"), None)
    # dimensions whose KL is above evaluate.ACTIVE_UNIT_NATS
    active_units: int | None = stored(count(MAX_LATENT_DIM, "is not a count of latent dimensions"), None)
    # a hierarchical model's KL of each stochastic layer, the top first
    kl_per_layer: list[float] | None = stored(
        list_of(is_number, MAX_GROUPS, "is not a list of numbers, one per stochastic layer"), None)


@dataclass
class EpochRecord(Record):
    """One epoch of training, as the checkpoint's history and `vae train`'s JSON hold it."""

    epoch: int = stored(whole(1, MAX_EPOCHS_DONE), required=True)  # counted from 1, over every run of a resumed file
    elapsed_s: float | None = stored(NUMBER, None)  # wall time of the epoch, testing included
    images_per_s: float | None = stored(NUMBER, None)  # training images per second, testing excluded
    lr: float | None = stored(NUMBER, None)  # the learning rate of the epoch's last step
    beta: float | None = stored(NUMBER, None)  # the KL weight of the epoch's last step
    machine: str | None = stored(TEXT, None)  # where the epoch ran (device.describe_machine); absent in older files
    train: Losses | None = stored(record(Losses), None)  # averaged over the epoch's steps, as the weights changed
    test: Losses | None = stored(record(Losses), None)  # the test split after the epoch (evaluate.elbo_summary)


# DatasetInfo's counts and the format's names are written even when null, as vaecli always wrote them.
_IMAGE_COUNT = keep_null(count(MAX_COUNT, "is not a whole number of images"))
_NAME = keep_null(TEXT)


@dataclass
class DatasetInfo(Record):
    """The images a model was trained and tested on."""

    n_train: int | None = stored(_IMAGE_COUNT, None)
    n_test: int | None = stored(_IMAGE_COUNT, None)
    class_names: list[str] = stored(list_of(TEXT.accepts, MAX_CLASSES, "is not a list of names"), factory=list)


@dataclass
class FittedPrior(Record):
    """`vae fit-prior`'s record (training/prior_fit.PriorFit, its seed and command), as `vae info` reads it."""

    components: int | None = stored(count(MAX_PRIOR_COMPONENTS), None)
    codes: int | None = stored(count(MAX_COUNT), None)  # the training codes it was fitted to
    elapsed_s: float | None = stored(NUMBER, None)
    seconds: float | None = stored(NUMBER, None)  # elapsed_s's name in older files
    test_images: int | None = stored(count(MAX_COUNT), None)
    test_kl_standard: float | None = stored(NUMBER, None)
    test_kl_mixture: float | None = stored(NUMBER, None)
    seed: int | None = stored(SEED, None)
    command: str | None = stored(TEXT, None)


def _checked_json(cls: type) -> Check:
    """A nested object checked as record class `cls` and kept as the JSON object it is (every key included)."""

    def read(value: dict, name: str) -> dict:
        from_dict(cls, value, name)  # refuses a bad field
        return value

    return nullable(dataclasses.replace(record(cls, read=read), write=None))


@dataclass
class CheckpointMeta(Record):
    """The object stored under the `vaecli` key of a checkpoint's safetensors metadata."""

    # The recipe; arch, latent_dim, image_shape, likelihood, dataset, seed repeat it (DERIVED).
    config: TrainConfig = stored(record(TrainConfig, read=train_config_from_dict), required=True)
    epochs_done: int | None = stored(count(MAX_EPOCHS_DONE), None)
    # absent from files written before any epoch
    history: list[EpochRecord] | None = stored(records(EpochRecord, MAX_EPOCHS_DONE, "is not a list of epochs"), None)
    dataset_info: DatasetInfo | None = stored(nullable(record(DatasetInfo)), None)
    command: str | None = stored(TEXT, None)  # the `vae train` command that reproduces the config from scratch
    torch_version: str | None = stored(TEXT, None)
    prior: dict | None = stored(_checked_json(FittedPrior), None)  # `vae fit-prior`'s record, once fitted
    # every command from scratch, once a prior was fitted
    recipe: list[str] | None = stored(
        nullable(list_of(TEXT.accepts, MAX_RECIPE_STEPS, f"is not a list of at most {MAX_RECIPE_STEPS} commands")),
        None)
    tf32: bool | None = stored(FLAG, None)  # whether float32 matmuls and convolutions ran in TF32 (CUDA) in training
    format: str | None = stored(_NAME, FORMAT_NAME, absent=None)
    # checkpoint.py refuses a missing or newer version before the fields are read
    format_version: int = stored(Check(is_whole, "is not a whole number"), FORMAT_VERSION)
    vaecli_version: str | None = stored(_NAME, __version__, absent=None)
    # Fields written by other tools (`evaluation`, `full_evaluation`, `bundled_as`): kept as they are.
    extra: dict = stored(REST, factory=dict)

    # Written from the config, for readers that do not parse it; from_dict reads the config instead.
    DERIVED: ClassVar[dict[str, Derived]] = {
        "arch": Derived(lambda meta: meta.config.model.arch, TEXT),
        "latent_dim": Derived(lambda meta: meta.config.model.latent_dim, count(MAX_LATENT_DIM)),
        "image_shape": Derived(lambda meta: list(meta.config.model.image_shape),
                               list_of(lambda size: is_count(size, MAX_COUNT), 4, "is not a list of sizes")),
        "likelihood": Derived(lambda meta: meta.config.model.likelihood, TEXT),
        "dataset": Derived(lambda meta: meta.config.dataset, TEXT),
        "seed": Derived(lambda meta: meta.config.seed, SEED),
    }


def read_meta(meta: dict) -> CheckpointMeta:
    """A checkpoint's metadata object, read and checked: what a command would trip over is refused.

    Raises Refusal naming a damaged field, StoredConfigError for a config this vaecli cannot use."""
    if nesting_depth(meta, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise Refusal(f"nested more than {MAX_METADATA_DEPTH} levels deep")
    typed = CheckpointMeta.from_dict(meta)
    # A resumed run goes on from len(history): a count that disagrees would skip or repeat epochs.
    if typed.history is not None and typed.epochs_done is not None and len(typed.history) != typed.epochs_done:
        raise Refusal(f"history holds {len(typed.history)} epochs, epochs_done says {typed.epochs_done}")
    return typed


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply JSON containers nest in value (stopping past `limit`), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= limit:
        node, level = stack.pop()
        deepest = max(deepest, level)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


# --- Reading it from a checkpoint: the header alone, no tensor data and no torch -----------------------------

METADATA_KEY = "vaecli"  # the safetensors metadata key that holds the object above, as JSON


def read_header(path: Path) -> tuple[dict, dict]:
    """Parse and check the safetensors header: (tensor table, vaecli metadata), no weights allocated.

    A regular file's weights are not read; a pipe or device is read to its end, to check that it is whole.
    """
    header, meta, _ = read_file(Path(path), False, functools.partial(vaecli_metadata, Path(path)))
    return header, meta


def read_metadata(path: Path) -> dict:
    """The vaecli metadata of a checkpoint, with its fields and configs checked."""
    _, meta = read_header(path)
    return meta


def vaecli_metadata(path: Path, metadata: Any) -> dict:
    """The object under the `vaecli` key of the safetensors metadata, parsed and checked field by field."""
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path}: a safetensors file but not a vaecli checkpoint; use one written by `vae train`"
        )
    if not all(isinstance(value, str) for value in metadata.values()):
        # safetensors itself refuses such a file when the weights are loaded.
        raise CheckpointError(not_checkpoint(path, "its safetensors metadata holds a value that is not text"))
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except (ValueError, RecursionError):
        raise CheckpointError(
            f"{path}: its vaecli metadata is not valid JSON; the file is damaged, retrain or re-copy it"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its vaecli metadata is not a JSON object; the file is damaged")
    # The version first: a newer format's fields may differ, and refusing them would hide the reason.
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: its metadata has no format version; the file is damaged")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer vaecli (format {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade vaecli (`git pull && pip install .` in its clone)"
        )
    try:
        read_meta(meta)  # what a command would trip over later (vae info, the report, resume, fit-prior)
    except StoredConfigError as exc:
        raise CheckpointError(_bad_config(path, exc)) from None
    except Refusal as exc:
        raise CheckpointError(
            f"{path}: its metadata is damaged ({exc.message}); retrain it or use another checkpoint"
        ) from None
    return meta


def config_of(path: Path, meta: dict) -> TrainConfig:
    """The training config of metadata that read_header checked."""
    try:
        return train_config_from_dict(meta.get("config"))
    except StoredConfigError as exc:
        raise CheckpointError(_bad_config(path, exc)) from None


def _bad_config(path: Path, exc: StoredConfigError) -> str:
    return f"{path}: {exc.message}; the file is damaged or not for this vaecli"
