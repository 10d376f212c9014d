"""`vae export`: the ONNX file runs in onnxruntime as vaecli runs the model, says what it holds, and every
refusal is one line with no file left behind."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaecli.config import ModelConfig, TrainConfig
from vaecli.model.networks import build_model
from vaecli.model.objective import output_to_image
from vaecli.store.bundled import BUNDLED_MODELS
from vaecli.store.checkpoint import build_metadata, save_checkpoint

from tests.helpers.cli_checks import one_error_line

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
onnxruntime = pytest.importorskip("onnxruntime")

import vaecli  # noqa: E402 - after the skips: the api loads torch

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "export.md"
PIXEL_TOLERANCE = 1e-4  # the contract: onnxruntime's values within 1e-4 of vaecli's, pixels in [0, 1]
ROWS = 5  # a batch size the export neither traced (2) nor checked (3) with

# Fresh untrained models, seeded: every architecture and likelihood the bundled models do not cover.
FRESH = {
    "hvae-logistic": (ModelConfig(arch="hvae", channels=3, height=16, width=16, latent_dim=4, hidden=8, groups=3,
                                  group_channels=2, likelihood="logistic", mixtures=2), None),
    "cnn-conditional": (ModelConfig(arch="cnn", height=16, width=16, latent_dim=3, hidden=4, classes=3,
                                    likelihood="gaussian"), ["cat", "dog", "eel"]),
    "mlp-mixture-prior": (ModelConfig(arch="mlp", height=8, width=8, latent_dim=2, hidden=8, prior_components=2),
                          None),
}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fresh")
    paths = {}
    for name, (config, classes) in FRESH.items():
        torch.manual_seed(1)
        model = build_model(config)
        with torch.no_grad():  # the posterior's zero-initialized layers too: outputs that tell weights apart
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        info = {"dataset_info": {"n_train": 9, "n_test": 9, "class_names": classes}} if classes else {}
        paths[name] = folder / f"{name}.safetensors"
        save_checkpoint(paths[name], model, build_metadata(TrainConfig(model=config, dataset="digits"), **info))
    return paths


def _export(cli, model: str | Path, out: Path, *args: str) -> Path:
    result = cli("export", str(model), "-o", out, *args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{out}\n"
    assert re.fullmatch(r"exported the [a-z ]+ of \S+ in [\d.]+ s; onnxruntime's outputs match the model's to "
                        r"within \S+\n", result.stderr), result.stderr
    return out


def _inputs(model: vaecli.Model, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Seeded uint8 noise images of the model's shape, N(0, I) codes, and labels cycling through its classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (rows, *model.config.image_shape), dtype=np.uint8)
    labels = np.arange(rows, dtype=np.int64) % model.config.classes if model.config.classes else None
    codes = rng.standard_normal((rows, model.config.latent_dim), dtype=np.float32)
    return images, codes, labels


def _run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def _vaecli_outputs(model: vaecli.Model, images: np.ndarray, codes: np.ndarray,
                    labels: np.ndarray | None) -> dict[str, np.ndarray]:
    """What vaecli's network gives: the posterior of x / 255, and the mean image before `vae decode` rounds it."""
    net, torch_labels = model.network, None if labels is None else torch.from_numpy(labels)
    with torch.no_grad():
        mean, logvar = net.encode(torch.from_numpy(images).float() / 255, torch_labels)
        decoded = output_to_image(net, net.decode(torch.from_numpy(codes), torch_labels))
    return {"mean": mean.numpy(), "logvar": logvar.numpy(), "decoded": decoded.numpy()}


def _compare(path: Path, model: vaecli.Model) -> float:
    """The file's outputs against vaecli's, the encoder's and the decoder's; the largest difference."""
    images, codes, labels = _inputs(model, ROWS)
    feeds = {"images": images, "codes": codes}
    if labels is not None:
        feeds |= {"image_labels": labels, "code_labels": labels}
    found, expected = _run(path, feeds), _vaecli_outputs(model, images, codes, labels)
    worst = max(float(np.abs(found[name] - expected[name]).max()) for name in expected)
    assert worst <= PIXEL_TOLERANCE, worst
    # The pixels `vae decode` writes and the means `vae encode` writes, through the public API (one label a call).
    for row in range(ROWS):
        label = None if labels is None else int(labels[row])
        pixels = model.decode(codes[row:row + 1], label=label)
        rounded = np.round(found["decoded"][row:row + 1] * 255).astype(np.uint8)
        assert np.abs(rounded.astype(int) - pixels).max() <= 1  # a value 1e-6 from a rounding tie may go either way
        assert (rounded != pixels).sum() <= 2
        np.testing.assert_allclose(found["mean"][row:row + 1], model.encode(images[row:row + 1], label=label),
                                   atol=PIXEL_TOLERANCE)
    assert all(value.shape[0] == ROWS for value in found.values())
    return worst


