"""The public Python API: vaecli.load / Model / train give what the commands give for the same inputs and seeds."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaecli
from vaecli.errors import SettingError

REPO = Path(__file__).resolve().parent.parent


def _png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _write_pngs(images: np.ndarray, folder: Path) -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i, pixels in enumerate(images):
        path = folder / f"img-{i}.png"
        Image.fromarray(pixels[0]).save(path)
        paths.append(str(path))
    return paths


def test_importing_vaecli_does_not_import_torch():
    code = "import sys, vaecli; print(vaecli.__version__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [vaecli.__version__, "False"]


def test_sample_and_encode_equal_the_commands(cli, tiny_model, tmp_path):
    model = vaecli.load(tiny_model)
    images = model.sample(5, seed=3)
    assert images.dtype == np.uint8 and images.shape == (5, 1, 28, 28)
    result = cli("sample", "-m", str(tiny_model), "-n", "5", "--seed", "3", "-o", str(tmp_path / "s"), "-q")
    assert result.exit_code == 0, result.stderr
    from_cli = np.stack([_png_pixels(Path(p)) for p in result.stdout.split()])
    np.testing.assert_array_equal(images, from_cli)

    paths = _write_pngs(images, tmp_path / "in")
    result = cli("encode", *paths, "-m", str(tiny_model), "-o", str(tmp_path / "z.npy"), "-q")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(model.encode(images), np.load(tmp_path / "z.npy"))


def test_decode_reconstruct_and_scores_equal_the_commands(cli, tiny_model, tmp_path):
    model = vaecli.load(tiny_model)
    images = model.sample(3, seed=1)
    codes = model.encode(images)
    np.save(tmp_path / "z.npy", codes)
    result = cli("decode", str(tmp_path / "z.npy"), "-m", str(tiny_model), "-o", str(tmp_path / "d"), "-q")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(model.decode(codes), np.stack([_png_pixels(Path(p)) for p in result.stdout.split()]))

    paths = _write_pngs(images, tmp_path / "in")
    result = cli("reconstruct", *paths, "-m", str(tiny_model), "-o", str(tmp_path / "r"), "--invert", "no", "-q")
    assert result.exit_code == 0, result.stderr
    recon = np.stack([_png_pixels(Path(p)) for p in result.stdout.split()])
    np.testing.assert_array_equal(model.reconstruct(images), recon)

    result = cli("score", *paths, "-m", str(tiny_model), "-s", "nll,elbo", "-k", "7", "--seed", "2",
                 "--invert", "no", "--format", "jsonl", "-q")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    scores = model.score(images, ("nll", "elbo"), iw_samples=7, seed=2)
    np.testing.assert_allclose(scores["nll"], [row["nll"] for row in rows], rtol=1e-6)
    np.testing.assert_allclose(scores["elbo"], [row["elbo"] for row in rows], rtol=1e-6)
    np.testing.assert_allclose(model.log_likelihood(images, iw_samples=7, seed=2), -scores["nll"])


def test_pil_and_tensor_images_in_and_out(tiny_model):
    model = vaecli.load(tiny_model)
    arrays = model.sample(2, seed=0)
    pictures = model.sample(2, seed=0, output="pil")
    assert [p.size for p in pictures] == [(28, 28)] * 2
    assert np.array_equal(np.stack([np.asarray(p)[None] for p in pictures]), arrays)
    tensors = torch.from_numpy(arrays)
    assert torch.equal(model.reconstruct(tensors), torch.from_numpy(model.reconstruct(arrays)))
    # A PIL image of another size and mode is converted as the commands convert files.
    big = Image.fromarray(np.kron(arrays[0, 0], np.ones((2, 2), dtype=np.uint8))).convert("RGB")
    assert model.encode(big).shape == (1, model.config.latent_dim)
    assert isinstance(model.reconstruct([big, big])[0], Image.Image)


def test_a_conditional_model_takes_a_label_by_number_or_name(tiny_conditional):
    model = vaecli.load(tiny_conditional)
    assert model.class_names[:3] == ["0", "1", "2"]
    assert np.array_equal(model.sample(2, seed=0, label=3), model.sample(2, seed=0, label="3"))
    assert not np.array_equal(model.sample(2, seed=0, label=3), model.sample(2, seed=0, label=8))
    with pytest.raises(SettingError, match="conditional"):
        model.sample(2)
    with pytest.raises(SettingError, match="unconditional"):
        model.score(model.sample(1, seed=0, label=1))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 1, 28, 28), dtype=np.float32), "uint8"),
    (np.zeros((2, 3, 28, 28), dtype=np.uint8), r"\(N, 1, 28, 28\)"),
])
def test_bad_images_are_one_clear_error(tiny_model, bad, message):
    model = vaecli.load(tiny_model)
    with pytest.raises(SettingError, match=message):
        model.encode(bad)
    with pytest.raises(SettingError, match="unknown score"):
        model.score(model.sample(1), ("bogus",))
    with pytest.raises(SettingError, match="label"):
        model.sample(1, label=2)


def test_a_bad_setting_from_python_names_the_keyword_not_a_flag():
    model = vaecli.load("mnist")
    with pytest.raises(SettingError, match="`temperature` must be a finite number") as caught:
        model.sample(2, temperature=-1)
    assert "--" not in caught.value.message
    with pytest.raises(SettingError, match="`n` must be a whole number"):
        model.sample(0)


def test_train_gives_what_vae_train_gives(cli, mnist_root, tmp_path):
    settings = ["--limit", "64", "--epochs", "2", "--hidden", "4", "--latent-dim", "2", "--batch-size", "32"]
    result = cli("train", "--data-root", str(mnist_root), *settings, "--no-report", "-q", "--device", "cpu",
                 "-o", str(tmp_path / "cli.safetensors"))
    assert result.exit_code == 0, result.stderr
    epochs = []
    model = vaecli.train(tmp_path / "api.safetensors", data_root=mnist_root, limit=64, epochs=2, hidden=4,
                         latent_dim=2, batch_size=32, device="cpu", on_epoch=epochs.append)
    assert [record.epoch for record in epochs] == [1, 2]
    reference = vaecli.load(tmp_path / "cli.safetensors")
    for (name, mine), (_, theirs) in zip(model.network.state_dict().items(), reference.network.state_dict().items(),
                                         strict=True):
        assert torch.equal(mine, theirs), name
    assert model.checkpoint.meta["command"] == reference.checkpoint.meta["command"]
    with pytest.raises(SettingError, match="exists"):
        vaecli.train(tmp_path / "api.safetensors", data_root=mnist_root, limit=64, epochs=1)
    with pytest.raises(SettingError, match="unknown setting"):
        vaecli.train(tmp_path / "other.safetensors", data_root=mnist_root, epoch=1)


def test_the_api_reads_well_in_help():
    for thing in (vaecli.Model, vaecli.load, vaecli.train, *(getattr(vaecli.Model, name) for name in
                  ("sample", "encode", "decode", "reconstruct", "log_likelihood", "score"))):
        assert thing.__doc__ and len(thing.__doc__.strip()) > 30, thing
    text = io.StringIO()
    sys.stdout, saved = text, sys.stdout
    try:
        help(vaecli.Model)
    finally:
        sys.stdout = saved
    assert "log_likelihood" in text.getvalue()


def _api_examples() -> list[str]:
    page = (REPO / "docs" / "api.md").read_text()
    return re.findall(r"^```python\n(.*?)^```$", page, re.S | re.M)


def test_the_api_page_examples_run(mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_ROOT", str(mnist_root))
    examples = _api_examples()
    assert len(examples) >= 4
    namespace: dict = {}
    for example in examples:  # one session, as a reader pastes them in order
        exec(compile(example, "docs/api.md", "exec"), namespace)  # noqa: S102 - our own page's examples
