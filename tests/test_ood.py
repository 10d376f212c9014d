"""`vae ood` and vaecli.analysis.detection: exact metrics on planted cases, the report, the figure, one-line errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vaecli.analysis.detection import detection_metrics, roc_points

from tests.helpers.cli_checks import one_error_line

CPU = ["--device", "cpu"]


def test_separable_scores_give_perfect_metrics():
    result = detection_metrics([0.1, 0.5, 1.0, 2.0], [3.0, 4.5, 7.0])
    assert (result.auroc, result.auprc, result.fpr_at_95_tpr) == (1.0, 1.0, 0.0)
    assert result.mean_in == pytest.approx(0.9) and result.mean_out == pytest.approx(14.5 / 3)


def test_reversed_scores_give_the_worst_metrics():
    result = detection_metrics([3.0, 4.0], [1.0, 2.0])
    assert result.auroc == 0.0 and result.fpr_at_95_tpr == 1.0


def test_fpr_at_95_tpr_counts_the_in_distribution_images_flagged():
    # 20 out-of-distribution scores 1..20; flagging 95% of them (19) needs the threshold 2,
    # which flags the in-distribution images scoring 2.5 and 3 but not 0 or 1.5.
    result = detection_metrics([0.0, 1.5, 2.5, 3.0], [float(v) for v in range(1, 21)])
    assert result.fpr_at_95_tpr == 0.5
    fpr, tpr = roc_points([0.0, 1.0], [2.0, 3.0])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_non_finite_scores_are_refused():
    with pytest.raises(Exception, match="not finite"):
        detection_metrics([0.0, float("nan")], [1.0])


def _blank_folder(tmp_path, count: int = 12):
    folder = tmp_path / "blank"
    folder.mkdir()
    for i in range(count):
        Image.new("L", (8, 8), 20 * i).save(folder / f"grey-{i:02d}.png")
    return folder


def test_ood_json_table_and_roc_figure(cli, tiny_model, tmp_path):
    folder = _blank_folder(tmp_path)
    result = cli("ood", "-m", tiny_model, "--known", "digits", "--unusual", folder, "--limit", "20", "-k", "3",
                 "--regret-steps", "3", "--json", "-o", tmp_path / "roc.png", *CPU)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["images_in"], report["images_out"]) == (20, 12)
    assert set(report["scores"]) == {"nll", "elbo", "recon", "kl", "complexity", "regret"}
    for metrics in report["scores"].values():
        assert 0.0 <= metrics["auroc"] <= 1.0 and 0.0 <= metrics["fpr_at_95_tpr"] <= 1.0
    assert report["roc"] == str(tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes().startswith(b"\x89PNG")
    assert "AUROC" in result.stderr and "complexity" in result.stderr


def test_ood_without_json_prints_the_figure_path_only(cli, tiny_model, tmp_path):
    folder = _blank_folder(tmp_path)
    result = cli("ood", "-m", tiny_model, "--known", "digits", "--unusual", folder, "--limit", "10", "-s", "nll",
                 "-k", "2", "-o", "roc.png", *CPU)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "roc.png\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--known", "digits", "--unusual", "no-such-folder"], "--unusual no-such-folder"),
        (["--known", "digits", "--unusual", "EMPTY"], "no PNG or JPEG"),
        (["--known", "digits", "--unusual", "digits", "-s", "psnr"], "--score psnr"),
        (["--known", "digits", "--unusual", "digits", "-o", "FILE/roc.png"], "is not a folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tiny_model, tmp_path, args, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "FILE").write_bytes(b"a file, not a folder")
    result = cli("ood", "-m", tiny_model, *[str(tmp_path / a) if a == "EMPTY" else a for a in args], *CPU)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        # As the library wrote it before settings were named in backticks, and as it writes it now.
        ("--dataset torchvision:X: no such class", "--unusual torchvision:X: no such class"),
        ("`dataset=torchvision:X`: no such class; or use `dataset=digits`",
         "--unusual torchvision:X: no such class; or use --unusual digits"),
        ("`dataset` names no dataset", "--unusual names no dataset"),
        ("`data_root=/x`: not a folder", "`data_root=/x`: not a folder"),  # another setting: left to the terminal
    ],
)
def test_a_library_error_about_the_dataset_names_the_option_typed(message, shown):
    from vaecli.commands.ood import named_as

    assert named_as(message, "--unusual") == shown
