"""Reading the figures back out of a `vae tour --html` page."""

from __future__ import annotations

import re


def traversal_figure(page: str) -> tuple[str, str]:
    """The page's traversal: its image's alt text (the rows shown) and its caption."""
    found = re.search(r'<h2>Latent traversals</h2>\s*<figure><img src="[^"]*" alt="([^"]*)">\s*'
                      r"<figcaption>([^<]*)</figcaption>", page)
    assert found, "no traversal figure on the page"
    return found.group(1), found.group(2)
