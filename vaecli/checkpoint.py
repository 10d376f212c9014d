"""Safetensors checkpoints: weights, training state and JSON metadata; atomic, validated loads."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def read_header(path: Path) -> tuple[dict, dict]:
    """Parse and check the safetensors header: (tensor table, vaecli metadata), nothing allocated."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint; train one with `vae train` or pass -m")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a .safetensors checkpoint file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise CheckpointError(_not_checkpoint(path, "the file is empty or truncated"))
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(_not_checkpoint(path, "its header is truncated or too large"))
            raw = handle.read(length)
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied; check the file's permissions") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
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
    return header, meta


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
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vaecli.models import build_model, place

    path = Path(path)
    header, meta = read_header(path)
    config = config_of(path, meta)
    # Shapes first, on the meta device (nothing allocated): weights that all lie in the file bound
    # the model's size by the file's, so crafted metadata cannot make us allocate terabytes.
    with torch.device("meta"):
        expected = build_model(config.model).state_dict()
    for name, tensor in expected.items():
        entry = header.get(MODEL_PREFIX + name)
        if entry is None or list(entry["shape"]) != list(tensor.shape):
            raise CheckpointError(
                f"{path}: weights do not match the {config.model.arch} architecture it declares "
                f"({name}); the file is damaged"
            )
    model = build_model(config.model)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(_not_checkpoint(path, str(exc).splitlines()[0][:80])) from None
    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(f"{path}: weights do not match the declared architecture") from None
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise CheckpointError(f"{path}: the weights contain NaN or Inf; use an earlier checkpoint")
    model = place(model, device).eval()
    checkpoint = Checkpoint(model=model, config=config, meta=meta, path=path)
    if training_state:
        checkpoint.optimizer_state = {
            k[len(OPTIMIZER_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIMIZER_PREFIX)
        }
        checkpoint.rng_state = tensors.get(RNG_KEY)
    return checkpoint


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
