"""scripts/photo_crops.py: crops of whole photographs in train/ or test/, never both, repeatable from the seed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "photo_crops.py"
PHOTOS = {"astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "stereo_motorcycle", "china", "flower"}  # scikit-image's eight and scikit-learn's two
HELD_OUT = {"chelsea", "coffee"}


def _run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(folder), "--per-photo", "3", *args],
                          capture_output=True, text=True, timeout=300)


def _crops(folder: Path) -> dict[Path, bytes]:
    return {f.relative_to(folder): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    pytest.importorskip("skimage")
    folder = tmp_path_factory.mktemp("crops") / "photos"
    run = _run(folder)
    assert run.returncode == 0, run.stderr
    assert "24 train crops of 8 photographs, 6 test crops of 2 (chelsea, coffee)" in run.stderr
    return folder


def test_whole_photographs_are_held_out(written):
    crops = _crops(written)
    by_split = {split: {path.parts[1] for path in crops if path.parts[0] == split} for split in ("train", "test")}
    assert by_split == {"train": PHOTOS - HELD_OUT, "test": HELD_OUT}
    assert {path.parts[0] for path in crops} == {"train", "test"}  # nothing else written
    for path in crops:
        assert path.name.startswith(f"{path.parts[1]}-") and path.suffix == ".png"
    assert len(crops) == 3 * len(PHOTOS)
    for photo in PHOTOS:
        assert len([path for path in crops if path.parts[1] == photo]) == 3


def test_every_crop_is_a_32_pixel_rgb_png(written):
    for path in written.rglob("*.png"):
        with Image.open(path) as image:
            assert (image.format, image.size, image.mode) == ("PNG", (32, 32), "RGB")


def test_the_same_seed_gives_the_same_bytes(written, tmp_path):
    again = tmp_path / "again"
    assert _run(again).returncode == 0
    assert _crops(again) == _crops(written)


def test_a_non_empty_folder_is_refused_unless_forced(written, tmp_path):
    before = _crops(written)
    refused = _run(written)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "--force" in refused.stderr and _crops(written) == before
    # Forced with other photographs held out: the old split is replaced, and a photograph's crops do not
    # depend on which split it lands in.
    copy = tmp_path / "copy"
    for path, data in before.items():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        (copy / path).write_bytes(data)
    forced = _run(copy, "--force", "--test-photos", "astronaut,china")
    assert forced.returncode == 0, forced.stderr
    after = _crops(copy)
    assert {path.parts[1] for path in after if path.parts[0] == "test"} == {"astronaut", "china"}
    assert {path.parts[1] for path in after if path.parts[0] == "train"} == PHOTOS - {"astronaut", "china"}
    moved = Path("chelsea", "chelsea-0000.png")
    assert after[Path("train") / moved] == before[Path("test") / moved]


def test_an_unknown_test_photo_is_refused(tmp_path):
    pytest.importorskip("skimage")
    run = _run(tmp_path / "out", "--test-photos", "lena")
    assert run.returncode == 2 and "--test-photos" in run.stderr and not (tmp_path / "out").exists()


def test_turned_training_crops_and_their_own_count(tmp_path):
    pytest.importorskip("skimage")
    plain, turned = tmp_path / "plain", tmp_path / "turned"
    assert _run(plain).returncode == 0
    run = _run(turned, "--train-per-photo", "5", "--turn")
    assert run.returncode == 0, run.stderr
    assert "40 train crops of 8 photographs, 6 test crops of 2" in run.stderr
    a, b = _crops(plain), _crops(turned)
    assert all(b[path] == data for path, data in a.items() if path.parts[0] == "test")  # test crops never turned
    assert any(b[path] != data for path, data in a.items() if path.parts[0] == "train")


def test_the_recipe_runs_end_to_end_at_a_tiny_size(written, tmp_path):
    """The bundled photos-32 recipe: crops, then `vae train` with no model settings (the colour defaults), then
    `vae eval` on the held-out photographs with the codecs beside it."""
    import json

    from tests.helpers.runner import run_cli

    model = tmp_path / "photos.safetensors"
    result = run_cli("train", "--dataset", str(written), "--epochs", "1", "--hidden", "8", "--image-size", "16",
                     "--batch-size", "8", "--device", "cpu", "--no-report", "-o", str(model))
    assert result.exit_code == 0, result.stderr
    info = json.loads(run_cli("info", str(model), "--json").stdout)
    assert info["config"]["model"]["map_scales"] == "8,4,2,1" and info["config"]["model"]["rgb_coupling"]
    assert info["dataset_info"]["n_train"] == 24 and info["dataset_info"]["n_test"] == 6
    result = run_cli("eval", "-m", str(model), "--dataset", str(written), "-k", "2", "--codecs", "--json",
                     "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 6 and {"png", "webp"} <= set(report["codecs"])
