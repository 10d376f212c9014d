"""`vae explore`: how live the page feels. A slider move end to end (POST /api/decode over HTTP, keep-alive, on the
server the page talks to) against a bare decode call in the same process, per bundled model; and the start-up,
from launching `vae explore` to its URL, its first page served, the first decode answered and the map ready.

Usage: python benchmarks/explore.py [--requests 200] [--starts 3] [--threads 2] [--models mnist ...]
Goals: a slider move <= 50 ms (median and p95) on 2 CPU cores; the page within 2 s of the command.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import torch

from vaecli.analysis.latent import decode_to_pixels, load_model
from vaecli.data.datasets import load_dataset
from vaecli.data.images import png_bytes
from vaecli.explore.app import Explorer
from vaecli.explore.facts import read_facts
from vaecli.explore.server import open_server
from vaecli.explore.state import Session
from vaecli.store.bundled import BUNDLED_MODELS, PRETRAINED_DIR

MAP_IMAGES = 500  # the sliders' route also places the code on the map: give it one, as the page has


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """(median, 95th percentile) in milliseconds."""
    ordered = sorted(seconds)
    return 1000 * statistics.median(ordered), 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def bare_decode(session: Session, code: torch.Tensor, label: int | None, png: bool) -> float:
    """The baseline: one decode call alone (with `png`, and the PNG encoding the page's answer carries)."""
    start = time.perf_counter()
    pixels = decode_to_pixels(session.model, code[None], None, None if label is None else torch.tensor([label]))
    if png:
        png_bytes(pixels[0])
    return time.perf_counter() - start


def slider_move(connection: http.client.HTTPConnection, code: torch.Tensor, label: int | None) -> float:
    """One move of a drag: POST /api/decode on the page's keep-alive connection, the answer read in full."""
    body = json.dumps({"code": code.tolist(), **({} if label is None else {"label": label})})
    start = time.perf_counter()
    connection.request("POST", "/api/decode", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    seconds = time.perf_counter() - start
    assert response.status == 200 and answer["image"].startswith("data:image/png"), answer
    return seconds


def measure_model(name: str, requests: int) -> dict:
    path = PRETRAINED_DIR / f"{name}.safetensors"
    facts = read_facts(path)
    explorer = Explorer(facts, lambda: Session(load_model(path, "cpu"), facts),
                        lambda session: load_dataset("digits", "test", shape=facts.shape, limit=MAP_IMAGES),
                        MAP_IMAGES)
    server = open_server("127.0.0.1", 0, explorer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    explorer.start(on_failure=lambda exc: None)
    session = explorer.session()
    while explorer.status()["map"] not in ("ready", "failed"):
        time.sleep(0.05)
    label = 0 if facts.classes else None
    codes = torch.randn(requests + 20, facts.latent_dim, generator=torch.Generator().manual_seed(0))
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    route, bare, png = [], [], []
    for index, code in enumerate(codes):  # interleaved, so that a busy moment of the machine hits all three
        times = slider_move(connection, code, label), bare_decode(session, code, label, False), \
            bare_decode(session, code, label, True)
        if index >= 20:  # the first calls allocate: a warm-up
            for found, seconds in zip((route, bare, png), times, strict=True):
                found.append(seconds)
    connection.close()
    server.shutdown()
    server.server_close()
    return {"model": name, "arch": facts.arch, "route": percentiles(route), "bare": percentiles(bare),
            "bare_png": percentiles(png)}


def measure_start(model: str) -> dict:
    """One launch of `vae explore`: seconds to its URL, the page, the model (the first decode) and the map."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vaecli", "explore", "-m", model, "--port", "0",
                                "--device", "cpu", "-q"], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "VAE_OFFLINE": "1"})
    try:
        url = process.stdout.readline().strip()
        printed = time.perf_counter() - start
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
        page = time.perf_counter() - start
        request = urllib.request.Request(url + "api/decode", data=json.dumps({"code": [0.0] * 32}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
        decoded = time.perf_counter() - start
        while True:
            with urllib.request.urlopen(url + "api/atlas", timeout=60) as response:
                status = json.loads(response.read())["status"]
            if status["map"] in ("ready", "failed"):
                break
            time.sleep(0.05)
        mapped = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(60)
    return {"url": printed, "page": page, "decode": decoded, "map": mapped, "map_state": status["map"]}


def import_torch_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(BUNDLED_MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"{'model':26} {'arch':7} {'slider move (HTTP)':>22} {'bare decode':>18} {'decode + PNG':>18}")
    print(f"{'':34} {'median / p95 ms':>22} {'median / p95 ms':>18} {'median / p95 ms':>18}")
    for name in args.models:
        found = measure_model(name, args.requests)
        cells = [f"{found[key][0]:7.2f} / {found[key][1]:6.2f}" for key in ("route", "bare", "bare_png")]
        print(f"{name:26} {found['arch']:7} {cells[0]:>22} {cells[1]:>18} {cells[2]:>18}")
    torch_s = statistics.median(import_torch_seconds() for _ in range(args.starts))
    starts = [measure_start("mnist") for _ in range(args.starts)]
    print(f"\nstart-up of `vae explore -m mnist` (medians of {args.starts}; map of MNIST's first 2,000 test images: "
          f"{starts[0]['map_state']})")
    print(f"python -c 'import torch'      {torch_s:6.2f} s (baseline)")
    for key, what in (("url", "URL on stdout"), ("page", "first page served"), ("decode", "first decode answered"),
                      ("map", "map and KL ready")):
        goal = " (goal <= 2 s)" if key == "page" else ""
        print(f"{what:29} {statistics.median(s[key] for s in starts):6.2f} s{goal}")


if __name__ == "__main__":
    main()
