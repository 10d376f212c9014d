"""`vae tour --html`: one self-contained page (embedded PNGs, no script, no network), seen in a real browser."""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vaecli.figures.html_report import Figure, page

from tests.helpers.cli_checks import one_error_line
from tests.helpers.pages import traversal_figure

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "scripts" / "screenshot_html.py"


def _find_browser() -> str | None:
    """The script's own search for Chromium, loaded from its file (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("screenshot_html", SCREENSHOT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find_browser()


# The tour's four figures, the traversal, the manifold and the training curves.
EMBEDDED = 7
WINDOW = (1000, 1800)


@pytest.fixture(scope="module")
def tour_page(tiny_model, tmp_path_factory) -> Path:
    from tests.helpers.runner import run_cli

    folder = tmp_path_factory.mktemp("tour")
    result = run_cli("tour", "-m", tiny_model, "--device", "cpu", "--html", "-o", folder / "t")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str(folder / "t" / "tour.html")
    assert len(result.stdout.splitlines()) == 5
    return folder / "t" / "tour.html"


def test_the_page_embeds_every_figure_and_needs_nothing_else(tour_page):
    text = tour_page.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert not re.search(r"https?://", text)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", text)  # every source is a data: URI
    sources = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(sources) == EMBEDDED
    for source in sources:
        with Image.open(io.BytesIO(base64.b64decode(source))) as image:
            assert image.format == "PNG"
    for fact in ("latent dim", "architecture", "Latent traversals", "The manifold", "Training"):
        assert fact in text


def test_the_traversal_says_which_rows_it_shows(tour_page):
    alt, caption = traversal_figure(tour_page.read_text(encoding="utf-8"))
    assert alt.count("(KL ") == 4 and "All 4 dimensions are active" in caption


def test_metadata_is_shown_as_text_never_as_markup():
    html = page("<b>t</b>", "intro", [("command", "<script>alert(1)</script>")], [Figure("h", "c", b"png")]).decode()
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>t</b>" not in html


def test_an_unwritable_page_fails_before_the_work(cli, tiny_model, tmp_path):
    (tmp_path / "tour" / "tour.html").mkdir(parents=True)
    result = cli("tour", "-m", tiny_model, "--device", "cpu", "--html")
    assert result.exit_code == 2 and result.stdout == ""
    assert "tour.html" in one_error_line(result)
    assert not (tmp_path / "tour" / "latent.png").exists()


@pytest.mark.skipif(_find_browser() is None, reason="no Chromium on PATH (apt-get install chromium)")
def test_headless_chromium_renders_the_page(tour_page, tmp_path):
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [sys.executable, str(SCREENSHOT), str(tour_page), str(shot), "--width", str(WINDOW[0]),
         "--height", str(WINDOW[1])], capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == WINDOW
        grey = image.convert("L")
        low, high = grey.getextrema()
        assert high - low > 100  # text and figures, not a blank page
        histogram = grey.histogram()
        assert max(histogram) < 0.98 * sum(histogram)  # no single colour fills the page


@pytest.mark.slow
@pytest.mark.skipif(_find_browser() is None, reason="no Chromium on PATH (apt-get install chromium)")
def test_the_screenshot_holds_the_whole_page(tour_page, tmp_path):
    # Chromium's own --screenshot keeps its 800 x 600 window (the header); without --height the script
    # renders a window taller than the page and cuts below its end. As root it needs --no-sandbox, which
    # the script adds (this runs as whoever runs the tests, root in containers).
    shot = tmp_path / "whole.png"
    done = subprocess.run([sys.executable, str(SCREENSHOT), str(tour_page), str(shot)], capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no warning that the page went on below the window
    with Image.open(shot) as image:
        grey = image.convert("L")
    width, height = grey.size
    assert width == 1200 and 1800 < height < 16384
    background = grey.getpixel((width - 1, height - 1))
    rows = [grey.crop((0, y, width, y + 1)).getextrema() for y in range(height)]
    content = [y for y, (low, high) in enumerate(rows) if (low, high) != (background, background)]
    assert content and height - (content[-1] + 1) == 24  # cut 24 pixels below the page's last content
    assert content[-1] > 3000  # the page goes on past the 3000 pixels the script's window used to have
