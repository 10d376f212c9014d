"""Safetensors checkpoints: weights, training state and JSON metadata; atomic, validated loads."""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from vaecli import __version__
from vaecli.config import FORMAT_VERSION, TrainConfig, to_dict, train_config_from_dict
from vaecli.errors import CheckpointError, InputError

if TYPE_CHECKING:
    import torch

    from vaecli.models import VAE

METADATA_KEY = "vaecli"
MAX_HEADER_BYTES = 8_000_000  # a vaecli header is a few kB; refuse before reading a huge one
MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer."
RNG_KEY = "rng.train"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, its recipe, and what happened in training."""

    model: VAE
    config: TrainConfig
    meta: dict  # the full metadata object (history, dataset, versions...)
    path: Path
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)
    rng_state: torch.Tensor | None = None

    @property
    def epochs_done(self) -> int:
        return int(self.meta.get("epochs_done", 0))


def build_metadata(config: TrainConfig, **extra: Any) -> dict:
    """The metadata object stored under the `vaecli` key."""
    return {
        "format": "vaecli-checkpoint",
        "format_version": FORMAT_VERSION,
        "vaecli_version": __version__,
        "arch": config.model.arch,
        "latent_dim": config.model.latent_dim,
        "image_shape": list(config.model.image_shape),
        "likelihood": config.model.likelihood,
        "dataset": config.dataset,
        "seed": config.seed,
        "config": to_dict(config),
        **extra,
    }


def save_checkpoint(
    path: Path,
    model: VAE,
    meta: dict,
    optimizer_state: dict[str, torch.Tensor] | None = None,
    rng_state: torch.Tensor | None = None,
) -> None:
    """Write the checkpoint to a temporary file beside `path`, then rename it into place."""
    from safetensors.torch import save

    tensors = {MODEL_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for key, value in (optimizer_state or {}).items():
        tensors[OPTIMIZER_PREFIX + key] = value.detach().cpu().contiguous()
    if rng_state is not None:
        tensors[RNG_KEY] = rng_state.cpu().contiguous()
    payload = save(tensors, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    write_atomic(path, payload)


def write_atomic(path: Path, payload: bytes) -> None:
    """Readers see the old file or the new one, never a partial write."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"{folder}: cannot write here ({exc.strerror}); choose another path") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            # mkstemp makes the file private (0600); give it the mode a plain open() would.
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"{path}: cannot write ({exc.strerror}); choose another path") from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_header(path: Path, data: bytes | None = None) -> tuple[dict, dict]:
    """Parse and check the safetensors header: (tensor table, vaecli metadata), nothing allocated.

    With `data`, the header is taken from these bytes of the file, already read, instead of the disk.
    """
    path = Path(path)
    if data is not None:
        return _parse_header(path, io.BytesIO(data), len(data))
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint; train one with `vae train` or pass -m")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a .safetensors checkpoint file")
    try:
        with open(path, "rb") as handle:
            return _parse_header(path, handle, os.fstat(handle.fileno()).st_size)
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied; check the file's permissions") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None


def _parse_header(path: Path, handle: BinaryIO, size: int) -> tuple[dict, dict]:
    head = handle.read(8)
    if len(head) < 8:
        raise CheckpointError(_not_checkpoint(path, "the file is empty or truncated"))
    (length,) = struct.unpack("<Q", head)
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise CheckpointError(_not_checkpoint(path, "its header is truncated or too large"))
    raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(_not_checkpoint(path, "its header is not valid JSON")) from None
    if not isinstance(header, dict):
        raise CheckpointError(_not_checkpoint(path, "its header is not a JSON object"))
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path}: a safetensors file but not a vaecli checkpoint; use one written by `vae train`"
        )
    _check_tensor_table(path, header, size - 8 - length)
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except (TypeError, json.JSONDecodeError, RecursionError):
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
            f"{FORMAT_VERSION}); upgrade with `pip install -U vaecli`"
        )
    _check_fields(path, meta)
    return header, meta


