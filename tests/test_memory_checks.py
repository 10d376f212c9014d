"""Memory is estimated before the work: a run that cannot fit is refused in one line naming the option to lower.

The machine's free memory is made small in-process (vaecli.runtime.memory.available_bytes), so nothing large is
ever allocated: each refused command must stop before any output exists, and the same command with the
named option lowered must run under the same small memory.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.helpers.cli_checks import one_error_line
from tests.helpers.images import digit
from tests.helpers.safetensors_bytes import split_safetensors

FREE = 512 << 20  # above what loading a tiny model needs, far below the refused runs' estimates
CPU = ("--device", "cpu")


@pytest.fixture
def small_memory(monkeypatch):
    monkeypatch.setattr("vaecli.runtime.memory.available_bytes", lambda device=None: FREE)


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> Path:
    """A tiny CNN with a 1024-d latent: a traversal of it has 1024 rows."""
    from tests.helpers.runner import run_cli

    out = tmp_path_factory.mktemp("wide") / "wide.safetensors"
    result = run_cli("train", "--dataset", "digits", "--arch", "cnn", "--hidden", "8", "--latent-dim", "1024",
                     "--epochs", "1", "--limit", "64", "--batch-size", "64", *CPU, "-q", "--no-report", "-o", out)
    assert result.exit_code == 0, result.stderr
    return out


def refused(result, *words: str) -> str:
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result)
    assert "needs about" in line and "more than this machine has free" in line, line
    for word in words:
        assert word in line, line
    return line


def test_traverse_refuses_a_sweep_that_cannot_fit_before_any_output(cli, tiny_model, small_memory):
    result = cli("traverse", "-m", tiny_model, *CPU, "--steps", "101", "-n", "16", "-o", "t.png", "--gif", "t.gif")
    refused(result, "4 dimensions x 16 codes x 101 steps", "lower --steps or -n")
    assert result.stdout == "" and not Path("t.png").exists() and not Path("t.gif").exists()
    works = cli("traverse", "-m", tiny_model, *CPU, "-n", "2", "-o", "t.png", "--gif", "t.gif", "--limit", "50")
    assert works.exit_code == 0, works.stderr
    assert Path("t.png").stat().st_size and Path("t.gif").stat().st_size


def test_traverse_refuses_a_gif_too_large_to_enlarge_naming_scale(cli, tiny_model, small_memory):
    big = cli("traverse", "-m", tiny_model, *CPU, "--gif", "t.gif", "--scale", "64", "-n", "16", "-o", "t.png")
    assert big.exit_code == 2 and "lower --scale or -n" in one_error_line(big)
    heavy = cli("traverse", "-m", tiny_model, *CPU, "--gif", "t.gif", "--scale", "40", "--steps", "101", "-o", "t.png")
    refused(heavy, "lower --steps or --scale")
    assert not Path("t.png").exists() and not Path("t.gif").exists()


def test_a_wide_latent_is_refused_before_its_codes_are_swept(cli, wide_model, small_memory):
    # 1024 rows x 101 steps x 16 codes: the sweep alone would hold 6.8 GB of codes.
    refused(cli("traverse", "-m", wide_model, *CPU, "--steps", "101", "-n", "16"), "1024 dimensions")
    assert not Path("traverse.png").exists()


def test_manifold_refuses_a_grid_that_cannot_fit(cli, tiny_model, small_memory):
    result = cli("manifold", "-m", tiny_model, *CPU, "--size", "100", "--with-codes", "-o", "m.png")
    refused(result, "100 x 100 manifold", "lower --size")
    assert not Path("m.png").exists()
    works = cli("manifold", "-m", tiny_model, *CPU, "--size", "8", "--limit", "50", "-o", "m.png")
    assert works.exit_code == 0, works.stderr
    assert Path("m.png").stat().st_size


def test_score_refuses_rows_per_pass_that_cannot_fit(cli, tiny_model, small_memory):
    image = digit(Path("one.png"))
    result = cli("score", image, "-m", tiny_model, *CPU, "-k", "1000000", "--decode-rows", "1048576")
    refused(result, "1,000,000 rows", "lower --iw-samples or --decode-rows")
    assert result.stdout == ""
    works = cli("score", image, "-m", tiny_model, *CPU, "-k", "10", "--decode-rows", "1048576")
    assert works.exit_code == 0, works.stderr
    assert works.stdout.splitlines()[1].startswith("one.png\t")


def test_ood_refuses_before_reading_either_set(cli, tiny_model, small_memory):
    result = cli("ood", "-m", tiny_model, *CPU, "--known", "digits", "--unusual", "missing-folder", "--limit", "20",
                 "-k", "10000", "--decode-rows", "1048576", "-o", "roc.png")
    refused(result, "200,000 rows", "lower --iw-samples or --decode-rows")  # not "missing-folder": never read
    assert not Path("roc.png").exists()
    works = cli("ood", "-m", tiny_model, *CPU, "--known", "digits", "--unusual", "digits", "--limit", "20", "-k", "5",
                "-s", "nll,elbo,regret", "--regret-steps", "2", "--decode-rows", "1048576", "-o", "roc.png", "--json")
    assert works.exit_code == 0, works.stderr
    assert json.loads(works.stdout)["images_in"] == 20 and Path("roc.png").stat().st_size


def test_tour_html_of_a_wide_latent_is_refused_naming_html(cli, wide_model, small_memory):
    result = cli("tour", "-m", wide_model, *CPU, "--html", "-o", "tour")
    refused(result, "1024 latent dimensions", "drop --html")
    assert not Path("tour").exists()


@pytest.mark.slow
def test_tour_without_html_fits_where_html_does_not(cli, wide_model, small_memory):
    result = cli("tour", "-m", wide_model, *CPU, "-o", "tour")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in Path("tour").iterdir()) == [
        "interpolation.png", "latent.png", "reconstructions.png", "samples.png"]


def test_sample_refuses_images_held_at_once_that_cannot_fit(cli, tiny_conditional, small_memory):
    figure = cli("sample", "-m", tiny_conditional, *CPU, "--label", "all", "-n", "64", "--scale", "8",
                 "--grid", "g.png", "--seed", "1")
    refused(figure, "holding 640 images at once in one grid", "lower -n or --scale")
    folder = cli("sample", "-m", tiny_conditional, *CPU, "--label", "all", "-n", "1000000", "-o", "out", "--seed", "1")
    refused(folder, "holding 10,000,000 images at once", "lower -n")
    assert not Path("g.png").exists() and not Path("out").exists()
    works = cli("sample", "-m", tiny_conditional, *CPU, "--label", "all", "-n", "4", "--grid", "g.png", "--seed", "1")
    assert works.exit_code == 0, works.stderr
    assert Path("g.png").stat().st_size


def test_training_counts_the_mixtures_output_and_loss(cli, monkeypatch):
    # 32 GiB free: without the logistic mixture's tensors this run was estimated at 15 GiB and started.
    monkeypatch.setattr("vaecli.runtime.memory.available_bytes", lambda device=None: 32 << 30)
    wide = ("train", "--dataset", "digits", "--likelihood", "logistic", "--epochs", "1", "--no-report", "-q", *CPU)
    result = cli(*wide, "--mixtures", "64", "--image-size", "128", "--channels", "3", "-o", "big.safetensors")
    refused(result, "3x128x128 images in batches of 128", "--mixtures")
    assert not Path("big.safetensors").exists()
    works = cli(*wide, "--mixtures", "5", "--arch", "cnn", "--hidden", "8", "--limit", "64", "-o", "small.safetensors")
    assert works.exit_code == 0, works.stderr


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet", "hvae"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_the_rough_activation_bound_stays_above_the_exact_count(arch, likelihood):
    import torch

    from vaecli.config import ModelConfig
    from vaecli.model.networks import build_model
    from vaecli.runtime.memory import ROUGH_ACTIVATION_BYTES, _activation_bytes, likelihood_bytes

    config = ModelConfig(arch=arch, channels=3, height=32, width=32, likelihood=likelihood,
                         mixtures=10 if likelihood == "logistic" else 1)
    with torch.device("meta"):
        model = build_model(config)
    rough = ROUGH_ACTIVATION_BYTES * 8 * (max(config.hidden, config.channels) * 32 * 32 + config.latent_dim)
    # The decoder's output is the likelihood's, which likelihood_bytes counts beside the rough bound.
    assert _activation_bytes(model, config, 8) <= rough + likelihood_bytes(config, 8, training=False)


# --- loading a checkpoint: its tensor bytes, a few times over, checked before they are read -------------


def sparse_checkpoint(source: Path, target: Path, extra: int) -> None:
    """`source` with one more tensor of `extra` bytes declared at its end, written sparse (no disk used)."""
    header, data = split_safetensors(source.read_bytes())
    end = max(entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__")
    header["padding"] = {"dtype": "U8", "shape": [extra], "data_offsets": [end, end + extra]}
    text = json.dumps(header).encode()
    with open(target, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text + data)
        handle.truncate(8 + len(text) + end + extra)


def test_a_checkpoint_too_large_to_load_is_refused_before_its_tensors_are_read(cli, tiny_model, monkeypatch,
                                                                                small_memory):
    import vaecli.store.safetensors_file

    big = Path("big.safetensors")
    sparse_checkpoint(tiny_model, big, 3 << 30)  # 3 GiB declared, under the 4 GiB bound on a file
    requested = []
    real = vaecli.store.safetensors_file.read_exactly

    def counting(handle, count, name):
        requested.append(count)
        return real(handle, count, name)

    monkeypatch.setattr(vaecli.store.safetensors_file, "read_exactly", counting)
    result = cli("sample", "-m", big, *CPU, "-n", "1", "-o", "out")
    line = refused(result, f"{big}: loading this checkpoint")
    with open(big, "rb") as handle:
        header_bytes = 8 + int.from_bytes(handle.read(8), "little")
    assert sum(requested) == header_bytes, line  # the header alone: no tensor data was read
    assert not Path("out").exists()
    assert cli("info", big).exit_code == 0  # the header is still readable
    works = cli("sample", "-m", tiny_model, *CPU, "-n", "1", "-o", "out", "--seed", "1")
    assert works.exit_code == 0, works.stderr
    assert len(list(Path("out").iterdir())) == 1