@pytest.mark.parametrize("name", list(FRESH))
def test_a_fresh_model_runs_in_onnxruntime_as_in_vaecli(cli, fresh, tmp_path, name):
    path = _export(cli, fresh[name], tmp_path / "both.onnx", "--part", "both")
    print(f"{name}: largest difference {_compare(path, vaecli.load(fresh[name])):.2g}")


def test_each_part_holds_its_own_inputs_and_outputs_and_the_default_is_the_decoder(cli, fresh, tmp_path):
    model = fresh["cnn-conditional"]
    wanted = {
        "decoder": (["codes", "code_labels"], ["decoded"]),
        "encoder": (["images", "image_labels"], ["mean", "logvar"]),
        "both": (["images", "image_labels", "codes", "code_labels"], ["mean", "logvar", "decoded"]),
    }
    for part, (inputs, outputs) in wanted.items():
        args = ("--part", part) if part != "decoder" else ()
        session = onnxruntime.InferenceSession(str(_export(cli, model, tmp_path / f"{part}.onnx", *args)))
        assert [i.name for i in session.get_inputs()] == inputs
        assert [o.name for o in session.get_outputs()] == outputs
        assert session.get_modelmeta().custom_metadata_map["part"] == part
    # A part a caller does not need takes zero rows; the one it needs any other count.
    codes = np.zeros((4, 3), np.float32)
    found = _run(tmp_path / "both.onnx", {"images": np.zeros((0, 1, 16, 16), np.uint8),
                                          "image_labels": np.zeros(0, np.int64), "codes": codes,
                                          "code_labels": np.array([0, 1, 2, 0])})
    assert [found[name].shape for name in ("mean", "logvar", "decoded")] == [(0, 3), (0, 3), (4, 1, 16, 16)]


def test_the_metadata_says_what_the_file_holds(cli, fresh, tmp_path):
    path = _export(cli, fresh["cnn-conditional"], tmp_path / "m.onnx", "--part", "both")
    proto = onnx.load(str(path))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert sorted(path.parent.iterdir()) == [path]  # one self-contained file, no temporary left
    held = path.read_bytes()  # the exporter's stack traces are dropped: no path of this machine
    assert all(os.fsencode(folder) not in held for folder in (REPO, Path(torch.__file__).parent.parent))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert all(isinstance(value, str) for value in meta.values())
    assert meta["vaecli_version"] == vaecli.__version__ and meta["source"] == "cnn-conditional.safetensors"
    assert (meta["part"], meta["arch"], meta["likelihood"], meta["layers"]) == ("both", "cnn", "gaussian", "1")
    assert json.loads(meta["image_shape"]) == [1, 16, 16] and meta["latent_dim"] == "3"
    assert json.loads(meta["class_names"]) == ["cat", "dog", "eel"]
    assert (meta["dataset"], json.loads(meta["binarized"])) == ("digits", False)
    assert json.loads(meta["model_config"])["classes"] == 3
    inputs, outputs = json.loads(meta["inputs"]), json.loads(meta["outputs"])
    assert inputs["images"] == {"dtype": "uint8", "shape": ["n_images", 1, 16, 16],
                                "holds": inputs["images"]["holds"]}
    assert list(inputs) == ["images", "image_labels", "codes", "code_labels"]
    assert outputs["decoded"]["shape"] == ["n_codes", 1, 16, 16] and list(outputs) == ["mean", "logvar", "decoded"]
    # The docs' table lists every key, in the file's order.
    table = re.search(r"^\| key \| value \|\n\|---\|---\|\n((?:\|.*\n)+)", DOCS.read_text(), re.M)
    assert table is not None and re.findall(r"^\| `(\w+)` \|", table.group(1), re.M) == list(meta)


def test_the_command_and_the_library_offer_the_same_parts():
    from vaecli.commands.export import Part
    from vaecli.store.onnx_file import PARTS

    assert tuple(part.value for part in Part) == PARTS


# --- Refusals: one line, before the export; nothing written --------------------------------------------------


def _refused(cli, tmp_path, args, code: int = 2) -> str:
    before = sorted(tmp_path.rglob("*"))
    result = cli("export", *map(str, args))
    assert result.exit_code == code and result.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # no file, no temporary, no folder
    return one_error_line(result)


def test_an_existing_file_is_kept_unless_forced(cli, fresh, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"mine")
    line = _refused(cli, tmp_path, [fresh["mlp-mixture-prior"], "-o", out])
    assert line == f"error: -o {out}: already exists; write elsewhere with -o, or replace it with --force"
    assert out.read_bytes() == b"mine"
    _export(cli, fresh["mlp-mixture-prior"], out, "--force")
    assert onnx.load(str(out)).graph.output[0].name == "decoded"