def _check_fields(path: Path, meta: dict) -> None:
    """The metadata that commands read besides the config (history, counters) has the right types."""
    history = meta.get("history", [])
    ok = isinstance(history, list) and all(_is_record(r) for r in history)
    ok = ok and _is_count(meta.get("epochs_done", 0))
    shape = meta.get("image_shape", [])
    ok = ok and isinstance(shape, list) and all(_is_count(v) for v in shape)
    ok = ok and all(isinstance(meta.get(k, ""), str) for k in ("command", "format", "vaecli_version", "dataset"))
    if not ok:
        raise CheckpointError(f"{path}: its metadata has fields of the wrong type; the file is damaged")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_record(record: Any) -> bool:
    """One epoch of history: numbers where numbers belong, the test part optional."""
    if not isinstance(record, dict) or not _is_count(record.get("epoch", 0)):
        return False
    if not all(_is_number(record.get(k, 0)) for k in ("elapsed_s", "images_per_s", "lr", "beta")):
        return False
    for part in ("train", "test"):
        losses = record.get(part)
        if losses is None:
            continue
        if not isinstance(losses, dict) or not all(_is_number(losses.get(k, 0)) for k in ("recon", "kl", "loss")):
            return False
        kl_dims = losses.get("kl_per_dim", [])
        if not (isinstance(kl_dims, list) and all(_is_number(v) for v in kl_dims)):
            return False
        if not _is_count(losses.get("active_units", 0)):
            return False
    return True


def _check_tensor_table(path: Path, header: dict, data_bytes: int) -> None:
    for name, entry in header.items():
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("shape"), list)
            and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2
            and all(isinstance(v, int) and v >= 0 for v in entry["data_offsets"] + entry["shape"])
        )
        if not ok or entry["data_offsets"][1] > data_bytes:
            raise CheckpointError(_not_checkpoint(path, f"tensor {name[:40]!r} is damaged or truncated"))


def _not_checkpoint(path: Path, why: str) -> str:
    return f"{path}: not a readable checkpoint ({why}); retrain it or pass another file with -m"


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


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu", training_state: bool = False
) -> Checkpoint:
    """Rebuild the exact model from the file alone; with training_state, also optimizer and RNG."""
    import numpy
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    from vaecli.models import build_model, place

    path = Path(path)
    read_header(path)  # checked on disk first, so a huge or foreign file is refused unread
    # Everything below comes from one read: a writer replacing the file meanwhile cannot give us
    # the metadata of one checkpoint with the weights of another.
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    header, meta = read_header(path, data)
    config = config_of(path, meta)
    # Built on the meta device (nothing allocated) and checked against the header first: weights
    # that all lie in the file bound the model by the file's size, so crafted metadata cannot
    # make us allocate terabytes. The file's tensors then become the weights (assign=True).
    with torch.device("meta"):
        model = build_model(config.model)
    expected = model.state_dict()
    for name, tensor in expected.items():
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
    model = place(model, device).eval()
    checkpoint = Checkpoint(model=model, config=config, meta=meta, path=path)
    if training_state:
        checkpoint.optimizer_state = {
            k[len(OPTIMIZER_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIMIZER_PREFIX)
        }
        checkpoint.rng_state = tensors.get(RNG_KEY)
        _check_training_state(path, checkpoint, expected)
    return checkpoint


def _check_training_state(path: Path, checkpoint: Checkpoint, weights: dict) -> None:
    """Adam's moments must fit their weights and the RNG state be bytes, or resuming would crash."""
    import torch

    for key, value in checkpoint.optimizer_state.items():
        name, _, kind = key.rpartition(".")
        target = weights.get(name)
        if kind == "step":
            fits = target is not None and value.numel() == 1
        else:
            fits = target is not None and kind in ("exp_avg", "exp_avg_sq") and value.shape == target.shape
        if not fits or not value.is_floating_point():
            raise CheckpointError(f"{path}: its optimizer state ({key[:60]}) is damaged; retrain or use another file")
    state = checkpoint.rng_state
    if state is not None and (state.dtype != torch.uint8 or state.dim() != 1):
        raise CheckpointError(f"{path}: its random-number state is damaged; retrain or use another file")


PRETRAINED_DIR = Path(__file__).parent / "pretrained"
BUNDLED_MODELS = ("mnist", "fashion-mnist")  # names that -m accepts instead of a path
DEFAULT_MODEL_FILE = "vae.safetensors"


def resolve_model(option: str | None) -> tuple[Path, str | None]:
    """The checkpoint to use: -m, else $VAE_MODEL, else ./vae.safetensors, else bundled MNIST.

    Returns the path and, when a fallback was taken silently, a note for stderr.
    """
    if option is None:
        option = os.environ.get("VAE_MODEL") or None
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
    return Path(option).expanduser(), None
