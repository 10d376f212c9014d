"""`vae explore`'s server in-process: its routes answer with the pictures the commands make for the same code and
settings, refuse bad requests with a status and one line, serve nothing but the page's own routes, and carry on
with several clients at once."""

from __future__ import annotations

import base64
import csv
import http.client
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaecli.analysis.latent import load_model
from vaecli.data.datasets import load_dataset
from vaecli.explore.app import Explorer
from vaecli.explore.facts import read_facts
from vaecli.explore.server import MAX_BODY_BYTES, ExploreServer, open_server
from vaecli.explore.state import Session
from vaecli.store.bundled import PRETRAINED_DIR

from tests.helpers.images import digit

MAP_IMAGES = 120  # of the offline digits' test split: enough for a PCA, quick to encode


def explorer_for(path: Path, map_images: int = MAP_IMAGES, dataset: str = "digits") -> Explorer:
    """An Explorer as `vae explore` builds it, on the CPU, mapping the first test images of `dataset`."""
    facts = read_facts(path)
    return Explorer(facts, lambda: Session(load_model(path, "cpu"), facts),
                    lambda session: load_dataset(dataset, "test", shape=facts.shape, limit=map_images), map_images)


@contextmanager
def serving(explorer: Explorer) -> Iterator[ExploreServer]:
    """The explorer served on a free port from a thread; its map computed before the block runs."""
    server = open_server("127.0.0.1", 0, explorer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    explorer.start(on_failure=lambda exc: None)
    deadline = time.monotonic() + 300
    while explorer.status()["map"] not in ("ready", "failed") and explorer.failure is None:
        assert time.monotonic() < deadline, explorer.status()
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def call(server: ExploreServer, method: str, path: str, body: object = None,
         headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request on a new connection: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=120)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if data is not None else {}
    connection.request(method, path, body=data, headers={**sent, **(headers or {})})
    response = connection.getresponse()
    answer = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    connection.close()
    return answer


def post(server: ExploreServer, path: str, body: dict) -> dict:
    status, _, data = call(server, "POST", path, body)
    assert status == 200, data
    return json.loads(data)


def pixels_of(source: str | Path | bytes) -> np.ndarray:
    """An image's pixels, from a data: URL, PNG bytes or a file."""
    if isinstance(source, str) and source.startswith("data:"):
        source = base64.b64decode(source.split(",", 1)[1])
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return np.asarray(image).copy()


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def tiny(tiny_model) -> Iterator[ExploreServer]:
    with serving(explorer_for(tiny_model)) as server:
        yield server


@pytest.fixture(scope="module")
def hierarchical() -> Iterator[ExploreServer]:
    """The bundled MNIST hvae, mapping the offline digits (MNIST need not be here)."""
    with serving(explorer_for(PRETRAINED_DIR / "mnist.safetensors")) as server:
        yield server


@pytest.fixture(scope="module")
def conditional(tiny_conditional) -> Iterator[ExploreServer]:
    with serving(explorer_for(tiny_conditional)) as server:
        yield server


# --- the page and nothing else ---------------------------------------------------------------------------


def test_the_page_and_its_files_are_served_from_the_package(tiny):
    status, headers, page = call(tiny, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'src="/explore.js"' in page and b'href="/explore.css"' in page
    assert b"http" not in page.replace(b'name="viewport"', b"")  # no CDN, nothing from elsewhere
    assert "default-src 'none'" in headers["content-security-policy"]
    for path, kind in (("/explore.js", "text/javascript"), ("/explore.css", "text/css")):
        status, headers, body = call(tiny, "GET", path)
        assert status == 200 and headers["content-type"].startswith(kind) and len(body) > 1000


@pytest.mark.parametrize("path", [
    "/etc/passwd", "/../pyproject.toml", "/%2e%2e/%2e%2e/etc/passwd", "/page/index.html", "/index.html",
    "/explore.js/../../api.py", "/vaecli/explore/page/explore.js", "//etc/passwd", "/api/nothing",
    "/api/atlas/image/../../../etc/passwd", "/api/atlas/image/-1", "/api/atlas/image/99999", "/favicon.ico",
])
def test_any_other_path_is_not_found(tiny, path):
    status, headers, body = call(tiny, "GET", path)
    assert status == 404 and json.loads(body) == {"error": json.loads(body)["error"]}
    assert headers["content-type"] == "application/json"


def test_a_method_a_route_does_not_take_is_refused(tiny):
    assert call(tiny, "DELETE", "/")[0] == 405
    assert call(tiny, "POST", "/api/model", {})[0] == 405
    assert call(tiny, "GET", "/api/decode")[0] == 405


def test_another_host_name_is_refused_on_loopback(tiny):
    """A page elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) gets nothing."""
    assert call(tiny, "GET", "/api/model", headers={"Host": "attacker.example:80"})[0] == 421
    assert call(tiny, "GET", "/api/model", headers={"Host": f"localhost:{tiny.server_address[1]}"})[0] == 200


def test_the_model_facts_come_first(tiny):
    status, _, body = call(tiny, "GET", "/api/model")
    facts = json.loads(body)
    assert status == 200 and facts["latent_dim"] == 4 and facts["class_names"] == []
    assert facts["status"]["model"] == "ready" and facts["scores"] == ["nll", "elbo", "recon", "kl", "complexity",
                                                                      "regret"]


# --- every picture as the commands make it ----------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny", "hierarchical", "conditional"])
def test_decode_gives_the_pixels_of_vae_decode(request, fixture, cli, tmp_path):
    server = request.getfixturevalue(fixture)
    facts = json.loads(call(server, "GET", "/api/model")[2])
    codes = np.random.default_rng(1).normal(size=(3, facts["latent_dim"])).astype(np.float32)
    label = {"label": 3} if facts["class_names"] else {}
    for index, code in enumerate(codes):
        answer = post(server, "/api/decode", {"code": code.tolist(), **label})
        assert answer["code"] == code.tolist()
        np.save(tmp_path / f"code{index}.npy", code[None])
        model = server.explorer.session().checkpoint.path
        args = ["--label", "3"] if label else []
        result = cli("decode", tmp_path / f"code{index}.npy", "-m", model, "-o", tmp_path / str(index), *args,
                     "--device", "cpu", "-q")
        assert result.exit_code == 0, result.stderr
        assert pixels_of(answer["image"]).tobytes() == pixels_of(tmp_path / str(index) / "decoded-0001.png").tobytes()


def test_sample_gives_the_images_of_vae_sample(hierarchical, cli, tmp_path):
    answer = post(hierarchical, "/api/sample", {"n": 5, "seed": 11, "temperature": 0.7})
    result = cli("sample", "-m", "mnist", "-n", "5", "--seed", "11", "-t", "0.7", "-o", tmp_path, "--device", "cpu",
                 "-q")
    assert result.exit_code == 0, result.stderr
    for index, image in enumerate(answer["images"], start=1):
        assert np.array_equal(pixels_of(image), pixels_of(tmp_path / f"sample-{index:04d}.png"))
    assert len(answer["codes"]) == 5 and len(answer["points"]) == 5


def test_a_dropped_file_is_read_as_vae_reconstruct_and_vae_encode_read_it(hierarchical, cli, tmp_path):
    """A black-on-white drawing: inverted by `invert=auto`, as the commands do."""
    drawing = tmp_path / "dark-on-light.png"
    Image.fromarray(255 - pixels_of(digit(tmp_path / "bar.png"))).resize((40, 40)).save(drawing)
    answer = post(hierarchical, "/api/encode", {"image": data_url(drawing)})
    result = cli("reconstruct", drawing, "-m", "mnist", "-o", tmp_path / "out", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    assert np.array_equal(pixels_of(answer["reconstruction"]), pixels_of(tmp_path / "out" / "recon-dark-on-light.png"))
    encoded = cli("encode", drawing, "-m", "mnist", "--device", "cpu", "-q")
    assert np.load(io.BytesIO(encoded.stdout_bytes))[0].tolist() == answer["code"]
    seen = pixels_of(answer["input"])
    assert seen.shape == (28, 28) and seen[0, 0] == 0  # inverted: light strokes on dark, as the model wants
    assert len(answer["point"]) == 2


def test_scores_are_those_of_vae_score(tiny, cli, tmp_path):
    image = digit(tmp_path / "bar.png")
    every = ["nll", "elbo", "recon", "kl", "complexity", "regret"]
    answer = post(tiny, "/api/score", {"image": data_url(image), "scores": every})
    result = cli("score", image, "-m", tiny.explorer.session().checkpoint.path, "-s", ",".join(every), "--format",
                 "jsonl", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    expected = json.loads(result.stdout)
    assert list(answer["scores"]) == every
    for name, value in answer["scores"].items():
        assert value == pytest.approx(expected[name], abs=2e-6)
    quick = post(tiny, "/api/score", {"image": data_url(image)})  # regret refits for seconds: only when named
    assert quick["scores"] == {name: answer["scores"][name] for name in every[:-1]}


def test_two_images_interpolate_as_vae_interpolate(hierarchical, cli, tmp_path):
    first = digit(tmp_path / "a.png")
    second = tmp_path / "b.png"
    Image.open(first).rotate(90).save(second)
    answer = post(hierarchical, "/api/interpolate", {"a": {"image": data_url(first)}, "b": {"image": data_url(second)},
                                                     "steps": 3, "method": "slerp"})
    result = cli("interpolate", first, second, "--steps", "3", "--method", "slerp", "--frames", tmp_path / "frames",
                 "-m", "mnist", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    frames = sorted((tmp_path / "frames").glob("frame-*.png"))  # A, recon(A), 3 steps, recon(B), B
    assert len(answer["images"]) == 5 and len(frames) == 7
    for image, frame in zip(answer["images"], frames[1:-1], strict=True):
        assert np.array_equal(pixels_of(image), pixels_of(frame))


def test_two_codes_interpolate_as_their_path_decoded(tiny, cli, tmp_path):
    a, b = [1.0, -1.0, 0.5, 0.0], [-1.0, 2.0, 0.0, 1.0]
    answer = post(tiny, "/api/interpolate", {"a": {"code": a}, "b": {"code": b}, "steps": 2, "method": "lerp"})
    codes = np.array(answer["codes"], dtype=np.float32)
    assert codes[0].tolist() == a and codes[-1].tolist() == b and len(codes) == 4
    assert np.allclose(codes[1], (2 * np.array(a) + np.array(b)) / 3, atol=1e-6)
    for code, image in zip(codes, answer["images"], strict=True):
        decoded = post(tiny, "/api/decode", {"code": code.tolist()})
        assert decoded["image"] == image


# --- the map ----------------------------------------------------------------------------------------------


def test_the_map_places_the_test_images_as_vae_project(tiny, cli, tmp_path):
    status, _, body = call(tiny, "GET", "/api/atlas")
    atlas = json.loads(body)
    assert status == 200 and atlas["ready"] and len(atlas["points"]) == MAP_IMAGES
    result = cli("project", "-m", tiny.explorer.session().checkpoint.path, "--dataset", "digits", "--limit",
                 str(MAP_IMAGES), "-o", tmp_path / "map.png", "--points", tmp_path / "map.csv", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "map.csv").open()))
    for (x, y, label), row in zip(atlas["points"], rows, strict=True):
        assert (x, y, label) == pytest.approx((float(row["x"]), float(row["y"]), int(row["label"])), abs=1e-4)
    assert sorted(atlas["order"]) == [0, 1, 2, 3] and atlas["class_names"] == [str(d) for d in range(10)]
    kl = atlas["kl"]
    assert all(kl[a] >= kl[b] for a, b in zip(atlas["order"], atlas["order"][1:], strict=False))  # largest first


def test_a_point_of_the_map_decodes_to_the_code_that_lies_there(tiny):
    answer = post(tiny, "/api/decode", {"point": [0.5, -0.25]})
    assert answer["point"] == pytest.approx([0.5, -0.25], abs=1e-5)
    assert post(tiny, "/api/decode", {"code": answer["code"]})["image"] == answer["image"]


def test_hovering_a_dot_shows_its_test_image(tiny):
    status, headers, png = call(tiny, "GET", "/api/atlas/image/7")
    test_set = load_dataset("digits", "test", shape=(1, 28, 28), limit=8)
    assert status == 200 and headers["content-type"] == "image/png"
    assert np.array_equal(pixels_of(png), test_set.images[7, 0].numpy())


# --- conditional models -----------------------------------------------------------------------------------


def test_a_conditional_model_takes_a_class_and_has_no_scores(conditional, cli, tmp_path):
    answer = post(conditional, "/api/sample", {"n": 3, "seed": 2, "label": 7})
    result = cli("sample", "-m", conditional.explorer.session().checkpoint.path, "-n", "3", "--seed", "2",
                 "--label", "7", "-o", tmp_path, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    assert all(np.array_equal(pixels_of(image), pixels_of(tmp_path / f"sample-{i:04d}.png"))
               for i, image in enumerate(answer["images"], start=1))
    status, _, body = call(conditional, "POST", "/api/decode", {"code": [0, 0, 0, 0]})
    assert status == 400 and "label" in json.loads(body)["error"]
    status, _, body = call(conditional, "POST", "/api/score", {"image": data_url(digit(tmp_path / "d.png"))})
    assert status == 400 and "conditional" in json.loads(body)["error"]


# --- bad requests: a status and one short line ------------------------------------------------------------


BAD = [
    ("/api/decode", b"{not json", "not valid JSON"),
    ("/api/decode", b"[1, 2]", "JSON object"),
    ("/api/decode", b'{"code": [NaN, 0, 0, 0]}', "not valid JSON"),
    ("/api/decode", b'{"code": [0, 0, 0]}', "list of 4 numbers"),
    ("/api/decode", b'{"code": [0, 0, 0, 1e300]}', "list of 4 numbers"),
    ("/api/decode", b'{"code": ["a", 0, 0, 0]}', "list of 4 numbers"),
    ("/api/decode", b'{"code": [0, 0, 0, 0], "label": 2}', "not conditional"),
    ("/api/decode", b'{"point": [1]}', "[x, y]"),
    ("/api/decode", b"\xff\xfe", "not valid JSON"),
    ("/api/sample", b'{"n": 100000}', "n must be"),
    ("/api/sample", b'{"n": true}', "n must be"),
    ("/api/sample", b'{"temperature": -1}', "temperature"),
    ("/api/sample", b'{"seed": 1.5}', "seed"),
    ("/api/encode", b'{"image": "http://example.com/x.png"}', "data: URL"),
    ("/api/score", b'{"image": "data:image/png;base64,AAAA", "scores": ["nll", "bogus"]}', "scores must be"),
    ("/api/encode", b'{"image": "data:image/png;base64,@@@"}', "base64"),
    ("/api/encode", b'{"image": "data:image/png;base64,aGVsbG8="}', "not a readable image"),
    ("/api/encode", b'{"image": "data:image/png;base64,AAAA", "invert": "maybe"}', "invert"),
    ("/api/interpolate", b'{"a": {"code": [0, 0, 0, 0]}}', "b must be"),
    ("/api/interpolate", b'{"a": {"code": [0, 0, 0, 0]}, "b": {"code": [1, 1, 1, 1]}, "steps": 0}', "steps"),
    ("/api/interpolate", b'{"a": {"code": [0,0,0,0]}, "b": {"code": [1,1,1,1]}, "method": "x"}', "method"),
]


@pytest.mark.parametrize(("path", "body", "words"), BAD)
def test_a_bad_request_gets_400_and_one_line(tiny, path, body, words):
    status, headers, answer = call(tiny, "POST", path, body)
    error = json.loads(answer)["error"]
    assert status == 400 and headers["content-type"] == "application/json", answer
    assert words in error and "\n" not in error and "Traceback" not in error and len(error) < 200


def test_a_body_without_json_type_or_length_is_refused(tiny):
    assert call(tiny, "POST", "/api/decode", b"{}", headers={"Content-Type": "text/plain"})[0] == 415
    connection = socket.create_connection(("127.0.0.1", tiny.server_address[1]), timeout=30)
    connection.sendall(b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")
    assert connection.recv(100).startswith(b"HTTP/1.1 411")
    connection.close()


def test_a_body_over_the_limit_is_refused_before_it_is_read(tiny):
    """The server answers 413 from the headers alone and closes the connection: nothing is buffered."""
    connection = socket.create_connection(("127.0.0.1", tiny.server_address[1]), timeout=30)
    connection.sendall(b"POST /api/encode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n{" % (MAX_BODY_BYTES + 1))
    reply = b""
    while chunk := connection.recv(4096):
        reply += chunk
    connection.close()
    assert reply.startswith(b"HTTP/1.1 413") and b"Connection: close" in reply and b"MiB" in reply


def test_a_body_within_the_limit_is_read(tiny):
    padding = "A" * (MAX_BODY_BYTES - 200)
    status, _, body = call(tiny, "POST", "/api/encode", {"image": "data:image/png;base64," + padding})
    assert status == 400 and "not a readable image" in json.loads(body)["error"]


# --- several tabs at once ---------------------------------------------------------------------------------


def test_several_clients_at_once_get_their_own_answers(tiny):
    codes = [[i / 4, -i / 8, 0.5, -0.5] for i in range(12)]
    alone = [post(tiny, "/api/decode", {"code": code})["image"] for code in codes]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda code: post(tiny, "/api/decode", {"code": code})["image"], codes * 3))
    assert together == alone * 3


def test_one_connection_serves_a_drag_of_requests(tiny):
    """Keep-alive: a slider's moves reuse one connection, and an error does not end it."""
    connection = http.client.HTTPConnection("127.0.0.1", tiny.server_address[1], timeout=60)
    for value in (-1.0, 0.0, 1.0):
        connection.request("POST", "/api/decode", body=json.dumps({"code": [value, 0, 0, 0]}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["code"][0] == value
    connection.request("POST", "/api/decode", body=b"{}", headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 400 and response.getheader("Connection") != "close"
    response.read()
    connection.request("GET", "/api/model")
    assert connection.getresponse().status == 200
    connection.close()


# --- colour, a 2-D latent, a fitted prior -----------------------------------------------------------------


def test_a_colour_model_with_a_fitted_prior_and_a_2d_latent(cli, tmp_path):
    """Its pictures are RGB and still the commands'; its samples come from the mixture; its map is the latent."""
    rng = np.random.default_rng(0)
    for index in range(40):
        kind = tmp_path / "pictures" / ("warm" if index % 2 else "cold")
        kind.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(kind / f"{index}.png")
    folder, plain, fitted = tmp_path / "pictures", tmp_path / "rgb.safetensors", tmp_path / "rgb-prior.safetensors"
    trained = cli("train", "--dataset", folder, "--channels", "3", "--image-size", "16", "--arch", "mlp",
                  "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--batch-size", "16", "-o", plain,
                  "--device", "cpu", "-q", "--no-report")
    assert trained.exit_code == 0, trained.stderr
    prior = cli("fit-prior", "-m", plain, "-o", fitted, "-c", "2", "--device", "cpu", "-q")
    assert prior.exit_code == 0, prior.stderr
    with serving(explorer_for(fitted, dataset=str(folder))) as server:
        facts = json.loads(call(server, "GET", "/api/model")[2])
        assert (facts["channels"], facts["height"], facts["width"]) == (3, 16, 16) and "mixture" in facts["prior"]
        sampled = post(server, "/api/sample", {"n": 3, "seed": 5})
        assert cli("sample", "-m", fitted, "-n", "3", "--seed", "5", "-o", tmp_path / "s", "--device", "cpu",
                   "-q").exit_code == 0
        for index, image in enumerate(sampled["images"], start=1):
            assert np.array_equal(pixels_of(image), pixels_of(tmp_path / "s" / f"sample-{index:04d}.png"))
        decoded = post(server, "/api/decode", {"code": [0.5, -1.5]})
        assert pixels_of(decoded["image"]).shape == (16, 16, 3) and decoded["point"] == [0.5, -1.5]
        assert np.array_equal(pixels_of(decoded["image"]), decoded_by_cli(cli, fitted, [0.5, -1.5], tmp_path))
        picture = next(folder.rglob("*.png"))
        encoded = post(server, "/api/encode", {"image": data_url(picture)})
        assert cli("reconstruct", picture, "-m", fitted, "-o", tmp_path / "r", "--device", "cpu", "-q").exit_code == 0
        assert np.array_equal(pixels_of(encoded["reconstruction"]),
                              pixels_of(tmp_path / "r" / f"recon-{picture.stem}.png"))
        atlas = json.loads(call(server, "GET", "/api/atlas")[2])
        assert atlas["ready"] and atlas["class_names"] == ["cold", "warm"] and "z1" in atlas["xlabel"]


def decoded_by_cli(cli, model: Path, code: list[float], folder: Path) -> np.ndarray:
    np.save(folder / "code.npy", np.array([code], dtype=np.float32))
    result = cli("decode", folder / "code.npy", "-m", model, "-o", folder / "decoded", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    return pixels_of(folder / "decoded" / "decoded-0001.png")
