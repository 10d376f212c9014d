"""Render an HTML page in headless Chromium and save a PNG screenshot: a real browser's view of `vae tour --html`.

    python scripts/screenshot_html.py tour/tour.html tour.png                 # the whole page, 1200 wide
    python scripts/screenshot_html.py tour/tour.html top.png --height 900     # only the first 900 pixels

Chromium's own --screenshot captures only its window (800 x 600 by default: the page's header) and, run
as root, refuses to start without --no-sandbox; this script passes both. Without --height it renders in a
window AUTO_HEIGHT pixels tall and cuts the picture below the page's end. Exits 2 when no Chromium is on
PATH (Debian's package: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 120
AUTO_HEIGHT = 16384  # the window for a whole page: Chromium's largest texture side on most machines
END_MARGIN = 24  # pixels of background kept below the page's last content
# Keep the browser off the network and quiet: the page must render from the file alone.
FLAGS = ("--headless=new", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--no-default-browser-check",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--force-device-scale-factor=1")


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(page: Path, out: Path, width: int, height: int, browser: str) -> None:
    """Render `page` at width x height CSS pixels and write the PNG to `out`."""
    with tempfile.TemporaryDirectory(prefix="vae-chromium-") as profile:
        command = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   f"--screenshot={out.resolve()}", page.resolve().as_uri()]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run as root inside its sandbox
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0 or not out.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{browser} exited with {done.returncode}: " + " | ".join(tail))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the HTML file")
    parser.add_argument("out", type=Path, help="the screenshot PNG to write")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=None,
                        help=f"window height; default: the whole page, up to {AUTO_HEIGHT} pixels")
    args = parser.parse_args()
    if not args.page.is_file():
        print(f"error: {args.page}: no such file", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print(f"error: no Chromium on PATH (looked for {', '.join(BROWSERS)}); apt-get install chromium",
              file=sys.stderr)
        return 2
    try:
        screenshot(args.page, args.out, args.width, args.height or AUTO_HEIGHT, browser)
        if args.height is None and not cut_below_content(args.out):
            print(f"warning: the page is taller than {AUTO_HEIGHT} pixels; the screenshot shows its top part",
                  file=sys.stderr)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(args.out)
    return 0


def cut_below_content(shot: Path) -> bool:
    """Cut the screenshot END_MARGIN pixels below its last row that is not all background (its bottom-right
    pixel's colour); False when content reaches the bottom, so the page may go on below the window."""
    from PIL import Image, ImageChops

    with Image.open(shot) as image:
        picture = image.convert("RGB")
    background = Image.new("RGB", picture.size, picture.getpixel((picture.width - 1, picture.height - 1)))
    box = ImageChops.difference(picture, background).getbbox()
    bottom = box[3] if box else 0
    if bottom + END_MARGIN >= picture.height:
        return False
    # Beside the file, then renamed over it: a reader never sees half a PNG.
    handle, temporary = tempfile.mkstemp(prefix=f".{shot.name}.", dir=shot.resolve().parent)
    try:
        with os.fdopen(handle, "wb") as file:
            picture.crop((0, 0, picture.width, bottom + END_MARGIN)).save(file, format="PNG")
        os.replace(temporary, shot)
    except BaseException:
        os.unlink(temporary)
        raise
    return True


if __name__ == "__main__":
    sys.exit(main())
