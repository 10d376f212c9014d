"""`vae explore`'s page in a real browser: headless Chromium driven by chromedriver moves a slider, clicks the map,
draws a stroke, drops a file and draws samples, and every picture it then shows has the pixels the commands give
for the same code or file. Skips where selenium, Chromium or chromedriver is missing."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator

import numpy as np
import pytest

from tests.helpers.images import digit
from tests.test_explore import decoded_by_cli, explorer_for, pixels_of, serving

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
from selenium.common.exceptions import WebDriverException  # noqa: E402 - after the skip above
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
         "--window-size=1400,1600", "--force-device-scale-factor=1")
WAIT_S = 120  # the map's encodings and the first decode, on a busy machine
pytestmark = pytest.mark.slow  # Chromium starts in seconds, and the tiny model is trained first


def _chromium() -> webdriver.Chrome:
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no Chromium or chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root inside its sandbox
    try:
        return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    except WebDriverException as exc:
        pytest.skip(f"Chromium did not start under chromedriver: {str(exc).strip().splitlines()[0][:200]}")


@pytest.fixture(scope="module")
def page(request) -> Iterator[tuple[webdriver.Chrome, object]]:
    """The tiny model's page, open and settled: model loaded, map drawn, first code decoded."""
    driver = _chromium()  # first: a machine without a browser skips before the model is trained
    try:
        with serving(explorer_for(request.getfixturevalue("tiny_model"))) as server:
            driver.get(server.url)
            WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#legend li"))
            settle(driver)
            yield driver, server
            assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []
    finally:
        driver.quit()


def settle(driver: webdriver.Chrome) -> None:
    """Wait until every request the page made is answered and shown."""
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(
        "return document.body.dataset.pending === '0' && document.body.dataset.decoding !== '1'"))


def reconstructed_by_cli(cli, model, image, folder) -> np.ndarray:
    result = cli("reconstruct", image, "-m", model, "-o", folder / "recon", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    return pixels_of(folder / "recon" / f"recon-{image.stem}.png")


def _shown_code(driver) -> tuple[list[float], str]:
    view = driver.find_element(By.ID, "view")
    return json.loads(view.get_attribute("data-code")), view.get_attribute("src")


def test_moving_a_slider_decodes_its_code_as_vae_decode(page, cli, tiny_model, tmp_path):
    driver, _ = page
    slider = driver.find_element(By.CSS_SELECTOR, "#sliders input[type=range]")
    _, before = _shown_code(driver)
    ActionChains(driver).click_and_hold(slider).move_by_offset(70, 0).release().perform()
    settle(driver)
    code, image = _shown_code(driver)
    coordinate = int(slider.get_attribute("id")[1:]) - 1
    assert code[coordinate] == pytest.approx(float(slider.get_attribute("value")), abs=1e-6)
    assert code[coordinate] > 0.3 and image != before
    assert np.array_equal(pixels_of(image), decoded_by_cli(cli, tiny_model, code, tmp_path))


def test_clicking_the_map_decodes_that_point_and_sets_the_sliders(page, cli, tiny_model, tmp_path):
    driver, _ = page
    _, before = _shown_code(driver)
    ActionChains(driver).move_to_element_with_offset(driver.find_element(By.ID, "map"), 60, -70).click().perform()
    settle(driver)
    code, image = _shown_code(driver)
    assert image != before
    assert np.array_equal(pixels_of(image), decoded_by_cli(cli, tiny_model, code, tmp_path))
    for coordinate, value in enumerate(code):
        slider = driver.find_element(By.ID, f"z{coordinate + 1}")
        assert float(slider.get_attribute("value")) == pytest.approx(value, abs=0.006)  # the slider's step


def test_a_stroke_on_the_canvas_is_reconstructed_as_vae_reconstruct(page, cli, tiny_model, tmp_path):
    driver, _ = page
    pad = driver.find_element(By.ID, "pad")
    ActionChains(driver).move_to_element_with_offset(pad, -20, -80).click_and_hold().move_by_offset(10, 50) \
        .move_by_offset(10, 60).release().perform()
    settle(driver)
    recon = driver.find_element(By.ID, "recon")
    drawing = tmp_path / "drawing.png"
    drawing.write_bytes(base64.b64decode(recon.get_attribute("data-sent").split(",", 1)[1]))
    assert pixels_of(drawing).max() == 255  # the stroke is on the canvas that was sent
    assert np.array_equal(pixels_of(recon.get_attribute("src")), reconstructed_by_cli(cli, tiny_model, drawing,
                                                                                        tmp_path))
    scores = [row.text.split()[0] for row in driver.find_elements(By.CSS_SELECTOR, "#scores tr")[1:]]
    assert scores == ["nll", "elbo", "recon", "kl", "complexity", "regret"]
    driver.find_element(By.ID, "regret").click()  # asked for: it refits the posterior for seconds
    settle(driver)
    regret = driver.find_elements(By.CSS_SELECTOR, "#scores tr")[-1].text.split()
    assert regret[0] == "regret" and float(regret[1]) >= 0


DROP = """
const [data, name] = arguments;
const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
const files = new DataTransfer();
files.items.add(new File([bytes], name, { type: "image/png" }));
const target = document.getElementById("drop");
for (const kind of ["dragenter", "dragover", "drop"]) {
  target.dispatchEvent(new DragEvent(kind, { dataTransfer: files, bubbles: true, cancelable: true }));
}
"""


def test_a_dropped_file_is_reconstructed_as_vae_reconstruct(page, cli, tiny_model, tmp_path):
    driver, _ = page
    image = digit(tmp_path / "dropped.png")
    sent = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    driver.execute_script(DROP, base64.b64encode(image.read_bytes()).decode(), image.name)
    recon = driver.find_element(By.ID, "recon")
    WebDriverWait(driver, WAIT_S).until(lambda d: recon.get_attribute("data-sent") == sent)
    settle(driver)
    assert np.array_equal(pixels_of(recon.get_attribute("src")), reconstructed_by_cli(cli, tiny_model, image, tmp_path))
    assert np.array_equal(pixels_of(driver.find_element(By.ID, "seen").get_attribute("src")), pixels_of(image))


def test_samples_and_an_interpolation_between_them(page, cli, tiny_model, tmp_path):
    driver, _ = page
    driver.find_element(By.ID, "sample").click()
    settle(driver)
    shown = [img.get_attribute("src") for img in driver.find_elements(By.CSS_SELECTOR, "#samples img")]
    result = cli("sample", "-m", tiny_model, "-n", "8", "--seed", "0", "-o", tmp_path, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    assert len(shown) == 8
    for index, image in enumerate(shown, start=1):
        assert np.array_equal(pixels_of(image), pixels_of(tmp_path / f"sample-{index:04d}.png"))
    samples = driver.find_elements(By.CSS_SELECTOR, "#samples img")
    for end, sample in (("a", samples[0]), ("b", samples[1])):
        sample.click()  # its code goes on the sliders and is decoded
        settle(driver)
        driver.find_element(By.ID, f"view-to-{end}").click()
    driver.find_element(By.ID, "interpolate").click()
    settle(driver)
    strip = driver.find_elements(By.CSS_SELECTOR, "#strip img")
    assert len(strip) == 8 and strip[0].get_attribute("src") != strip[-1].get_attribute("src")
