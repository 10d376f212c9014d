"""One self-contained HTML page: figures embedded as data: URIs, inline CSS, no script and no network."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; background: #fff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table.facts { border-collapse: collapse; font-size: 0.92em; }
table.facts th { text-align: left; padding: 0.15em 1.2em 0.15em 0; vertical-align: top; white-space: nowrap; }
table.facts td { padding: 0.15em 0; overflow-wrap: anywhere; }
figure { margin: 0.8em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; margin-top: 0.3em; }
"""


@dataclass
class Figure:
    """One PNG on the page, under its heading, with a caption."""

    heading: str
    caption: str
    png: bytes
    alt: str = ""  # what the picture shows, for readers who cannot see it; the heading when empty


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def page(title: str, intro: str, facts: Sequence[tuple[str, str]], figures: Sequence[Figure]) -> bytes:
    """The page as UTF-8 bytes: a title, a line of introduction, a table of facts, then every figure."""
    escape = html.escape
    rows = "\n".join(f"<tr><th>{escape(key)}</th><td>{escape(value)}</td></tr>" for key, value in facts)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style></head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(intro)}</p>",
        '<h2>The model</h2>',
        f'<table class="facts">\n{rows}\n</table>',
    ]
    for figure in figures:
        parts += [
            f"<h2>{escape(figure.heading)}</h2>",
            f'<figure><img src="{data_uri(figure.png)}" alt="{escape(figure.alt or figure.heading, quote=True)}">',
            f"<figcaption>{escape(figure.caption)}</figcaption></figure>",
        ]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts).encode("utf-8")
