"""vaecli from Python: load a model (bundled or a file) and use it as the commands do, or train one.

    import vaecli
    m = vaecli.load("mnist")
    images = m.sample(16, seed=0)            # uint8 (16, 1, 28, 28), the pixels `vae sample` writes with seed 0
    codes = m.encode(images)                 # float32 (16, latent): posterior means, as `vae encode`
    again = m.decode(codes)                  # uint8, as `vae decode`
    nats = m.log_likelihood(images)          # log p(x) per image, as `vae score -s nll` (negated)

Images go in as uint8 numpy arrays or tensors (N, C, H, W) at the model's shape, or PIL images (converted to
the model's channels and size as the commands convert files); they come out as numpy arrays unless
`output="tensor"` or `output="pil"` asks otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, cast

import numpy as np
import torch
from PIL import Image

from vaecli.analysis.latent import (
    decode_to_pixels,
    label_tensor,
    posterior_means,
    reconstruct_pixels,
    sample_batches,
)
from vaecli.analysis.scores import ScoreSettings, score_images
from vaecli.config import SCORE_NAMES, ModelConfig
from vaecli.data.datasets import load_dataset
from vaecli.data.images import image_to_tensor, should_invert
from vaecli.errors import SettingError
from vaecli.runtime.device import resolve_device
from vaecli.store.bundled import resolve_model
from vaecli.store.checkpoint import Checkpoint, load_checkpoint
from vaecli.store.files import check_output_file
from vaecli.training.loop import Hooks, Outputs, fit, new_run_metadata, start_run
from vaecli.training.settings import check_tensorboard_installed, train_config

if TYPE_CHECKING:
    from vaecli.model.interface import VAEModel
    from vaecli.store.metadata import EpochRecord

Images = np.ndarray | torch.Tensor | Image.Image | Sequence[Image.Image]
Output = Literal["numpy", "tensor", "pil"]
Label = int | str | None


class Model:
    """A trained model and what the commands do with it. Make one with vaecli.load."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint

    def __repr__(self) -> str:
        config = self.config
        return (f"vaecli.Model({str(self.path)!r}: {config.arch}, latent {config.latent_dim}, "
                f"images {'x'.join(map(str, config.image_shape))}, {config.likelihood})")

    @property
    def path(self) -> Path:
        """The checkpoint file the model was read from."""
        return self.checkpoint.path

    @property
    def config(self) -> ModelConfig:
        """The architecture's settings (image shape, latent size, likelihood, classes...)."""
        return self.checkpoint.config.model

    @property
    def network(self) -> VAEModel:
        """The torch module itself, in eval mode: encode, decode, and a draw from q as forward."""
        return self.checkpoint.model

    @property
    def class_names(self) -> list[str]:
        """A conditional model's classes, in label order; [] for an unconditional one."""
        names = (self.checkpoint.meta.get("dataset_info") or {}).get("class_names") or []
        return [str(name) for name in names] if self.config.classes else []

    def sample(self, n: int, *, seed: int = 0, temperature: float = 1.0, label: Label = None,
               output: Output = "numpy") -> Any:
        """n images decoded from z drawn from the prior: the pixels `vae sample` writes for the same n and seed."""
        _check_count(n, "n")
        batches = list(sample_batches(self.network, n, temperature, seed, self._label_index(label)))
        return _as_output(torch.cat(batches), output)

    def encode(self, images: Images, *, label: Label = None, invert: str = "no") -> np.ndarray:
        """Posterior means of q(z|x), float32 (N, latent): what `vae encode` writes for the same pixels."""
        pixels = self._pixels(images, invert)
        return posterior_means(self.network, pixels, label_tensor(self._label_index(label), len(pixels))).numpy()

    def decode(self, codes: np.ndarray | torch.Tensor, *, label: Label = None, output: Output = "numpy") -> Any:
        """Images for codes (N, latent), the mean of p(x|z) (lower layers at their prior means): `vae decode`."""
        z = torch.as_tensor(np.asarray(codes, dtype=np.float32) if not torch.is_tensor(codes) else codes).float()
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise SettingError(f"`codes` must be (N, {self.config.latent_dim}) for this model, not {tuple(z.shape)}")
        labels = label_tensor(self._label_index(label), len(z))
        return _as_output(decode_to_pixels(self.network, z, None, labels), output)

    def reconstruct(self, images: Images, *, label: Label = None, invert: str = "no",
                    output: Output | None = None) -> Any:
        """Each image decoded from the posterior mean of every layer given it: `vae reconstruct`.
        The output takes the input's kind (array, tensor or PIL) unless `output` names one."""
        pixels = self._pixels(images, invert)
        labels = label_tensor(self._label_index(label), len(pixels))
        return _as_output(reconstruct_pixels(self.network, pixels, None, labels), output or _kind_of(images))

    def log_likelihood(self, images: Images, *, iw_samples: int = 100, seed: int = 0,
                       invert: str = "no") -> np.ndarray:
        """log p(x) per image in nats, float64 (N,): the importance-weighted bound with K = iw_samples
        (Burda et al. 2016), minus the nll that `vae score` gives for the same K and seed."""
        return -self.score(images, ("nll",), iw_samples=iw_samples, seed=seed, invert=invert)["nll"]

    def score(self, images: Images, scores: Sequence[str] = ("complexity", "nll"), *, iw_samples: int = 100,
              seed: int = 0, invert: str = "no") -> dict[str, np.ndarray]:
        """The named scores (nll, elbo, recon, kl, complexity, regret) per image, in nats, higher = more unusual:
        `vae score`'s values for the same settings."""
        unknown = [name for name in scores if name not in SCORE_NAMES]
        if unknown:
            raise SettingError(f"unknown score {unknown[0]!r} in `scores`; choose from {', '.join(SCORE_NAMES)}")
        if self.config.classes:
            raise SettingError("scores need p(x) of an unconditional model; this one is conditional on the class")
        if "regret" in scores and self.network.layers > 1:
            raise SettingError("the regret score refits a one-layer model's z; this model has several layers")
        _check_count(iw_samples, "iw_samples")
        device = next(self.network.parameters()).device
        pixels = self._pixels(images, invert).to(device).float().div_(255.0)
        found = score_images(self.network, pixels, tuple(scores), ScoreSettings(iw_samples=iw_samples, seed=seed))
        return {name: value.numpy() for name, value in found.items()}

    def _pixels(self, images: Images, invert: str) -> torch.Tensor:
        """uint8 (N, C, H, W) at the model's shape, from an array, a tensor or PIL images."""
        shape = self.config.image_shape
        if _is_pil(images) or (isinstance(images, (list, tuple)) and images and _is_pil(images[0])):
            # Not a PIL image, so a list or tuple whose first item is one (the condition above).
            pictures = [images] if _is_pil(images) else list(cast("Sequence[Image.Image]", images))
            pixels = torch.stack([image_to_tensor(picture, *shape) for picture in pictures])
        else:
            pixels = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
            if pixels.dtype != torch.uint8:
                raise SettingError(f"`images` must be uint8 (0 to 255), not {pixels.dtype}; PIL images are converted")
            if pixels.ndim == 3 and tuple(pixels.shape) == shape:
                pixels = pixels.unsqueeze(0)
            if pixels.ndim != 4 or tuple(pixels.shape[1:]) != shape:
                raise SettingError(f"`images` must be (N, {', '.join(map(str, shape))}) for this model, "
                                 f"not {tuple(pixels.shape)}; PIL images are resized")
        if invert != "no" and len(pixels):
            pixels = torch.stack([255 - p if should_invert(p, invert) else p for p in pixels])
        return pixels.cpu()

    def _label_index(self, label: Label) -> int | None:
        """A class number or name as the model's label index; None for an unconditional model."""
        if not self.config.classes:
            if label is not None:
                raise SettingError("this model was trained without `conditional`; it takes no `label`")
            return None
        if label is None:
            raise SettingError(f"this model is conditional on the class: pass `label`, one of {self.class_names}")
        if isinstance(label, str) and label in self.class_names:
            return self.class_names.index(label)
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < self.config.classes:
            return label
        raise SettingError(f"unknown class `label={label!r}`: use 0 to {self.config.classes - 1} or one of "
                           f"{self.class_names}")