def test_outputs_that_cannot_be_written_are_refused_before_the_export(cli, fresh, tmp_path, monkeypatch):
    import torch.onnx

    def never(*args, **kwargs):
        raise AssertionError("the export started")

    monkeypatch.setattr(torch.onnx, "export", never)
    model = fresh["mlp-mixture-prior"]
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        assert "is a socket, not a file" in _refused(cli, tmp_path, [model, "-o", tmp_path / "sock"])
    assert "is a folder" in _refused(cli, tmp_path, [model, "-o", tmp_path / "folder"])
    assert "is not a folder" in _refused(cli, tmp_path, [model, "-o", tmp_path / "file" / "m.onnx"])
    assert "ends in /" in _refused(cli, tmp_path, [model, "-o", f"{tmp_path}/new.onnx/"])
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "permission denied" in _refused(cli, tmp_path, [model, "-o", locked / "m.onnx"])


def test_a_missing_folder_is_made_and_dash_writes_the_file_to_stdout(cli, fresh, tmp_path):
    out = _export(cli, fresh["mlp-mixture-prior"], tmp_path / "new" / "deeper" / "m.onnx")
    assert onnx.load(str(out)).metadata_props
    result = cli("export", fresh["mlp-mixture-prior"], "-o", "-", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout_bytes == out.read_bytes()


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_without_the_extra_one_line_names_it(cli, fresh, tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: find_spec says None
    line = _refused(cli, tmp_path, [fresh["mlp-mixture-prior"], "-o", tmp_path / "m.onnx"])
    assert line == (f"error: vae export needs the onnx extra ({missing} missing here); install it with "
                    "pip install 'vaecli[onnx]'")


@pytest.mark.parametrize(("part", "named"), [("decoder", "decoder"), ("encoder", "encoder"), ("both", "encoder")])
def test_a_model_the_exporter_cannot_trace_is_one_line_naming_the_part(cli, fresh, tmp_path, monkeypatch, part,
                                                                       named):
    import torch.onnx

    def fails(*args, **kwargs):
        raise RuntimeError("Failed to export.\x1b[96m advice\x1b[0m") from ValueError("aten::foo has no ONNX\nsecond")

    monkeypatch.setattr(torch.onnx, "export", fails)
    line = _refused(cli, tmp_path, [fresh["hvae-logistic"], "-o", tmp_path / "m.onnx", "--part", part], code=1)
    assert line == f"error: could not export the {named}: aten::foo has no ONNX"


def test_a_file_onnxruntime_does_not_run_as_the_model_is_refused(cli, fresh, tmp_path, monkeypatch):
    from vaecli.store import onnx_file

    monkeypatch.setattr(onnx_file, "TOLERANCE", -1.0)  # no file passes: as if onnxruntime computed otherwise
    line = _refused(cli, tmp_path, [fresh["mlp-mixture-prior"], "-o", tmp_path / "m.onnx"], code=1)
    assert line.startswith("error: the exported decoder: onnxruntime's outputs differ from the model's by ")


def test_a_bad_part_is_refused_by_the_library_by_its_name(fresh):
    from vaecli.errors import SettingError
    from vaecli.store.onnx_file import export_onnx

    with pytest.raises(SettingError, match=r"`part=all`: choose one of decoder, encoder, both"):
        export_onnx(vaecli.load(fresh["mlp-mixture-prior"]).checkpoint, "all")


# --- The bundled models, and the docs' example, in the real consumer ------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_every_bundled_model_runs_in_onnxruntime_as_in_vaecli(cli, tmp_path, name):
    worst = _compare(_export(cli, name, tmp_path / f"{name}.onnx", "--part", "both"), vaecli.load(name))
    print(f"{name}: largest difference {worst:.2g}")


@pytest.mark.slow
def test_the_docs_example_decodes_without_vaecli_as_vae_decode_does(cli, tmp_path):
    blocks = re.findall(r"^```python\n(.*?)^```$", DOCS.read_text(), re.S | re.M)
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) <= 11
    _export(cli, "mnist", tmp_path / "mnist.onnx")
    guard = "import sys; sys.modules['vaecli'] = None\n"  # vaecli cannot be imported in this process
    done = subprocess.run([sys.executable, "-c", guard + "import vaecli"], cwd=tmp_path, capture_output=True)
    assert done.returncode != 0 and b"ModuleNotFoundError" in done.stderr
    done = subprocess.run([sys.executable, "-c", guard + blocks[0]], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = cli("decode", "code.npy", "-m", "mnist", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "decoded.png") as ours, Image.open(tmp_path / "out" / "decoded-0001.png") as theirs:
        assert (ours.mode, ours.size) == (theirs.mode, theirs.size) == ("L", (28, 28))
        difference = np.abs(np.asarray(ours, dtype=int) - np.asarray(theirs, dtype=int))
    # Equal here; elsewhere a value within a few millionths of halfway between two levels may round the other way
    # (measured: 8 of 784,000 pixels of 1,000 codes), which the docs say.
    assert difference.max() <= 1 and np.count_nonzero(difference) <= 1
