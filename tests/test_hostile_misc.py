"""Issue 30, item 14: ood's default scores on a hierarchical model, ood on torchvision:NAME, --resume without
optimizer state, and a folder whose class has images only in the test split."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from vaecli.data.datasets import load_dataset
from vaecli.store.checkpoint import load_checkpoint

from tests.helpers.cli_checks import one_error_line
from tests.helpers.fabricate import trust_fabricated, write_cifar10

CPU = ["--device", "cpu"]
QUICK_SCORES = ["-k", "2", "--regret-steps", "2", "--limit", "6"]
# A one-epoch run of a second or less on the offline digits; each test adds what it needs.
TRAIN = ["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "3", "--batch-size", "32",
         "--limit", "64", "--epochs", "1", "--device", "cpu", "--no-report", "-q"]


@pytest.fixture(scope="module")
def hvae(tmp_path_factory):
    from tests.helpers.runner import run_cli

    path = tmp_path_factory.mktemp("hvae") / "h.safetensors"
    result = run_cli(*TRAIN, "--arch", "hvae", "--groups", "2", "--group-channels", "2", "-o", path)
    assert result.exit_code == 0, result.stderr
    return path


def _grey_folder(folder, count: int):
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("L", (28, 28), 10 * i).save(folder / f"{i:02d}.png")
    return folder


# --- vae ood: the default scores are those the model supports ------------------------------------------


def test_ood_defaults_leave_regret_out_of_a_hierarchical_model_and_say_why(cli, hvae, tmp_path):
    out = _grey_folder(tmp_path / "grey", 6)
    result = cli("ood", "-m", hvae, "--known", "digits", "--unusual", out, *QUICK_SCORES, "--json", *CPU)
    assert result.exit_code == 0, result.stderr
    assert set(json.loads(result.stdout)["scores"]) == {"nll", "elbo", "recon", "kl", "complexity"}
    said = [line for line in result.stderr.splitlines() if "regret left out" in line]
    assert len(said) == 1 and "hierarchical" in said[0] and "nll, elbo, recon, kl, complexity" in said[0]


def test_ood_still_refuses_regret_named_on_a_hierarchical_model(cli, hvae, tmp_path):
    out = _grey_folder(tmp_path / "grey", 6)
    result = cli("ood", "-m", hvae, "--known", "digits", "--unusual", out, "-s", "nll,regret", *QUICK_SCORES, *CPU)
    assert result.exit_code == 2 and "--score regret works on the single latent" in one_error_line(result)


def test_ood_defaults_keep_regret_on_a_one_layer_model(cli, tiny_model, tmp_path):
    out = _grey_folder(tmp_path / "grey", 6)
    result = cli("ood", "-m", tiny_model, "--known", "digits", "--unusual", out, *QUICK_SCORES, "--json", *CPU)
    assert result.exit_code == 0, result.stderr
    assert "regret" in json.loads(result.stdout)["scores"] and "left out" not in result.stderr


# --- vae ood: a torchvision dataset is a set like any named one ----------------------------------------


@pytest.mark.parametrize("name", ["torchvision:CIFAR10", "cifar10"])
def test_ood_reads_a_torchvision_dataset_by_name(cli, tiny_model, tmp_path, monkeypatch, name):
    trust_fabricated(monkeypatch)
    write_cifar10(tmp_path / "data", train=10, test=7)
    result = cli("ood", "-m", tiny_model, "--known", "digits", "--unusual", name, "--data-root", tmp_path / "data",
                 "--limit", "5", "-s", "nll", "-k", "2", "--json", *CPU)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["out"], report["images_in"], report["images_out"]) == (name, 5, 5)


def test_ood_names_its_own_option_for_an_unknown_torchvision_class(cli, tiny_model):
    result = cli("ood", "-m", tiny_model, "--known", "digits", "--unusual", "torchvision:NoSuchSet", "-s", "nll", *CPU)
    line = one_error_line(result)
    assert result.exit_code == 2 and line.startswith("error: --unusual torchvision:NoSuchSet: ")
    assert "no dataset class 'NoSuchSet'" in line and "--dataset" not in line


def test_ood_lists_torchvision_names_for_a_missing_folder(cli, tiny_model):
    result = cli("ood", "-m", tiny_model, "--known", "no-such-folder", "--unusual", "digits", "-s", "nll", *CPU)
    assert result.exit_code == 2 and "torchvision:NAME" in one_error_line(result)


# --- vae train --resume from a file without optimizer state --------------------------------------------


def _without_optimizer_state(source, target) -> None:
    from safetensors import safe_open

    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
    tensors = {k: v for k, v in load_file(source).items() if not k.startswith("optimizer.")}
    save_file(tensors, str(target), metadata=metadata)


def test_resume_without_optimizer_state_says_adam_restarts(cli, tmp_path):
    full = tmp_path / "full.safetensors"
    assert cli(*TRAIN, "-o", full).exit_code == 0
    bare = tmp_path / "bare.safetensors"
    _without_optimizer_state(full, bare)
    assert not load_checkpoint(bare, training_state=True).optimizer_state

    result = cli("train", "--resume", bare, "--epochs", "2", "--no-report")
    assert result.exit_code == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "no optimizer state" in line]
    assert len(said) == 1 and "moments restart" in said[0] and "schedule goes on from epoch 1" in said[0]
    resumed = load_checkpoint(bare, training_state=True)
    assert resumed.epochs_done == 2 and resumed.optimizer_state  # the next save holds Adam's state again

    intact = cli("train", "--resume", full, "--epochs", "2", "--no-report")
    assert intact.exit_code == 0 and "no optimizer state" not in intact.stderr


# --- image folders: classes come from both splits -------------------------------------------------------


def _classes(root, sizes: dict[str, int]):
    for name, count in sizes.items():
        _grey_folder(root / name, count)
    return root


def test_a_class_only_in_the_test_split_is_still_a_class_with_the_same_number(tmp_path):
    # 20 images: every tenth in name order (a/09 and b/00) is the test split, so b has no training image.
    root = _classes(tmp_path / "pets", {"a": 19, "b": 1})
    train = load_dataset(str(root), "train")
    test = load_dataset(str(root), "test")
    assert train.class_names == test.class_names == ["a", "b"]
    assert set(train.labels.tolist()) == {0} and test.labels.tolist() == [0, 1]


def test_conditional_training_names_the_class_without_training_images(cli, tmp_path):
    root = _classes(tmp_path / "pets", {"a": 19, "b": 1})
    out = tmp_path / "c.safetensors"
    result = cli("train", "--dataset", root, "--conditional", "--arch", "mlp", "--hidden", "8", "--epochs", "1",
                 "-o", out, *CPU)
    line = one_error_line(result)
    assert result.exit_code == 2 and "class 'b' has no training images" in line and "held out" in line
    assert not out.exists()


def test_conditional_training_counts_every_class_of_the_folder(cli, tmp_path):
    # b's two images straddle the hold-out: b/00 trains, b/01 (the 20th image) tests.
    root = _classes(tmp_path / "pets", {"a": 18, "b": 2})
    out = tmp_path / "c.safetensors"
    result = cli("train", "--dataset", root, "--conditional", "--arch", "mlp", "--hidden", "8", "--latent-dim",
                 "2", "--epochs", "1", "--batch-size", "8", "--no-report", "-q", "-o", out, *CPU)
    assert result.exit_code == 0, result.stderr
    checkpoint = load_checkpoint(out)
    assert checkpoint.config.model.classes == 2
    assert checkpoint.meta["dataset_info"]["class_names"] == ["a", "b"]