def load(model: str | Path = "mnist", *, device: str = "cpu") -> Model:
    """A model from a bundled name (mnist, mnist-resnet, fashion-mnist, ...) or a checkpoint path."""
    path, _ = resolve_model(str(model))
    return Model(load_checkpoint(path, resolve_device(device)))


def train(out: str | Path, *, dataset: str = "mnist", data_root: str | Path | None = None, device: str = "auto",
          conditional: bool = False, force: bool = False, on_epoch: Callable[[EpochRecord], None] | None = None,
          tensorboard: str | Path | None = None, **settings: Any) -> Model:
    """Train a model as `vae train` does and return it; `settings` are TrainConfig's and ModelConfig's fields
    (arch, latent_dim, epochs, batch_size, lr, likelihood, ...) and `image_size`. The checkpoint at `out` is
    written after every epoch; a file already there is refused unless `force=True`. `tensorboard` logs the run
    to TensorBoard in that folder's sub-folder named after `out`, as `vae train --tensorboard` does."""
    root = None if data_root is None else Path(data_root)
    config = train_config(dataset, root, conditional=conditional, **settings)
    out = Path(out)
    check_output_file(out, "`out`")
    if out.exists() and not force:
        raise SettingError(f"{out} exists; pass `force=True` to replace it, or give another `out`")
    board_folder = None if tensorboard is None else _tensorboard_folder(Path(tensorboard), out, force)
    torch_device = resolve_device(device)
    shape = config.model.image_shape
    train_set = load_dataset(config.dataset, "train", data_root=root, shape=shape, limit=config.limit)
    test_set = load_dataset(config.dataset, "test", data_root=root, shape=shape, limit=config.limit)
    if conditional:
        config.model.classes = len(train_set.class_names)
        config.validate()
    run = start_run(config, torch_device)
    meta = new_run_metadata(config, train_set, test_set)
    with ExitStack() as stack:
        hooks = Hooks(on_epoch=on_epoch)
        if board_folder is not None:
            from vaecli.training.tensorboard_log import logging_to  # an optional extra: loaded when asked for

            board = stack.enter_context(logging_to(board_folder, config, run, test_set))
            hooks.on_epoch = functools.partial(_log_epoch, board.log_epoch, on_epoch)
        fit(config, run, train_set, test_set, Outputs(out, meta), hooks=hooks)
    return load(out, device=str(torch_device))


