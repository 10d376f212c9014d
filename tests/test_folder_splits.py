"""An image folder holding train/ and test/ gives its own splits; any other folder holds out every tenth image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaecli.data.datasets import load_dataset, load_folder
from vaecli.errors import InputError
from vaecli.store.checkpoint import read_metadata

SHAPE = (1, 8, 8)


def _image(path: Path, value: int) -> None:
    """An 8x8 grey image of one value, so a test can tell which file was read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def _split_folder(root: Path) -> Path:
    # train: 22 images (past the 20 at which every tenth would be held out), classes a and b;
    # test: 3 images, classes a and c, c found only there.
    for i in range(12):
        _image(root / "train" / "a" / f"{i:02d}.png", 10 + i)
    for i in range(10):
        _image(root / "train" / "b" / f"{i:02d}.png", 40 + i)
    _image(root / "test" / "a" / "0.png", 100)
    _image(root / "test" / "c" / "0.png", 200)
    _image(root / "test" / "c" / "1.png", 201)
    return root


def _values(images) -> list[int]:
    return [int(image[0, 0, 0]) for image in images]


def test_train_and_test_folders_are_the_splits(tmp_path):
    root = _split_folder(tmp_path / "photos")
    train = load_folder(root, "train", SHAPE)
    test = load_folder(root, "test", SHAPE)
    assert len(train) == 22 and len(test) == 3  # nothing of train/ held out, nothing of test/ trained on
    assert _values(train.images) == [*range(10, 22), *range(40, 50)]
    assert _values(test.images) == [100, 200, 201]
    # The class is the first sub-folder below train/ or test/, named from both splits so labels agree.
    assert train.class_names == test.class_names == ["a", "b", "c"]
    assert train.labels.tolist() == [0] * 12 + [1] * 10
    assert test.labels.tolist() == [0, 2, 2]


def test_limit_takes_the_first_images_of_the_split(tmp_path):
    root = _split_folder(tmp_path / "photos")
    test = load_dataset(str(root), "test", shape=SHAPE, limit=2)
    assert _values(test.images) == [100, 200] and test.class_names == ["a", "b", "c"]
    assert _values(load_folder(root, "train", SHAPE, limit=13).images) == [*range(10, 22), 40]


def test_images_straight_in_train_and_test_have_the_root_class(tmp_path):
    root = tmp_path / "flat"
    _image(root / "train" / "x.png", 1)
    _image(root / "test" / "y.png", 2)
    test = load_folder(root, "test", SHAPE)
    assert _values(test.images) == [2] and test.class_names == ["(root)"]


@pytest.mark.parametrize(("stray", "named"), [("top.png", "'top.png'"), ("extra/one.png", "'extra/'")])
def test_images_outside_train_and_test_are_refused(tmp_path, stray, named):
    root = _split_folder(tmp_path / "photos")
    _image(root / stray, 5)
    for split in ("train", "test"):
        with pytest.raises(InputError) as caught:
            load_folder(root, split, SHAPE)
        message = caught.value.message
        assert "\n" not in message and named in message and "move those into train/ or test/" in message


def test_an_empty_split_folder_is_refused(tmp_path):
    root = tmp_path / "photos"
    _image(root / "train" / "a" / "0.png", 1)
    (root / "test").mkdir()
    with pytest.raises(InputError, match=r"test/ holds no PNG or JPEG images"):
        load_folder(root, "train", SHAPE)


def test_without_both_folders_every_tenth_image_is_held_out(tmp_path):
    # train/ alone is a class like any other sub-folder; a folder without images in it changes nothing.
    root = tmp_path / "photos"
    for i in range(25):
        _image(root / ("train" if i < 15 else "zebra") / f"{i:02d}.png", i)
    (root / "empty").mkdir()
    test = load_folder(root, "test", SHAPE)
    assert _values(test.images) == [9, 19] and test.class_names == ["train", "zebra"]
    assert len(load_folder(root, "train", SHAPE)) == 23


def test_train_and_eval_read_the_test_folder(cli, tmp_path):
    root = _split_folder(tmp_path / "photos")
    out = tmp_path / "tiny.safetensors"
    trained = cli("train", "--dataset", root, "--epochs", "1", "--limit", "20", "--arch", "mlp", "--hidden", "16",
                  "--latent-dim", "2", "--image-size", "8", "--device", "cpu", "--no-report", "-q", "-o", out)
    assert trained.exit_code == 0, trained.stderr
    info = read_metadata(out)["dataset_info"]
    assert info["n_train"] == 20 and info["n_test"] == 3  # the test folder's count, under the limit
    assert info["class_names"] == ["a", "b", "c"]
    evaluated = cli("eval", "-m", out, "--dataset", root, "--split", "test", "-k", "2", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["images"] == 3


def test_a_class_only_under_test_is_refused_for_a_conditional_model_by_its_reason(cli, tmp_path):
    root = _split_folder(tmp_path / "photos")
    refused = cli("train", "--dataset", root, "--conditional", "--epochs", "1", "--arch", "mlp", "--hidden", "8",
                  "--device", "cpu", "-o", tmp_path / "c.safetensors")
    assert refused.exit_code == 2
    assert "class 'c' has no training images (its images are all under test/)" in refused.stderr
    assert not (tmp_path / "c.safetensors").exists()
