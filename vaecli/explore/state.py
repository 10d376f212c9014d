"""The loaded model and what the page asks of it; every picture is made by the functions the commands use, so
it equals the command line's for the same code and settings (`vae decode`, `vae sample`, `vae reconstruct`,
`vae interpolate`, `vae score`)."""

from __future__ import annotations

import base64
import math
import threading

import torch
from PIL import Image

from vaecli.analysis.latent import (
    decode_layers_to_pixels,
    decode_to_pixels,
    interpolate,
    interpolate_layers,
    label_tensor,
    make_generator,
    posterior_layers,
    posterior_means,
    reconstruct_pixels,
    sample_batches,
    sample_prior,
)
from vaecli.analysis.scores import ScoreSettings, score_images
from vaecli.data.datasets import ImageSet, fixed_pixels
from vaecli.data.images import conform_image, decode_image, png_bytes, should_invert
from vaecli.explore.atlas import Atlas, build_atlas
from vaecli.explore.facts import ModelFacts
from vaecli.explore.inputs import BadRequest, End
from vaecli.store.checkpoint import Checkpoint

# `vae score`'s defaults: the page's scores are the command's for the same file.
SCORE_SETTINGS = ScoreSettings(iw_samples=100, seed=0, rows=None, regret_steps=50)
DROPPED = "the image"  # how messages name a drawn or dropped file, which has no path


class Session:
    """One model on its device, shared by every request. `lock` lets one quick computation (a decode, a sample,
    an encoding) run at a time, so that two tabs do not split the cores between them; the slow ones (scores, the
    map) run beside them, so that a slider move never waits seconds. Inference leaves the model unchanged, so
    threads may share it."""

    def __init__(self, checkpoint: Checkpoint, facts: ModelFacts):
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.facts = facts
        self.lock = threading.Lock()
        self.atlas: Atlas | None = None

    def build_atlas(self, data: ImageSet, kl_images: int) -> None:
        self.atlas = build_atlas(self.checkpoint, data, kl_images)

    def decode(self, code: list[float], label: int | None) -> dict:
        """The image `vae decode` writes for this code (a hierarchical model's lower layers at their prior means)."""
        z = torch.tensor([code], dtype=torch.float32)
        with self.lock:
            pixels = decode_to_pixels(self.model, z, None, label_tensor(label, 1))
        code = z[0].tolist()
        return {"code": code, "image": data_url(pixels[0]), "point": self._point(code, label)}

    def code_at(self, point: tuple[float, float]) -> list[float]:
        """The code at a point of the map's plane (409 while the map is not computed)."""
        if self.atlas is None:
            raise BadRequest("the map is not ready yet", status=409)
        return self.atlas.code_at(point)

    def sample(self, count: int, temperature: float, seed: int, label: int | None) -> dict:
        """The images `vae sample` writes for the same `n`, `seed` and `temperature`, and their top codes."""
        with self.lock:
            images = torch.cat(list(sample_batches(self.model, count, temperature, seed, label)))
            codes = sample_prior(self.model, count, temperature, make_generator(seed))  # the same draws as above
        return {"images": [data_url(pixels) for pixels in images], "codes": codes.tolist(),
                "points": [self._point(code, label) for code in codes.tolist()]}

    def encode(self, data: bytes, label: int | None, invert: str) -> dict:
        """An image file as the model sees it, its reconstruction (`vae reconstruct`), code and point."""
        pixels = self.pixels(data, invert)
        with self.lock:
            recon = reconstruct_pixels(self.model, pixels[None], None, label_tensor(label, 1))
            code = posterior_means(self.model, pixels[None], label_tensor(label, 1))[0].tolist()
        return {"input": data_url(pixels), "reconstruction": data_url(recon[0]), "code": code,
                "point": self._point(code, label)}

    def score(self, data: bytes, invert: str, names: tuple[str, ...]) -> dict:
        """The image's scores in nats, higher = more unusual: `vae score FILE -s NAMES`'s.

        Not under the lock: scoring takes up to seconds, and slider moves go on meanwhile."""
        pixels = self.pixels(data, invert)
        device = next(self.model.parameters()).device
        found = score_images(self.model, fixed_pixels(pixels[None], device, False), names, SCORE_SETTINGS)
        values = {name: float(value[0]) for name, value in found.items()}
        return {"scores": {name: value if math.isfinite(value) else None for name, value in values.items()},
                "iw_samples": SCORE_SETTINGS.iw_samples, "seed": SCORE_SETTINGS.seed}

    def interpolate(self, a: End, b: End, steps: int, method: str, label: int | None, invert: str) -> dict:
        """The path from a to b, ends included. Two images: `vae interpolate A B`'s decoded panels, every layer
        moving; otherwise the top codes' path, decoded as `vae decode` decodes it."""
        if a.image is not None and b.image is not None:
            pixels = torch.stack([self.pixels(a.image, invert), self.pixels(b.image, invert)])
            with self.lock:
                path = interpolate_layers(posterior_layers(self.model, pixels, label_tensor(label, 2)), steps, method)
                decoded = decode_layers_to_pixels(self.model, path, None, label_tensor(label, steps + 2))
            inputs = [data_url(pixels[0]), data_url(pixels[1])]
        else:
            ends = torch.tensor([self._code_of(end, label, invert) for end in (a, b)], dtype=torch.float32)
            path = [torch.cat([ends[:1], interpolate(ends[0], ends[1], steps, method), ends[1:]])]
            with self.lock:
                decoded = decode_to_pixels(self.model, path[0], None, label_tensor(label, steps + 2))
            inputs = []
        return {"images": [data_url(image) for image in decoded], "inputs": inputs, "codes": path[0].tolist()}

    def _code_of(self, end: End, label: int | None, invert: str) -> list[float]:
        if end.image is None:
            return end.code or []
        pixels = self.pixels(end.image, invert)
        with self.lock:
            return posterior_means(self.model, pixels[None], label_tensor(label, 1))[0].tolist()

    def pixels(self, data: bytes, invert: str) -> torch.Tensor:
        """An image file's bytes as the model sees them, uint8 (C, H, W): converted, resized and (with `invert`)
        inverted as the commands read a file."""
        pixels = conform_image(read_picture(data), DROPPED, self.facts.shape)
        return 255 - pixels if should_invert(pixels, invert) else pixels

    def _point(self, code: list[float], label: int | None) -> list[float] | None:
        return None if self.atlas is None else self.atlas.point_of(code, label)


def read_picture(data: bytes) -> Image.Image:
    """Decode a dropped file's bytes as the commands decode a file's, with the same refusals."""
    return decode_image(data, DROPPED)


def data_url(pixels: torch.Tensor) -> str:
    """A uint8 (C, H, W) image as a PNG data: URL: the bytes `vae decode` would write to a file."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")
