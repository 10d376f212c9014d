"""A conditional model through eval, traverse, manifold, project and tour; score, ood and fit-prior refuse it."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from vaecli.data.datasets import eval_pixels, load_dataset
from vaecli.store.checkpoint import load_checkpoint
from vaecli.training.evaluate import evaluate_split

from tests.helpers.cli_checks import one_error_line
from tests.helpers.runner import run_cli

TINY = ("--arch", "mlp", "--dataset", "digits", "--epochs", "1", "--hidden", "32", "--latent-dim", "4",
        "--device", "cpu", "--seed", "0", "-q", "--no-report")
FAST = ("--device", "cpu", "--limit", "60")  # traverse and manifold: the KL and the codes on 60 test images


def _train(folder, *extra: str):
    out = folder / "model.safetensors"
    result = run_cli("train", *TINY, *extra, "-o", out)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("conditional"), "--conditional")


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("unconditional"))


def _eval(model, *extra: str) -> dict:
    result = run_cli("eval", "-m", model, "--device", "cpu", "-k", "4", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_eval_reads_each_images_own_label(conditional):
    report = _eval(conditional)
    assert report["conditional"] is True and report["label"] is None and report["images"] == 360
    checkpoint = load_checkpoint(conditional)
    data = load_dataset("digits", "test", shape=checkpoint.config.model.image_shape)
    pixels, labels = eval_pixels(checkpoint.config, data, torch.device("cpu")), data.labels.long()
    truth = evaluate_split(checkpoint.model, pixels, 4, 0, labels=labels).nll
    assert report["nll"] == pytest.approx(truth)
    for shift in (1, 3, 5):  # wrong labels explain the images worse
        assert evaluate_split(checkpoint.model, pixels, 4, 0, labels=(labels + shift) % 10).nll > truth


def test_eval_human_output_names_p_x_given_y(conditional, unconditional):
    result = run_cli("eval", "-m", conditional, "--device", "cpu", "-k", "2", "--limit", "20")
    assert result.exit_code == 0 and "-log p(x|y)" in result.stdout
    result = run_cli("eval", "-m", unconditional, "--device", "cpu", "-k", "2", "--limit", "20")
    assert result.exit_code == 0 and "-log p(x)  " in result.stdout and "p(x|y)" not in result.stdout
    assert _eval(unconditional, "--limit", "20")["conditional"] is False


def test_eval_label_keeps_one_class(conditional, unconditional):
    data = load_dataset("digits", "test", shape=(1, 28, 28))
    threes = int((data.labels == 3).sum())
    for model in (conditional, unconditional):
        report = _eval(model, "--label", "3")
        assert report["images"] == threes and report["label"] == "3"
        assert _eval(model, "--label", "3", "--limit", "5")["images"] == 5  # --limit counts that class's images
    assert _eval(conditional, "--label", "3")["nll"] != _eval(conditional)["nll"]


@pytest.mark.parametrize("which", ["conditional", "unconditional"])
def test_eval_unknown_label_is_one_line(which, request):
    model = request.getfixturevalue(which)
    result = run_cli("eval", "-m", model, "--device", "cpu", "-k", "2", "--label", "eleven")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--label 'eleven'" in one_error_line(result)


def _figure(command: str, model, *extra: str) -> bytes:
    result = run_cli(command, "-m", model, *FAST, *extra, "-o", "-")
    assert result.exit_code == 0, result.stderr
    return result.stdout_bytes


@pytest.mark.parametrize("command", ["traverse", "manifold"])
def test_label_chooses_the_decoded_class(command, conditional, unconditional):
    three, five = _figure(command, conditional, "--label", "3"), _figure(command, conditional, "--label", "5")
    assert three != five
    assert _figure(command, conditional, "--label", "3") == three
    size = Image.open(io.BytesIO(_figure(command, unconditional))).size
    assert Image.open(io.BytesIO(three)).size == size  # the same figure, decoded as one class


def test_traverse_encodes_an_image_with_its_label(conditional, tmp_path):
    digit = tmp_path / "digit.png"
    image = load_dataset("digits", "test", shape=(1, 28, 28)).images[0, 0].numpy()
    Image.fromarray(image).save(digit)
    one, two = (_figure("traverse", conditional, str(digit), "--label", label) for label in ("1", "2"))
    assert one != two


@pytest.mark.parametrize("command", ["traverse", "manifold"])
def test_label_is_needed_exactly_for_a_conditional_model(command, conditional, unconditional):
    missing = run_cli(command, "-m", conditional, *FAST, "-o", "-")
    assert missing.exit_code == 2 and "give --label" in one_error_line(missing)
    stray = run_cli(command, "-m", unconditional, *FAST, "--label", "3", "-o", "-")
    assert stray.exit_code == 2 and "not conditional" in one_error_line(stray)
    unknown = run_cli(command, "-m", conditional, *FAST, "--label", "10", "-o", "-")
    assert unknown.exit_code == 2 and "not a class" in one_error_line(unknown)


def test_project_and_tour_serve_a_conditional_model(conditional, tmp_path):
    result = run_cli("project", "-m", conditional, "--device", "cpu", "--limit", "100", "-o", tmp_path / "p.png")
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "p.png").size[0] > 0
    result = run_cli("tour", "-m", conditional, "--device", "cpu", "-o", tmp_path / "tour", "-q")
    assert result.exit_code == 0, result.stderr
    names = ["latent.png", "reconstructions.png", "interpolation.png", "samples.png"]
    assert result.stdout.split() == [str(tmp_path / "tour" / name) for name in names]
    for name in names:
        assert Image.open(tmp_path / "tour" / name).size[0] > 0


@pytest.mark.parametrize("args", [
    ["score", "--dataset", "digits"],
    ["ood", "--known", "digits", "--unusual", "digits"],
    ["fit-prior"],
], ids=lambda args: args[0])
def test_commands_needing_p_of_x_refuse(args, conditional, tmp_path):
    result = run_cli(*args, "-m", conditional, "--device", "cpu")
    assert result.exit_code == 2 and result.stdout == ""
    assert f"`vae {args[0]}` needs an unconditional model" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []  # fit-prior wrote nothing
