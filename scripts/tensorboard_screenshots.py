"""Draw docs/tensorboard-scalars.png and docs/tensorboard-projector.png from a real `tensorboard --logdir`.

    VAE_DATA_ROOT=/data python scripts/tensorboard_screenshots.py            # train, serve, shoot: about 2 minutes
    python scripts/tensorboard_screenshots.py --logdir tb --out /tmp/shots    # the runs of an existing folder

Without --logdir it trains two short runs (cnn and mlp, 5 epochs on 5,000 MNIST images) with
`vae train --tensorboard` into a temporary folder. It then starts TensorBoard on a free loopback port, opens the
SCALARS dashboard (the loss, reconstruction and KL charts of both runs) and the PROJECTOR (the first run's test
codes, coloured by class) in headless Chromium through selenium and /usr/bin/chromedriver, and writes both
pictures as palette PNGs. Not a test: the pictures depend on the browser's fonts and WebGL.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

WINDOW = (1400, 900)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# WebGL without a GPU (the projector draws with it): ANGLE on SwiftShader, Chromium's software renderer.
FLAGS = ("--headless=new", "--no-sandbox", "--hide-scrollbars", "--force-device-scale-factor=1", "--use-gl=angle",
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-background-networking",
         "--disable-extensions", "--mute-audio", "--no-first-run")
RUNS = (("cnn", "cnn.safetensors"), ("mlp", "mlp.safetensors"))
TRAIN = ("--dataset", "mnist", "--limit", "5000", "--epochs", "5", "--device", "cpu", "--no-report", "-q")
# The train and test curves of the three numbers the epoch line leads with, unsmoothed.
SCALARS = "#scalars&tagFilter=%5E(loss%7Crecon%7Ckl)%2F&_smoothingWeight=0"
PROJECTOR = "#projector"
SETTLE_S = 12  # the dashboards fetch and draw after the page loads
COLOURS = 256  # a palette PNG of the screenshot stays far under the docs' 300 KB


def train(work: Path) -> None:
    """The runs, in `work`: TensorBoard shows the log folder as given, `tb`."""
    for arch, name in RUNS:
        command = ["vae", "train", "--arch", arch, *TRAIN, "-o", f"runs/{name}", "--tensorboard", "tb"]
        print("$", " ".join(command), file=sys.stderr)
        subprocess.run([sys.executable, "-m", "vaecli", *command[1:]], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)


def serve(logdir: Path, cwd: Path, log: Path, timeout_s: float = 60) -> tuple[subprocess.Popen, str]:
    """TensorBoard on a loopback port it picks itself, and its address once its log says it is up."""
    with open(log, "w") as sink:  # a file, not a pipe that nobody reads and that would fill up
        server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                                   "127.0.0.1", "--port", "0"], cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", log.read_text())
        if found:
            return server, found.group(1)
        time.sleep(0.5)
    server.terminate()
    raise RuntimeError(f"tensorboard did not start: {log.read_text()[-500:]}")


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The page's own size, whatever the headless window's frame takes.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    return driver


def shoot_scalars(driver: webdriver.Chrome, address: str, out: Path) -> None:
    driver.get(address + SCALARS)
    time.sleep(SETTLE_S)
    driver.save_screenshot(str(out))


COLOUR_BY_CLASS = """
const projector = document.querySelector('vz-projector-dashboard').shadowRoot.querySelector('vz-projector');
const panel = projector.shadowRoot.querySelector('#data-panel');
if (!(panel.colorOptions || []).some(option => option.name === 'class')) return false;
panel.selectedColorOptionName = 'class';
return true;
"""


def shoot_projector(driver: webdriver.Chrome, address: str, out: Path, timeout_s: float = 120) -> None:
    """The projector colours the codes by the metadata's class column once it has loaded them."""
    driver.get(address + PROJECTOR)
    deadline = time.monotonic() + timeout_s
    while True:
        driver.switch_to.default_content()
        try:
            driver.switch_to.frame(driver.find_element("tag name", "iframe"))  # the plugin's page
            driver.switch_to.frame(driver.find_element("tag name", "iframe"))  # the projector's own
            if driver.execute_script(COLOUR_BY_CLASS):
                break
        except Exception:  # noqa: BLE001 - not loaded yet: the frames and elements appear as it loads
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the projector did not load its codes")
        time.sleep(1)
    driver.switch_to.default_content()
    time.sleep(SETTLE_S)  # WebGL in software takes a while to draw 2,000 thumbnails
    driver.save_screenshot(str(out))


def shrink(path: Path) -> None:
    """A palette PNG: screenshots have few colours, and the docs' pictures stay small."""
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(COLOURS, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, help="a folder of `vae train --tensorboard` runs; default: train two")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vae-tensorboard-") as scratch:
        work = Path(scratch)
        if args.logdir is None:
            train(work)
        logdir = Path("tb") if args.logdir is None else args.logdir.resolve()
        server, address = serve(logdir, work, work / "tensorboard.log")
        try:
            driver = browser()
            try:
                shots = (args.out / "tensorboard-scalars.png", args.out / "tensorboard-projector.png")
                shoot_scalars(driver, address, shots[0])
                shoot_projector(driver, address, shots[1])
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait(timeout=30)
    for shot in shots:
        shrink(shot)
        print(f"{shot} ({os.path.getsize(shot) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
