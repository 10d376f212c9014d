"""Safetensors checkpoints: weights, training state and JSON metadata; atomic, validated loads."""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

from vaecli.config import (
    FORMAT_VERSION,
    MAX_GROUPS,
    MAX_LATENT_DIM,
    MAX_PRIOR_COMPONENTS,
    MAX_SEED,
    MIN_SEED,
    TrainConfig,
    train_config_from_dict,
)
from vaecli.errors import CheckpointError
from vaecli.store.files import READ_CHUNK, describe_size, kind_of, open_input, read_exactly, write_atomic
from vaecli.store.metadata import CheckpointMeta

if TYPE_CHECKING:
    import torch

    from vaecli.model.networks import VAE

METADATA_KEY = "vaecli"
MAX_HEADER_BYTES = 8_000_000  # a vaecli header is a few kB; refuse before reading a huge one
# Tensor data, refused before it is read: the bundled MNIST model holds 8 MB, weights and Adam state.
MAX_CHECKPOINT_BYTES = 4 << 30
# Loading holds the tensor data twice (the bytes read, then safetensors' tensors made from them), and on
# the CPU the model's weights once more (place() makes a channels-last copy). Measured with ru_maxrss and
# tracemalloc around load_checkpoint: 2.12x the tensor bytes for an mlp, whose weights are not copied,
# 2.87x for a cnn whose file holds its weights alone; so the check counts 2.2x plus the model's weights.
LOAD_COPIES = 2.2
MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer."
# With --ema, model.* holds the averaged weights users run, and these the weights as trained (for --resume).
TRAINING_PREFIX = "training."
RNG_KEY = "rng.train"
CUDA_RNG_BYTES = 16  # a CUDA generator's state: its seed and offset
# Bytes per element of each safetensors dtype; vaecli writes F32 and U8.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
MAX_TENSOR_DIMS = 8  # vaecli's tensors have at most 4; bounds the arithmetic on a crafted shape
# Bounds on what the commands read from the metadata: past them a file is damaged, not big.
MAX_COUNT = 2**63 - 1
MAX_EPOCHS_DONE = 10**6
MAX_TEXT_CHARS = 65_536  # a command line with paths in it; PATH_MAX is 4096
MAX_RECIPE_STEPS = 10_000
MAX_CLASSES = 1_000_000
# vaecli nests 5 levels (meta, history, epoch, test, kl_per_dim). Deeper JSON can parse, then overflow
# the stack when `vae info --json` or a resumed run writes it back.
MAX_METADATA_DEPTH = 32


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, its recipe, and what happened in training."""

    model: VAE
    config: TrainConfig
    meta: dict  # the full metadata object (history, dataset, versions...)
    path: Path
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)
    rng_state: torch.Tensor | None = None
    training_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # with --ema: the raw weights

    @property
    def epochs_done(self) -> int:
        return int(self.meta.get("epochs_done", 0))


def build_metadata(config: TrainConfig, **extra: Any) -> dict:
    """The metadata of a checkpoint of `config`, with `extra` fields as given (for scripts and tests)."""
    return {**CheckpointMeta(config).to_dict(), **extra}


def save_checkpoint(
    path: Path,
    model: VAE,
    meta: dict,
    optimizer_state: dict[str, torch.Tensor] | None = None,
    rng_state: torch.Tensor | None = None,
    training_weights: dict[str, torch.Tensor] | None = None,
    own: bool = False,
) -> None:
    """Write the checkpoint to a temporary file beside `path`, then rename it into place.

    `own`: a path vaecli chose (the -best copy), written only as a regular file (see files.write_atomic)."""
    from safetensors.torch import save

    tensors = {MODEL_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for key, value in (training_weights or {}).items():
        tensors[TRAINING_PREFIX + key] = value.detach().cpu().contiguous()
    for key, value in (optimizer_state or {}).items():
        tensors[OPTIMIZER_PREFIX + key] = value.detach().cpu().contiguous()
    if rng_state is not None:
        tensors[RNG_KEY] = rng_state.cpu().contiguous()
    payload = save(tensors, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    write_atomic(path, payload, own=own)


def read_header(path: Path) -> tuple[dict, dict]:
    """Parse and check the safetensors header: (tensor table, vaecli metadata), no weights allocated.

    A regular file's weights are not read; a pipe or device is read to its end, to check that it is whole.
    """
    header, meta, _ = _read_checkpoint(Path(path), weights=False)
    return header, meta


def _read_checkpoint(path: Path, weights: bool) -> tuple[dict, dict, bytes | None]:
    """(tensor table, metadata, and with `weights` the file's bytes), all from one pass over the file."""
    kind = kind_of(path)
    if kind == "missing":
        raise CheckpointError(f"{path}: no such checkpoint; train one with `vae train` or pass -m")
    if kind == "folder":
        raise CheckpointError(f"{path}: is a folder; give a .safetensors checkpoint file")
    # open_input reads `-` as stdin; a checkpoint file named `-` is meant here.
    handle, _ = open_input(path if str(path) != "-" else f".{os.sep}-", "a .safetensors checkpoint")
    try:
        size = _regular_size(handle)
        prefix, header, meta = _parse_header(path, handle, size)
        data_bytes = _data_size(path, header, None if size is None else size - len(prefix))
        if size is not None and not weights:
            return header, meta, None
        if weights:
            _check_loading_cost(path, header, data_bytes)
        body = _read_tensor_data(path, handle, data_bytes, keep=weights)
        return header, meta, (prefix + body if weights else None)
    finally:
        handle.close()


def _check_loading_cost(path: Path, header: dict, tensor_bytes: int) -> None:
    """Refuse, before its tensor data is read, a checkpoint whose loading would not fit in free memory.

    The model's copy is counted from the file's own model tensors: a config that declares more is
    refused later, on the meta device, as not matching its weights."""
    from vaecli.runtime.memory import check_fits

    model_bytes = sum(stop - begin for begin, stop, name in
                      (_extent(path, name, entry) for name, entry in header.items()) if name.startswith(MODEL_PREFIX))
    needed = int(LOAD_COPIES * tensor_bytes) + model_bytes
    check_fits(needed, None, f"{path}: loading this checkpoint",
               "free some memory or load it on a machine with more")


def _regular_size(handle: BinaryIO) -> int | None:
    """The size of a regular file; None for a pipe or device, whose size is what its header declares."""
    if not hasattr(handle, "fileno"):
        return None
    status = os.fstat(handle.fileno())
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def _parse_header(path: Path, handle: BinaryIO, size: int | None) -> tuple[bytes, dict, dict]:
    """(the length prefix and header as read, tensor table, vaecli metadata), checked before any weights."""
    head = read_exactly(handle, 8, str(path))
    if len(head) < 8:
        raise CheckpointError(_not_checkpoint(path, "the file is empty or truncated"))
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER_BYTES:
        raise CheckpointError(_not_checkpoint(path, "its header is too large"))
    raw = read_exactly(handle, length, str(path)) if size is None or length <= size - 8 else b""
    if len(raw) < length:
        raise CheckpointError(_not_checkpoint(path, "its header is truncated"))
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # ValueError: bad UTF-8 or JSON, or an integer over 4,300 digits
        raise CheckpointError(_not_checkpoint(path, "its header is not valid JSON")) from None
    if not isinstance(header, dict):
        raise CheckpointError(_not_checkpoint(path, "its header is not a JSON object"))
    meta = _vaecli_metadata(path, header.pop("__metadata__", None) or {})
    return head + raw, header, meta


def _vaecli_metadata(path: Path, metadata: Any) -> dict:
    """The object under the `vaecli` key of the safetensors metadata, parsed and validated."""
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path}: a safetensors file but not a vaecli checkpoint; use one written by `vae train`"
        )
    if not all(isinstance(value, str) for value in metadata.values()):
        # safetensors itself refuses such a file when the weights are loaded.
        raise CheckpointError(_not_checkpoint(path, "its safetensors metadata holds a value that is not text"))
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except (ValueError, RecursionError):
        raise CheckpointError(
            f"{path}: its vaecli metadata is not valid JSON; the file is damaged, retrain or re-copy it"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its vaecli metadata is not a JSON object; the file is damaged")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: its metadata has no format version; the file is damaged")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer vaecli (format {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade vaecli (`git pull && pip install .` in its clone)"
        )
    _check_fields(path, meta)
    return meta


def _data_size(path: Path, header: dict, available: int | None) -> int:
    """The bytes of tensor data the table lays out, checked as safetensors checks it: tensors tile the data.

    `available` is what a regular file holds after its header; it must match exactly.
    """
    end = 0
    for begin, stop, name in sorted(_extent(path, name, entry) for name, entry in header.items()):
        if begin != end:
            raise CheckpointError(_not_checkpoint(path, f"tensor {name[:40]!r} overlaps another or leaves a gap"))
        end = stop
    if end > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path}: its tensors would take {describe_size(end)}, more than the {describe_size(MAX_CHECKPOINT_BYTES)} "
            "a checkpoint may hold; the file is damaged or not from vaecli"
        )
    if available is not None and end > available:
        raise CheckpointError(_not_checkpoint(path, "the file is truncated"))
    if available is not None and end < available:
        raise CheckpointError(_not_checkpoint(path, f"{available - end} unexpected bytes after its last tensor"))
    return end


