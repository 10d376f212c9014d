"""The page's requests read and checked: a JSON object's fields as typed values, or BadRequest (HTTP 400).

Every message is short and names the field, so a bad request is answered with one line and never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from vaecli.config import MAX_SEED, MIN_SEED

MAX_CODE_VALUE = 1e4  # far outside any prior; float32 stays finite through the decoder's first layer
# A canvas's or a FileReader's data: URL; the bytes are then whatever image file Pillow reads, as for a file.
IMAGE_URL = re.compile(r"data:[\w.+/-]*;base64,")


@dataclass
class End:
    """One end of an interpolation: a top-layer code, or an image file's bytes."""

    code: list[float] | None = None
    image: bytes | None = None


class BadRequest(Exception):
    """A request the explorer cannot answer: the HTTP status and one line saying why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def json_object(body: bytes) -> dict:
    """The request body as a JSON object."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity, which Python's json accepts by default


def finite(body: dict, name: str, low: float, high: float, default: float | None = None) -> float:
    """A number within [low, high]."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def whole(body: dict, name: str, low: int, high: int, default: int | None = None) -> int:
    """A whole number within [low, high]."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return value


def seed(body: dict) -> int:
    return whole(body, "seed", MIN_SEED, MAX_SEED, 0)


def choice(body: dict, name: str, choices: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}")
    return value


def names(body: dict, name: str, allowed: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of names, each one of `allowed`, without repeats."""
    value = body.get(name, list(default))
    if not isinstance(value, list) or not value or not all(item in allowed for item in value):
        raise BadRequest(f"{name} must be a list of some of {', '.join(allowed)}")
    return tuple(dict.fromkeys(value))


def code(value: Any, latent_dim: int, name: str = "code") -> list[float]:
    """A latent code: `latent_dim` finite numbers."""
    if not isinstance(value, list) or len(value) != latent_dim or not all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            and abs(v) <= MAX_CODE_VALUE for v in value):
        raise BadRequest(f"{name} must be a list of {latent_dim} numbers, each within +-{MAX_CODE_VALUE:g}")
    return [float(v) for v in value]


def point(value: Any, name: str = "point") -> tuple[float, float]:
    """A point of the map's plane: [x, y]."""
    if not isinstance(value, list) or len(value) != 2 or not all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            and abs(v) <= MAX_CODE_VALUE for v in value):
        raise BadRequest(f"{name} must be [x, y], two numbers within +-{MAX_CODE_VALUE:g}")
    return float(value[0]), float(value[1])


def label(body: dict, classes: int) -> int | None:
    """The class of a conditional model (a number below `classes`); null or absent for an unconditional one."""
    value = body.get("label")
    if not classes:
        if value is not None:
            raise BadRequest("this model is not conditional: send no label")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < classes:
        raise BadRequest(f"this model is conditional: label must be a class number from 0 to {classes - 1}")
    return value


def image(value: Any, name: str = "image") -> bytes:
    """An image file's bytes, sent as a base64 data: URL (what a canvas or a FileReader gives)."""
    found = IMAGE_URL.match(value) if isinstance(value, str) else None
    if found is None:
        raise BadRequest(f"{name} must be an image file as a base64 data: URL")
    try:
        data = base64.b64decode(value[found.end():], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name}: its base64 is damaged") from None
    if not data:
        raise BadRequest(f"{name} is empty")
    return data