def _tensorboard_folder(root: Path, out: Path, force: bool) -> Path:
    """The run's TensorBoard folder, checked before any work as `vae train --tensorboard` checks it."""
    check_tensorboard_installed()
    from vaecli.training.tensorboard_log import checked_run_folder  # an optional extra, installed

    return checked_run_folder(root, out, force)


def _log_epoch(log: Callable[[EpochRecord], None], then: Callable[[EpochRecord], None] | None,
               record: EpochRecord) -> None:
    log(record)
    if then is not None:
        then(record)


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingError(f"`{name}` must be a whole number, 1 or more, not {value!r}")


def _is_pil(value: object) -> TypeGuard[Image.Image]:
    return isinstance(value, Image.Image)


def _kind_of(images: Images) -> Output:
    if torch.is_tensor(images):
        return "tensor"
    return "pil" if _is_pil(images) or (isinstance(images, (list, tuple)) and images and _is_pil(images[0])) \
        else "numpy"


def _as_output(pixels: torch.Tensor, output: Output) -> Any:
    """uint8 (N, C, H, W) pixels as a numpy array, a tensor, or a list of PIL images."""
    if output == "tensor":
        return pixels
    if output == "numpy":
        return pixels.numpy()
    if output == "pil":
        arrays = pixels.numpy()
        return [Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)) for a in arrays]
    raise SettingError(f"`output` must be numpy, tensor or pil, not {output!r}")