def _extent(path: Path, name: str, entry: Any) -> tuple[int, int, str]:
    """(first byte, end, name) of one tensor, whose dtype, shape and offsets must agree."""
    ok = (
        isinstance(entry, dict)
        and entry.get("dtype") in DTYPE_BYTES
        and _is_sizes(entry.get("shape"), MAX_TENSOR_DIMS)
        and _is_sizes(entry.get("data_offsets"), 2)
        and len(entry["data_offsets"]) == 2
    )
    if ok:
        begin, stop = entry["data_offsets"]
        ok = stop - begin == math.prod(entry["shape"]) * DTYPE_BYTES[entry["dtype"]]
    if not ok:
        raise CheckpointError(_not_checkpoint(path, f"tensor {name[:40]!r} is damaged"))
    return begin, stop, name


def _is_sizes(value: Any, most: int) -> bool:
    return isinstance(value, list) and len(value) <= most and all(_is_count(v) for v in value)


def _read_tensor_data(path: Path, handle: BinaryIO, count: int, keep: bool) -> bytes:
    """The `count` bytes of tensor data, then the end of the file; without `keep`, read and dropped."""
    if keep:
        body = read_exactly(handle, count, str(path))
        got = len(body)
    else:
        body, got = b"", 0
        while got < count:
            piece = read_exactly(handle, min(count - got, READ_CHUNK), str(path))
            if not piece:
                break
            got += len(piece)
    if got < count:
        raise CheckpointError(_not_checkpoint(path, f"the file is truncated, {describe_size(count - got)} short"))
    if read_exactly(handle, 1, str(path)):
        raise CheckpointError(_not_checkpoint(path, "unexpected bytes after its last tensor"))
    return body


