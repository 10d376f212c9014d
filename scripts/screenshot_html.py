"""Render an HTML page in headless Chromium and save a PNG screenshot: a real browser's view of `vae tour --html`.

    python scripts/screenshot_html.py tour/tour.html tour.png --width 1200 --height 3000

Exits 2 when no Chromium is on PATH (Debian's package: apt-get install chromium).
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
    parser.add_argument("--height", type=int, default=3000)
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
        screenshot(args.page, args.out, args.width, args.height, browser)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
