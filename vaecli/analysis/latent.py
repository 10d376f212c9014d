"""Latent-space operations: prior samples, posterior means, paths between codes, decoding."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from numpy.lib import format as npy

from vaecli.config import MAX_SEED
from vaecli.errors import InputError, SettingError
from vaecli.model.interface import VAEModel
from vaecli.model.objective import output_to_image, sample_output
from vaecli.model.prior import prefix_stable_normal
from vaecli.runtime.device import resolve_device
from vaecli.runtime.memory import check_fits, model_bytes
from vaecli.store.checkpoint import Checkpoint, load_checkpoint
from vaecli.store.files import read_exactly

BATCH_SIZE = 256  # images per forward pass: bounds memory for a large `n` or long .npy files
INTERPOLATION_METHODS = ("lerp", "slerp")


def load_model(path: Path, device_name: str, training_state: bool = False) -> Checkpoint:
    """Load a checkpoint on `device`, refused when a batch of its images would not fit in memory."""
    checkpoint = load_checkpoint(path, resolve_device(device_name), training_state=training_state)
    # The weights are bounded by the file's size, but not what a batch of its images needs.
    check_fits(model_bytes(checkpoint.config.model, BATCH_SIZE, training=False), _device(checkpoint.model),
               f"{path}: running this model on {BATCH_SIZE} images at a time", "use a smaller model")
    return checkpoint


def make_generator(seed: int) -> torch.Generator:
    # Draws are made on the CPU so a seed gives the same numbers on every device.
    return torch.Generator().manual_seed(seed)


def lower_layer_noise(model: VAEModel, count: int, temperature: float,
                      generator: torch.Generator) -> torch.Tensor | None:
    """Draws for the layers below the top, scaled by T, whose first k rows do not depend on count; None when
    the model has no lower layer (no draw is made, so a one-layer model's stream is left as it was)."""
    dims = model.lower_dims
    return temperature * prefix_stable_normal(count, dims, generator) if dims else None


def sample_prior(model: VAEModel, count: int, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """z from the model's prior, spread scaled by T (N(0, T^2 I) for the standard one): (count, latent).

    The first k rows do not depend on count."""
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise SettingError(f"`temperature` must be a finite number >= 0, not {temperature}")
    if model.prior is not None:
        return model.prior.sample(count, temperature, generator)
    return temperature * prefix_stable_normal(count, model.config.latent_dim, generator)


def sample_batches(model: VAEModel, count: int, temperature: float, seed: int, label: int | None = None,
                   sample_pixels: bool = False) -> Iterator[torch.Tensor]:
    """`vae sample`'s images, uint8 (N, C, H, W) a batch at a time: z from the prior drawn with `seed`, a
    hierarchical model's lower layers from the next seed's stream (so the top codes stay the seed's), and the
    mean of p(x|z), or a draw from it after z's. The rows are those of one draw (prefix-stable)."""
    generator = make_generator(seed)
    pixel_draws = generator if sample_pixels else None
    lower_generator = make_generator((seed + 1) % (MAX_SEED + 1))
    for start in range(0, count, BATCH_SIZE):
        size = min(BATCH_SIZE, count - start)
        yield decode_to_pixels(model, sample_prior(model, size, temperature, generator), pixel_draws,
                               label_tensor(label, size), lower_layer_noise(model, size, temperature, lower_generator))


def label_tensor(index: int | None, count: int) -> torch.Tensor | None:
    """`count` copies of one class index, as a conditional model reads labels (int64); None for an unconditional one."""
    return None if index is None else torch.full((count,), index, dtype=torch.int64)


def _device(model: VAEModel) -> torch.device:
    return next(model.parameters()).device


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] to uint8 [0, 255], rounded."""
    return pixels.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


@torch.no_grad()
def decode_to_pixels(
    model: VAEModel, z: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
    lower_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean of p(x|z) for each code as uint8 (N, C, H, W) on the CPU; with a generator, a draw from it.

    A conditional model decodes each code with its label (N,): p(x|z,y); a hierarchical one draws its
    lower layers with lower_noise (N, lower_dims), else sets them to their prior means."""
    device = _device(model)

    def decode(start: int, batch: torch.Tensor) -> torch.Tensor:
        return model.decode(batch.to(device, torch.float32), _on(device, labels, start),
                            _on(device, lower_noise, start))

    return _outputs_to_pixels(model, z.shape[0], lambda start: decode(start, z[start : start + BATCH_SIZE]),
                              generator)


def _outputs_to_pixels(
    model: VAEModel, count: int, output_at: Callable[[int], torch.Tensor], generator: torch.Generator | None
) -> torch.Tensor:
    """uint8 images (count, C, H, W) on the CPU from the decoder outputs of rows start.. start + BATCH_SIZE."""

    def image(output: torch.Tensor) -> torch.Tensor:
        return output_to_image(model, output) if generator is None else sample_output(model, output, generator)

    chunks = [to_uint8(image(output_at(start))).cpu() for start in range(0, count, BATCH_SIZE)]
    if not chunks:
        return torch.empty((0, *model.config.image_shape), dtype=torch.uint8)
    return torch.cat(chunks)


@torch.no_grad()
def posterior_layers(model: VAEModel, images: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The posterior mean of every layer for uint8 images (N, C, H, W), float32 on the CPU: [(N, latent)] for a
    one-layer model; a hierarchical one's top vector, then each lower map, top-down, each given those above."""
    device = _device(model)
    parts = [model.posterior_mean_layers(batch.to(device).float().div_(255.0), _on(device, labels, start))
             for start, batch in zip(range(0, images.shape[0], BATCH_SIZE), images.split(BATCH_SIZE), strict=True)]
    return [torch.cat([part[i].float().cpu() for part in parts]) for i in range(len(parts[0]))]


@torch.no_grad()
def decode_layers_to_pixels(
    model: VAEModel, layers: list[torch.Tensor], generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """decode_to_pixels for a value of every layer (posterior_layers' order), a hierarchical model's lower maps
    included: uint8 (N, C, H, W) on the CPU."""
    if len(layers) == 1:
        return decode_to_pixels(model, layers[0], generator, labels)
    device = _device(model)

    def output_at(start: int) -> torch.Tensor:
        return model.decode_layers([layer[start : start + BATCH_SIZE].to(device, torch.float32) for layer in layers])

    return _outputs_to_pixels(model, layers[0].shape[0], output_at, generator)


def reconstruct_pixels(
    model: VAEModel, images: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Each uint8 image decoded from the posterior mean of every layer given it (a one-layer model's z, a
    hierarchical model's top vector and lower maps): uint8 (N, C, H, W) on the CPU, a draw with a generator."""
    return decode_layers_to_pixels(model, posterior_layers(model, images, labels), generator, labels)


@torch.no_grad()
def posterior_means(model: VAEModel, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of q(z|x) (of q(z|x,y), given labels (N,)) for uint8 images (N, C, H, W): float32 (N, latent)."""
    device = _device(model)
    chunks = [
        model.encode(batch.to(device).float().div_(255.0), _on(device, labels, start))[0].float().cpu()
        for start, batch in zip(range(0, images.shape[0], BATCH_SIZE), images.split(BATCH_SIZE), strict=True)
    ]
    return torch.cat(chunks)


def _on(device: torch.device, labels: torch.Tensor | None, start: int) -> torch.Tensor | None:
    return None if labels is None else labels[start : start + BATCH_SIZE].to(device)


def fractions(steps: int) -> torch.Tensor:
    """`steps` points evenly spaced strictly between 0 and 1: i / (steps + 1)."""
    if steps < 1:
        raise SettingError(f"`steps` must be 1 or more, not {steps}")
    return torch.arange(1, steps + 1, dtype=torch.float32) / (steps + 1)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points (1 - t) a + t b on the segment from a to b: (len(t), latent)."""
    t = t.unsqueeze(1)
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for VAE latents): (len(t), latent).

    Follows the great circle between the directions of a and b while the norm changes
    linearly, so intermediate codes keep the typical norm of N(0, I) samples instead of
    shrinking toward the origin as lerp's do. Falls back to lerp when the angle is degenerate.
    """
    a64, b64 = a.double(), b.double()
    norms = a64.norm() * b64.norm()
    if norms == 0:
        return lerp(a, b, t)
    omega = torch.arccos((a64 @ b64 / norms).clamp(-1.0, 1.0))
    if omega < 1e-4 or math.pi - omega < 1e-4:  # parallel: lerp is exact; opposite: no unique circle
        return lerp(a, b, t)
    t64 = t.double().unsqueeze(1)
    sin_omega = torch.sin(omega)
    path = torch.sin((1 - t64) * omega) / sin_omega * a64 + torch.sin(t64 * omega) / sin_omega * b64
    return path.to(a.dtype)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, method: str = "lerp") -> torch.Tensor:
    """`steps` codes evenly spaced strictly between a and b (latent,), by lerp or slerp."""
    if method not in INTERPOLATION_METHODS:
        raise SettingError(f"`method={method}`: choose one of {', '.join(INTERPOLATION_METHODS)}")
    t = fractions(steps)
    return lerp(a, b, t) if method == "lerp" else slerp(a, b, t)


def interpolate_layers(layers: list[torch.Tensor], steps: int, method: str = "lerp") -> list[torch.Tensor]:
    """The path between two images' layers (each tensor's rows 0 and 1), ends included: steps + 2 rows each.

    The top code moves by `method`; a hierarchical model's lower maps move linearly (slerp's norm argument
    is about N(0, I) codes, which they are not), so the ends are the two reconstructions."""
    top = layers[0]
    paths = [torch.cat([top[:1], interpolate(top[0], top[1], steps, method), top[1:]])]
    t = fractions(steps)
    for maps in layers[1:]:
        inner = lerp(maps[0].flatten(), maps[1].flatten(), t).reshape(steps, *maps.shape[1:])
        paths.append(torch.cat([maps[:1], inner, maps[1:]]))
    return paths


MAX_CODE_BYTES = 1 << 30  # codes read at once; a million 32-d codes take 128 MiB
NPY_MAGIC = b"\x93NUMPY"
NPY_HINT = "give a .npy file written by `vae encode`"


def read_codes(handle: BinaryIO, latent_dim: int, name: str) -> torch.Tensor:
    """Every (N, latent) float array of a .npy stream (arrays written one after another are all read)."""
    arrays: list[torch.Tensor] = []
    total = 0
    while True:
        magic = read_exactly(handle, len(NPY_MAGIC), name)
        if not magic and arrays:
            break
        array = _read_one_array(handle, magic, latent_dim, name, MAX_CODE_BYTES - total)
        total += array.nbytes
        arrays.append(array)
    return torch.cat(arrays)


def _read_one_array(handle: BinaryIO, magic: bytes, latent_dim: int, name: str, budget: int) -> torch.Tensor:
    shape, fortran, dtype = _read_npy_header(handle, magic, name)
    if dtype.hasobject:
        raise InputError(f"{name}: not a readable .npy array (it holds Python objects); {NPY_HINT}")
    if len(shape) != 2 or shape[1] != latent_dim:
        raise InputError(
            f"{name}: array of shape {tuple(shape)}, but this model needs (N, {latent_dim}); "
            "encode with the same model, or reshape it"
        )
    if dtype.kind != "f" or dtype.hasobject:
        raise InputError(f"{name}: array of {dtype}, not floats; give the float32 means of `vae encode`")
    size = shape[0] * shape[1] * dtype.itemsize
    if size > budget:
        raise InputError(
            f"{name}: {shape[0]:,} codes ({size:,} bytes) are more than one run decodes "
            f"({MAX_CODE_BYTES:,} bytes); split the array"
        )
    if shape[0] == 0:
        raise InputError(f"{name}: the array has no rows; nothing to decode")
    data = read_exactly(handle, size, name)
    if len(data) != size:
        raise InputError(f"{name}: the array is truncated ({len(data):,} of {size:,} bytes); {NPY_HINT}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    if not np.isfinite(array).all():
        raise InputError(f"{name}: the array contains NaN or Inf; nothing sensible decodes from it")
    return torch.from_numpy(array.astype(np.float32))


def _read_npy_header(handle: BinaryIO, magic: bytes, name: str) -> tuple[tuple[int, ...], bool, Any]:
    """(shape, Fortran order, dtype) from a .npy header whose first bytes (`magic`) are already read."""
    if not magic:
        raise InputError(f"{name}: empty; {NPY_HINT}")
    if magic.startswith(b"PK"):
        raise InputError(f"{name}: an .npz archive, not a .npy array; save one array with numpy.save")
    if magic != NPY_MAGIC:
        raise InputError(f"{name}: not a .npy file; {NPY_HINT}")
    try:
        version = read_exactly(handle, 2, name)
        length_size = 2 if version[:1] == b"\x01" else 4
        length_bytes = read_exactly(handle, length_size, name)
        length = int.from_bytes(length_bytes, "little")
        if length > 65536 or len(length_bytes) < length_size:
            raise ValueError("its header is damaged")
        head = io.BytesIO(magic + version + length_bytes + read_exactly(handle, length, name))
        npy.read_magic(head)
        reader = npy.read_array_header_1_0 if length_size == 2 else npy.read_array_header_2_0
        return reader(head, max_header_size=65536)
    except (ValueError, SyntaxError, TypeError, OverflowError) as exc:
        first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{name}: not a readable .npy array ({first}); {NPY_HINT}") from None


def codes_to_npy(z: torch.Tensor) -> bytes:
    """A float32 (N, latent) array as .npy file bytes."""
    buffer = io.BytesIO()
    np.save(buffer, z.detach().cpu().numpy().astype(np.float32), allow_pickle=False)
    return buffer.getvalue()