def _not_checkpoint(path: Path, why: str) -> str:
    return f"{path}: not a readable checkpoint ({why}); retrain it or pass another file with -m"


# --- metadata fields: what the commands read, in the types and sizes they expect ----------------------


def _check_fields(path: Path, meta: dict) -> None:
    """Refuse metadata that a command would trip over later (vae info, the report, resume, fit-prior)."""
    problem = _metadata_problem(meta)
    if problem:
        raise CheckpointError(f"{path}: its metadata is damaged ({problem}); retrain it or use another checkpoint")


def _metadata_problem(meta: dict) -> str | None:
    if _depth(meta) > MAX_METADATA_DEPTH:
        return f"nested more than {MAX_METADATA_DEPTH} levels deep"
    problem = _fields_problem(meta, METADATA_FIELDS, "")
    if problem:
        return problem
    return _history_problem(meta) or _prior_problem(meta.get("prior")) or _dataset_problem(meta.get("dataset_info"))


def _history_problem(meta: dict) -> str | None:
    """The per-epoch records, as `vae info`, the training report and --keep-best read them."""
    history = meta.get("history", [])
    if not isinstance(history, list) or len(history) > MAX_EPOCHS_DONE:
        return "history is not a list of epochs"
    # A resumed run goes on from len(history): a count that disagrees would skip or repeat epochs.
    if "history" in meta and "epochs_done" in meta and len(history) != meta["epochs_done"]:
        return f"history holds {len(history)} epochs, epochs_done says {meta['epochs_done']}"
    for index, record in enumerate(history):
        problem = _record_problem(record)
        if problem:
            return f"history[{index}]{problem}"
    return None


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return " is not an object"
    problem = _fields_problem(record, RECORD_FIELDS, ".")
    if problem:
        return problem
    for part in ("train", "test"):
        losses = record.get(part, {})
        if not isinstance(losses, dict):
            return f".{part} is not an object"
        problem = _fields_problem(losses, LOSSES_FIELDS, f".{part}.") if part in record else None
        if problem:
            return problem
    return None


