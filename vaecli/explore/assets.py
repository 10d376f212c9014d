"""The page's files, read from the package: a fixed table, so no request path ever names a file on disk."""

from __future__ import annotations

import functools
from importlib import resources

# Route -> (file in vaecli/explore/page, its content type). Nothing else is served from the package.
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/explore.js": ("explore.js", "text/javascript; charset=utf-8"),
    "/explore.css": ("explore.css", "text/css; charset=utf-8"),
}


def asset(route: str) -> tuple[bytes, str] | None:
    """The bytes and content type of the page file at `route`, or None for any other route."""
    entry = PAGE_FILES.get(route)
    return None if entry is None else (_read(entry[0]), entry[1])


@functools.cache
def _read(name: str) -> bytes:
    # Through importlib.resources, so the page works from a wheel or a zip as from a source tree.
    return resources.files("vaecli.explore").joinpath("page").joinpath(name).read_bytes()
