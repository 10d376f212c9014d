"""The page's API: each route reads its request's fields (inputs.py) and asks the session; answers are JSON
objects, or an image's PNG bytes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from vaecli.explore import inputs
from vaecli.explore.inputs import BadRequest, End

if TYPE_CHECKING:
    from vaecli.explore.app import Explorer

MAX_IMAGES = 64  # samples per request: a page's panel, not a batch job
MAX_STEPS = 32  # decoded points between the ends of an interpolation
MAX_TEMPERATURE = 100.0  # as `vae sample` allows: beyond it the decoder only saturates
INVERT_MODES = ("auto", "yes", "no")
METHODS = ("lerp", "slerp")
SLOW_SCORES = ("regret",)  # seconds per image on a CPU: computed only when asked for by name
TEST_IMAGE = re.compile(r"/api/atlas/image/([0-9]{1,9})")

Answer = dict | bytes


def model(explorer: Explorer) -> Answer:
    """The model's facts and where loading stands: what the page is built from."""
    return {**explorer.facts.as_json(), "status": explorer.status()}


def atlas(explorer: Explorer) -> Answer:
    """The map and the KL per coordinate once computed; until then where they stand."""
    session = explorer.session(timeout=0) if explorer.status()["model"] == "ready" else None
    found = session.atlas if session is not None else None
    return {"ready": found is not None, "status": explorer.status(), **(found.as_json() if found else {})}


def test_image(explorer: Explorer, index: int) -> Answer:
    """One of the map's test images as PNG: what hovering its dot shows."""
    found = explorer.session().atlas
    if found is None or not 0 <= index < len(found.images):
        raise BadRequest("no such test image on the map", status=404)
    return found.png(index)


def decode(explorer: Explorer, body: dict) -> Answer:
    """A code (or a point of the map) decoded: the image `vae decode` writes for it, and where it lies."""
    session = explorer.session()
    label = inputs.label(body, explorer.facts.classes)
    if "point" in body:
        return session.decode(session.code_at(inputs.point(body["point"])), label)
    return session.decode(inputs.code(body.get("code"), explorer.facts.latent_dim), label)


def sample(explorer: Explorer, body: dict) -> Answer:
    """Draws from the prior: the images `vae sample` writes for the same `n`, `seed` and
    `temperature`, and their top codes."""
    session = explorer.session()
    return session.sample(inputs.whole(body, "n", 1, MAX_IMAGES, 8),
                          inputs.finite(body, "temperature", 0.0, MAX_TEMPERATURE, 1.0),
                          inputs.seed(body), inputs.label(body, explorer.facts.classes))


def encode(explorer: Explorer, body: dict) -> Answer:
    """An image file (drawn or dropped): as the model sees it, its reconstruction, its code and point."""
    session = explorer.session()
    return session.encode(inputs.image(body.get("image")), inputs.label(body, explorer.facts.classes),
                          inputs.choice(body, "invert", INVERT_MODES, "auto"))


def score(explorer: Explorer, body: dict) -> Answer:
    """An image file's scores, as `vae score -s NAMES` gives them with its other defaults; all but regret unless
    named, since regret refits the posterior for seconds."""
    offered = explorer.facts.scores
    if not offered:
        raise BadRequest("scores need p(x) of an unconditional model; this one is conditional on the class")
    session = explorer.session()
    names = inputs.names(body, "scores", offered, tuple(name for name in offered if name not in SLOW_SCORES))
    return session.score(inputs.image(body.get("image")), inputs.choice(body, "invert", INVERT_MODES, "auto"), names)


def interpolate(explorer: Explorer, body: dict) -> Answer:
    """The decoded path between two ends (codes, points or images), ends included: a strip's images."""
    session = explorer.session()
    label = inputs.label(body, explorer.facts.classes)
    ends = [_end(explorer, body.get(name), name) for name in ("a", "b")]
    return session.interpolate(ends[0], ends[1], inputs.whole(body, "steps", 1, MAX_STEPS, 6),
                               inputs.choice(body, "method", METHODS, "lerp"), label,
                               inputs.choice(body, "invert", INVERT_MODES, "auto"))


def _end(explorer: Explorer, value: object, name: str) -> End:
    """One end of an interpolation: {"code": [...]}, {"point": [x, y]} or {"image": data URL}."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("code", "point", "image"):
        raise BadRequest(f"{name} must be an object with one of code, point or image")
    kind, given = next(iter(value.items()))
    if kind == "image":
        return End(image=inputs.image(given, f"{name}.image"))
    if kind == "point":
        return End(code=explorer.session().code_at(inputs.point(given, f"{name}.point")))
    return End(code=inputs.code(given, explorer.facts.latent_dim, f"{name}.code"))


GET_ROUTES: dict[str, Callable[[Explorer], Answer]] = {"/api/model": model, "/api/atlas": atlas}
POST_ROUTES: dict[str, Callable[[Explorer, dict], Answer]] = {
    "/api/decode": decode, "/api/sample": sample, "/api/encode": encode, "/api/score": score,
    "/api/interpolate": interpolate,
}


def get(explorer: Explorer, path: str) -> Answer | None:
    """The answer to GET `path`, or None when no route has that path."""
    route = GET_ROUTES.get(path)
    if route is not None:
        return route(explorer)
    found = TEST_IMAGE.fullmatch(path)
    return test_image(explorer, int(found.group(1))) if found else None


def known(path: str) -> bool:
    """Whether any route (of any method) has this path: the difference between 404 and 405."""
    return path in GET_ROUTES or path in POST_ROUTES or TEST_IMAGE.fullmatch(path) is not None