def _prior_problem(prior: Any) -> str | None:
    """The record of `vae fit-prior`: `vae info` prints its numbers."""
    if prior is None:
        return None
    if not isinstance(prior, dict):
        return "prior is not an object"
    return _fields_problem(prior, PRIOR_FIELDS, "prior.")


def _dataset_problem(info: Any) -> str | None:
    if info is None:
        return None
    if not isinstance(info, dict):
        return "dataset_info is not an object"
    return _fields_problem(info, DATASET_INFO_FIELDS, "dataset_info.")


def _fields_problem(data: dict, table: dict[str, Field], prefix: str) -> str | None:
    """The first field of `data` that its entry in `table` refuses, as `<prefix><key> <what it is not>`."""
    for key, field_ in table.items():
        present = key in data
        if (present or field_.required) and not field_.check(data.get(key)):
            return field_.message or f"{prefix}{key} {field_.what}"
    return None


def _depth(value: Any) -> int:
    """How deeply JSON containers nest in value (stopping past the limit), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_METADATA_DEPTH:
        node, level = stack.pop()
        deepest = max(deepest, level)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and MIN_SEED <= value <= MAX_SEED


def _is_count(value: Any, most: int = MAX_COUNT) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most


def _is_number(value: Any) -> bool:
    """A number a reader can format: any float (NaN and Inf print as such), an int within a float's range."""
    if isinstance(value, float):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**1023


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT_CHARS


@dataclass(frozen=True)
class Field:
    """What one metadata field must be, and how a refusal names it."""

    check: Callable[[Any], bool]
    what: str = ""  # follows the field's name in the refusal
    required: bool = False  # refused when absent, not only when present and wrong
    message: str = ""  # the whole refusal, where the field's name is not how to say it


def _count_field(most: int, required: bool = False) -> Field:
    return Field(lambda value: _is_count(value, most), f"is not a whole number from 0 to {most}", required)


TEXT = Field(_is_text, f"is not a text of at most {MAX_TEXT_CHARS} characters")
NUMBER = Field(_is_number, "is not a number")
SEED = Field(_is_seed, f"is not a whole number from {MIN_SEED} to {MAX_SEED}")
# The fields each reader (vae info, the report, resume, fit-prior) relies on, checked in this order.
METADATA_FIELDS = {
    "command": TEXT, "format": TEXT, "vaecli_version": TEXT, "dataset": TEXT,
    "epochs_done": _count_field(MAX_EPOCHS_DONE), "latent_dim": _count_field(MAX_LATENT_DIM), "seed": SEED,
    "image_shape": Field(lambda value: _is_sizes(value, 4), "is not a list of sizes"),
    "tf32": Field(lambda value: isinstance(value, bool), "is not true or false"),
    "recipe": Field(
        lambda recipe: recipe is None or (
            isinstance(recipe, list) and len(recipe) <= MAX_RECIPE_STEPS and all(_is_text(step) for step in recipe)
        ),
        f"is not a list of at most {MAX_RECIPE_STEPS} commands",
    ),
}
RECORD_FIELDS = {
    "epoch": Field(lambda value: _is_count(value, MAX_EPOCHS_DONE) and value >= 1,
                   f"is not a whole number from 1 to {MAX_EPOCHS_DONE}", required=True),
    "elapsed_s": NUMBER, "images_per_s": NUMBER, "lr": NUMBER, "beta": NUMBER, "machine": TEXT,
}
LOSSES_FIELDS = {
    "recon": Field(_is_number, "is not a number", required=True),
    "kl": Field(_is_number, "is not a number", required=True),
    "loss": Field(_is_number, "is not a number", required=True),
    "kl_per_dim": Field(
        lambda values: isinstance(values, list) and len(values) <= MAX_LATENT_DIM and all(map(_is_number, values)),
        "is not a list of numbers, one per latent dimension",
    ),
    "active_units": Field(lambda value: _is_count(value, MAX_LATENT_DIM), "is not a count of latent dimensions"),
    "kl_per_layer": Field(
        lambda values: isinstance(values, list) and len(values) <= MAX_GROUPS and all(map(_is_number, values)),
        "is not a list of numbers, one per stochastic layer",
    ),
}
PRIOR_FIELDS = {
    "elapsed_s": NUMBER, "seconds": NUMBER, "test_kl_standard": NUMBER, "test_kl_mixture": NUMBER,
    "components": _count_field(MAX_PRIOR_COMPONENTS), "codes": _count_field(MAX_COUNT),
    "test_images": _count_field(MAX_COUNT), "seed": SEED, "command": TEXT,
}
_IMAGE_COUNT = Field(_is_count, message="dataset_info holds an image count that is not a whole number")
DATASET_INFO_FIELDS = {
    "n_train": _IMAGE_COUNT, "n_test": _IMAGE_COUNT,
    "class_names": Field(
        lambda names: isinstance(names, list) and len(names) <= MAX_CLASSES and all(map(_is_text, names)),
        "is not a list of names",
    ),
}


