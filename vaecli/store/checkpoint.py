"""Checkpoints: the model, its training state and metadata in one safetensors file; atomic saves, checked loads.

safetensors_file.py reads the file's framing, metadata.py declares the metadata and reads it without torch
(read_metadata, for `vae info`), bundled.py names the shipped models.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from vaecli.config import TrainConfig
from vaecli.errors import CheckpointError
from vaecli.model.interface import VAEModel
from vaecli.model.networks import build_model, place
from vaecli.model.prior import mixture_problem
from vaecli.runtime.memory import check_fits
from vaecli.store.files import write_atomic
from vaecli.store.metadata import METADATA_KEY, CheckpointMeta, config_of, vaecli_metadata

# Read without torch in metadata.py; named here too, where loaders, scripts and tests have always found them.
from vaecli.store.metadata import read_header as read_header
from vaecli.store.metadata import read_metadata as read_metadata
from vaecli.store.safetensors_file import extent, not_checkpoint, read_file
from vaecli.training.optimizer_state import check_optimizer_state

# Loading holds the tensor data twice (the bytes read, then safetensors' tensors made from them), and on
# the CPU the model's weights once more (place() makes a channels-last copy). Measured with ru_maxrss and
# tracemalloc around load_checkpoint: 2.12x the tensor bytes for an mlp, whose weights are not copied,
# 2.87x for a cnn whose file holds its weights alone; so the check counts 2.2x plus the model's weights.
LOAD_COPIES = 2.2
MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer."
# Under `ema`, model.* holds the averaged weights users run, and these the weights as trained (for `resume`).
TRAINING_PREFIX = "training."
RNG_KEY = "rng.train"
CUDA_RNG_BYTES = 16  # a CUDA generator's state: its seed and offset


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, its recipe, and what happened in training."""

    model: VAEModel
    config: TrainConfig
    meta: dict  # the full metadata object (history, dataset, versions...)
    path: Path
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)
    rng_state: torch.Tensor | None = None
    training_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # under `ema`: the raw weights

    @property
    def epochs_done(self) -> int:
        return int(self.meta.get("epochs_done", 0))

    @property
    def class_names(self) -> list[str]:
        """A conditional model's class names as trained (numbers where the file lacks them); [] without classes."""
        classes = self.config.model.classes
        names = [str(name) for name in (self.meta.get("dataset_info") or {}).get("class_names") or []]
        return names if len(names) == classes else [str(i) for i in range(classes)]


def build_metadata(config: TrainConfig, **extra: Any) -> dict:
    """The metadata of a checkpoint of `config`, with `extra` fields as given (for scripts and tests)."""
    return {**CheckpointMeta(config).to_dict(), **extra}


def save_checkpoint(
    path: Path,
    model: VAEModel,
    meta: dict,
    optimizer_state: dict[str, torch.Tensor] | None = None,
    rng_state: torch.Tensor | None = None,
    training_weights: dict[str, torch.Tensor] | None = None,
    own: bool = False,
) -> None:
    """Write the checkpoint to a temporary file beside `path`, then rename it into place.

    `own`: a path vaecli chose (the -best copy), written only as a regular file (see files.write_atomic)."""
    tensors = {MODEL_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for key, value in (training_weights or {}).items():
        tensors[TRAINING_PREFIX + key] = value.detach().cpu().contiguous()
    for key, value in (optimizer_state or {}).items():
        tensors[OPTIMIZER_PREFIX + key] = value.detach().cpu().contiguous()
    if rng_state is not None:
        tensors[RNG_KEY] = rng_state.cpu().contiguous()
    payload = save(tensors, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    write_atomic(path, payload, own=own)


def _read_checkpoint(path: Path) -> tuple[dict, dict, bytes]:
    """(tensor table, metadata, the file's bytes), all from one pass over the file."""
    header, meta, data = read_file(path, True, functools.partial(vaecli_metadata, path),
                                   functools.partial(_check_loading_cost, path))
    assert data is not None  # read_file keeps the bytes when asked for the weights
    return header, meta, data


def _check_loading_cost(path: Path, header: dict, tensor_bytes: int) -> None:
    """Refuse, before its tensor data is read, a checkpoint whose loading would not fit in free memory.

    The model's copy is counted from the file's own model tensors: a config that declares more is
    refused later, on the meta device, as not matching its weights."""
    model_bytes = sum(stop - begin for begin, stop, name in
                      (extent(path, name, entry) for name, entry in header.items()) if name.startswith(MODEL_PREFIX))
    needed = int(LOAD_COPIES * tensor_bytes) + model_bytes
    check_fits(needed, None, f"{path}: loading this checkpoint",
               "free some memory or load it on a machine with more")


# --- weights and training state ------------------------------------------------------------------------


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu", training_state: bool = False
) -> Checkpoint:
    """Rebuild the exact model from the file alone; with training_state, also optimizer and RNG."""
    path = Path(path)
    # One read: a writer replacing the file meanwhile cannot give us the metadata of one checkpoint with
    # the weights of another, and a pipe can be read only once. The header is checked before the weights.
    header, meta, data = _read_checkpoint(path)
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


def _training_weights(path: Path, model: VAEModel, tensors: dict) -> dict:
    """The weights as trained, beside the averaged ones of an `ema` run: each must fit the model and be finite."""
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


def _load_weights(path: Path, config: TrainConfig, header: dict, data: bytes) -> tuple[VAEModel, dict]:
    """The model with the file's weights, checked finite (and its prior a density); all the file's tensors."""
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
        raise CheckpointError(not_checkpoint(path, str(exc).splitlines()[0][:80])) from None
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
    state, path = checkpoint.rng_state, checkpoint.path
    if state is None:  # nothing saved: the stream starts afresh
        return False
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