def read_metadata(path: Path) -> dict:
    """The vaecli metadata of a checkpoint, with its configs validated."""
    _, meta = read_header(path)
    config_of(path, meta)
    return meta


def config_of(path: Path, meta: dict) -> TrainConfig:
    try:
        return train_config_from_dict(meta.get("config"))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc.message}; the file is damaged or not for this vaecli") from None


# --- weights and training state ------------------------------------------------------------------------


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu", training_state: bool = False
) -> Checkpoint:
    """Rebuild the exact model from the file alone; with training_state, also optimizer and RNG."""
    from vaecli.model.networks import place
    from vaecli.training.optimizer_state import check_optimizer_state

    path = Path(path)
    # One read: a writer replacing the file meanwhile cannot give us the metadata of one checkpoint with
    # the weights of another, and a pipe can be read only once. The header is checked before the weights.
    header, meta, data = _read_checkpoint(path, weights=True)
    config = config_of(path, meta)
    model, tensors = _load_weights(path, config, header, data)
    checkpoint = Checkpoint(model=model, config=config, meta=meta, path=path)
    if training_state:
        checkpoint.optimizer_state = {
            k[len(OPTIMIZER_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIMIZER_PREFIX)
        }
        checkpoint.rng_state = tensors.get(RNG_KEY)
        check_optimizer_state(path, model, checkpoint.optimizer_state)
        checkpoint.training_weights = _training_weights(path, model, tensors)
        _check_rng_state(path, checkpoint.rng_state)
    checkpoint.model = place(model, device).eval()
    return checkpoint


def _training_weights(path: Path, model: VAE, tensors: dict) -> dict:
    """The weights as trained, beside the averaged ones of an --ema run: each must fit the model and be finite."""
    import numpy

    shapes = {name: value.shape for name, value in model.state_dict().items()}
    weights = {k[len(TRAINING_PREFIX):]: v for k, v in tensors.items() if k.startswith(TRAINING_PREFIX)}
    for name, value in weights.items():
        if shapes.get(name) != value.shape or not value.is_floating_point():
            raise CheckpointError(
                f"{path}: its training weights {name[:60]!r} do not fit the model; the file is damaged"
            )
        if not numpy.isfinite(value.float().numpy()).all():
            raise CheckpointError(f"{path}: its training weights contain NaN or Inf; use an earlier checkpoint")
    return weights


def _load_weights(path: Path, config: TrainConfig, header: dict, data: bytes) -> tuple[VAE, dict]:
    """The model with the file's weights, checked finite (and its prior a density); all the file's tensors."""
    import numpy
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    from vaecli.model.networks import build_model
    from vaecli.model.prior import mixture_problem

    # Built on the meta device (nothing allocated) and checked against the header first: weights
    # that all lie in the file bound the model by the file's size, so crafted metadata cannot
    # make us allocate terabytes. The file's tensors then become the weights (assign=True).
    with torch.device("meta"):
        model = build_model(config.model)
    for name, tensor in model.state_dict().items():
        entry = header.get(MODEL_PREFIX + name)
        if entry is None or list(entry["shape"]) != list(tensor.shape) or entry.get("dtype") != "F32":
            raise CheckpointError(
                f"{path}: weights do not match the {config.model.arch} architecture it declares "
                f"({name}); the file is damaged"
            )
    try:
        tensors = load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(_not_checkpoint(path, str(exc).splitlines()[0][:80])) from None
    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:
        raise CheckpointError(f"{path}: weights do not match the declared architecture") from None
    # NumPy on the CPU copies: torch's per-tensor isfinite pays a thread start-up for each small tensor.
    if not all(numpy.isfinite(v.numpy()).all() for v in state.values()):
        raise CheckpointError(f"{path}: the weights contain NaN or Inf; use an earlier checkpoint")
    problem = mixture_problem(model.prior) if model.prior is not None else None
    if problem:
        raise CheckpointError(
            f"{path}: its fitted prior is damaged ({problem}); fit it again with `vae fit-prior` "
            "or use another checkpoint"
        )
    return model, tensors


def _check_rng_state(path: Path, state: torch.Tensor | None) -> None:
    """The RNG state is bytes; one as long as a CPU generator's must be a valid one (others: on resuming)."""
    import torch

    if state is None:
        return
    ok = state.dtype == torch.uint8 and state.dim() == 1 and state.numel() > 0
    if ok and state.numel() == torch.Generator().get_state().numel():
        try:
            torch.Generator().set_state(state)
        except RuntimeError:  # torch checks the Mersenne Twister's position and seeding flag
            ok = False
    if not ok:
        raise CheckpointError(f"{path}: its random-number state is damaged; retrain or use another file")


def restore_generator(generator: torch.Generator, checkpoint: Checkpoint) -> bool:
    """Give `generator` the checkpoint's RNG state and return True. A state saved on another kind of device
    (CPU and CUDA generators differ) cannot go on there: the generator is seeded from it, repeatably, and False
    returned."""
    import hashlib

    import torch

    state, path = checkpoint.rng_state, checkpoint.path
    size, expected = state.numel(), generator.get_state().numel()
    if size != expected:
        # A CPU generator keeps a Mersenne Twister (5056 bytes), a CUDA one a seed and an offset (16).
        if size not in (torch.Generator().get_state().numel(), CUDA_RNG_BYTES):
            raise CheckpointError(f"{path}: its random-number state ({size} bytes) fits neither a CPU nor a CUDA "
                                  "generator; the file is damaged: retrain or use another file")
        digest = hashlib.sha256(state.numpy().tobytes()).digest()
        generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        return False
    try:
        generator.set_state(state)
    except RuntimeError:
        raise CheckpointError(f"{path}: its random-number state is damaged; retrain or use another file") from None
    return True


PRETRAINED_DIR = Path(__file__).parent.parent / "pretrained"  # vaecli/pretrained
# Names that -m accepts instead of a path.
BUNDLED_MODELS = ("mnist", "mnist-resnet", "fashion-mnist", "fashion-mnist-binarized", "mnist-conditional")
DEFAULT_MODEL_FILE = "vae.safetensors"


def model_name(path: Path) -> str:
    """How to name a model to the user: a bundled model by its -m name, any other by its path."""
    path = Path(path)
    return path.stem if path.parent == PRETRAINED_DIR and path.stem in BUNDLED_MODELS else str(path)


def resolve_model(option: str | None) -> tuple[Path, str | None]:
    """The checkpoint to use: -m, else $VAE_MODEL, else ./vae.safetensors, else bundled MNIST.

    Returns the path and, when a fallback was taken silently, a note for stderr.
    """
    if option is None and os.environ.get("VAE_MODEL"):
        from vaecli.store.files import kind_of

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
            return bundled, "no -m given and no ./vae.safetensors: using the bundled MNIST model"
        raise CheckpointError(
            f"no model: ./{DEFAULT_MODEL_FILE} does not exist; train one with `vae train` or pass -m PATH"
        )
    if option in BUNDLED_MODELS and not Path(option).exists():
        bundled = PRETRAINED_DIR / f"{option}.safetensors"
        if not bundled.exists():
            raise CheckpointError(f"the bundled {option} model is missing from this install; reinstall vaecli")
        return bundled, None
    _suggest_bundled(option)
    return Path(option).expanduser(), None


def _suggest_bundled(option: str) -> None:
    """Refuse a bare name that is no file but close to a bundled model's (`-m minst`), naming that model."""
    import difflib

    if os.sep in option or (os.altsep and os.altsep in option) or kind_of(Path(option)) != "missing":
        return
    name = option[: -len(".safetensors")] if option.endswith(".safetensors") else option
    close = difflib.get_close_matches(name.lower(), BUNDLED_MODELS, n=1, cutoff=0.6)
    if close:
        raise CheckpointError(f"{option}: no such checkpoint or bundled model; did you mean {close[0]}? "
                              f"(bundled: {', '.join(BUNDLED_MODELS)})")
