"""What a newcomer meets (issue 31): outputs kept, readable figures, helpful errors and completions."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.helpers.cli_checks import one_error_line
from tests.helpers.pages import traversal_figure

FIT = ("--components", "2", "--samples", "1", "--limit", "60", "--device", "cpu", "-q")


def test_fit_prior_keeps_an_existing_checkpoint_unless_forced(cli, tiny_model, tmp_path):
    out = tmp_path / "trained-for-hours.safetensors"
    shutil.copy(tiny_model, out)
    before = out.read_bytes()
    result = cli("fit-prior", "-m", tiny_model, "-o", out, *FIT)
    assert result.exit_code == 2
    assert f"--out {out}: already holds a checkpoint (cnn, 2 epochs on digits)" in result.stderr
    assert "another -o" not in result.stderr and "-o NEW.safetensors, or replace it with --force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and out.read_bytes() == before

    result = cli("fit-prior", "-m", tiny_model, "-o", out, "--force", *FIT)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out) and out.read_bytes() != before


def test_fit_prior_keeps_what_stands_at_its_default_output(cli, tiny_model, tmp_path):
    # Without -o it writes NAME-mixture.safetensors beside the input: fitting twice must not lose the first fit.
    model = tmp_path / "vae.safetensors"
    shutil.copy(tiny_model, model)
    first = cli("fit-prior", "-m", model, *FIT)
    assert first.exit_code == 0, first.stderr
    fitted = tmp_path / "vae-mixture.safetensors"
    assert first.stdout.strip() == str(fitted)
    kept = fitted.read_bytes()
    again = cli("fit-prior", "-m", model, "--seed", "1", *FIT)
    assert again.exit_code == 2 and "and a fitted prior); write elsewhere with -o" in again.stderr
    assert fitted.read_bytes() == kept

    # A file that is not a checkpoint at all is kept too, and named as such.
    fitted.write_text("my notes\n")
    result = cli("fit-prior", "-m", model, *FIT)
    assert result.exit_code == 2 and "exists and is not a vaecli checkpoint" in result.stderr
    assert fitted.read_text() == "my notes\n"
    assert cli("fit-prior", "-m", model, "-f", *FIT).exit_code == 0
    assert cli("info", fitted, "--json").exit_code == 0


def test_fit_prior_keeps_a_file_written_during_the_fit(cli, tiny_model, tmp_path, monkeypatch):
    import vaecli.training.prior_fit

    out = tmp_path / "fitted.safetensors"
    fit = vaecli.training.prior_fit.fit_prior

    def fit_while_another_run_writes(*args, **kwargs):
        result = fit(*args, **kwargs)
        out.write_bytes(b"another run's model")
        return result

    monkeypatch.setattr(vaecli.training.prior_fit, "fit_prior", fit_while_another_run_writes)
    result = cli("fit-prior", "-m", tiny_model, "-o", out, *FIT)
    assert result.exit_code == 2 and "another program wrote it while the prior was being fitted" in result.stderr
    assert out.read_bytes() == b"another run's model"


@pytest.fixture(scope="module")
def half_inactive(tiny_model, tmp_path_factory):
    """tiny_model with z2 and z4 switched off: the encoder gives them q = N(0, 1) = p, so their KL is 0."""
    import torch

    from vaecli.store.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(tiny_model)
    last, latent = checkpoint.model.encoder[-1], checkpoint.config.model.latent_dim
    with torch.no_grad():
        for d in (1, 3):  # the mean's row and the log-variance's row of each
            for row in (d, latent + d):
                last.weight[row] = 0.0
                last.bias[row] = 0.0
    out = tmp_path_factory.mktemp("inactive") / "half-inactive.safetensors"
    save_checkpoint(out, checkpoint.model, checkpoint.meta)
    return out


@pytest.mark.slow
def test_tour_page_shows_only_active_dimensions_and_says_how_many_were_folded(cli, half_inactive, tmp_path):
    result = cli("tour", "-m", half_inactive, "--device", "cpu", "--html", "-o", tmp_path / "t", "-q")
    assert result.exit_code == 0, result.stderr
    alt, caption = traversal_figure((tmp_path / "t" / "tour.html").read_text(encoding="utf-8"))
    rows = [part.split(" (")[0] for part in alt.split(": ", 1)[1].split(", ")]
    assert sorted(rows) == ["z1", "z3"]
    assert "2 inactive dimensions (KL ≤ 0.01 nats) not shown." in caption



def _title_inside(figure) -> None:
    """The figure's title, as drawn at the PNG's resolution, lies wholly inside the figure."""
    import io

    figure.savefig(io.BytesIO(), format="png", dpi=figure.dpi)  # the final layout, as figure_png draws it
    titles = [figure._suptitle] if figure._suptitle else [ax.title for ax in figure.axes if ax.get_title()]
    assert titles
    for title in titles:
        extent = title.get_window_extent(figure.canvas.get_renderer())
        assert extent.x0 >= 0 and extent.x1 <= figure.bbox.width, (extent, figure.bbox)
        assert extent.y0 >= 0 and extent.y1 <= figure.bbox.height, (extent, figure.bbox)


# The tour's traversal title for a conditional Fashion-MNIST model, and traverse's two lines around a named file.
LONG_TITLES = [
    "Around a Fashion-MNIST test image's posterior mean, decoded as class T-shirt/top; rows by average KL (nats) "
    "on 1,000 Fashion-MNIST test images",
    "Around the posterior mean of a-drawing-with-a-long-name.png, one coordinate swept per row, decoded as class "
    "seven\nrows by average KL (nats) on 1,000 MNIST test images",
]


@pytest.mark.parametrize("title", LONG_TITLES)
@pytest.mark.parametrize("steps", [3, 9])
def test_traversal_title_fits_its_figure(title, steps):
    import torch

    from vaecli.analysis.traversal import traversal_cells
    from vaecli.data.images import make_grid
    from vaecli.figures.plots import labelled_tile_figure

    decoded = torch.zeros(2, 1, steps, 1, 28, 28, dtype=torch.uint8)
    tile = make_grid(traversal_cells(decoded), nrow=steps)
    figure = labelled_tile_figure(tile, ["z1  KL 3.20", "z7  KL 0.80"], [str(v) for v in range(steps)], title)
    _title_inside(figure)
    lines = figure._suptitle.get_text().split("\n")
    assert " ".join(lines) == title.replace("\n", " ")  # wrapped, never cut


def test_image_figure_titles_fit(monkeypatch):
    # The tour's interpolation title for a conditional model with long class names runs wider than its row.
    import numpy as np

    import vaecli.figures.plots as plots

    drawn = []
    monkeypatch.setattr(plots, "figure_png", lambda figure: drawn.append(figure) or b"")
    images = np.zeros((9, 1, 28, 28), dtype=np.uint8)
    plots.image_rows_png([images], column_titles=["A"] * 9, title="From a T-shirt/top to a Ankle boot: decoded "
                         "points on the line between posterior means, all decoded as class T-shirt/top")
    plots.image_grid_png(np.zeros((64, 1, 28, 28), dtype=np.uint8), 8,
                         title="64 samples decoded from z ~ its 50-Gaussian prior, sample i of class i mod 10, "
                         "by a model of a folder of cats")
    for figure in drawn:
        _title_inside(figure)


# --- Item 7: the smaller things ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


class Done(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _run_script(name: str, *args, cwd: Path) -> Done:
    """Run scripts/NAME as `python scripts/NAME ARGS` would, in this process (no second start of torch)."""
    import contextlib
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), REPO / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err, before, argv = io.StringIO(), io.StringIO(), os.getcwd(), sys.argv
    try:
        os.chdir(cwd)
        sys.argv = [name, *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.main()
    finally:
        os.chdir(before)
        sys.argv = argv
    return Done(code, out.getvalue(), err.getvalue())


def test_export_images_writes_what_the_readme_examples_read(cli, tiny_model, tmp_path):
    import numpy as np
    from PIL import Image

    from vaecli.data.datasets import load_dataset

    done = _run_script("export_images.py", "--dataset", "digits", "a.png", "b.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["a.png", "b.png"] and "digits test image 1, class" in done.stderr
    test = load_dataset("digits", "test", limit=3)
    for index, name in enumerate(["a.png", "b.png"]):
        with Image.open(tmp_path / name) as image:
            assert image.size == (28, 28) and np.array_equal(np.asarray(image), test.images[index, 0].numpy())
    done = _run_script("export_images.py", "--dataset", "digits", "--first", "2", "--invert", "--scale", "4",
                       "drawing.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "drawing.png") as image:
        drawing = np.asarray(image)
    assert drawing.shape == (112, 112)
    assert np.array_equal(drawing[::4, ::4], 255 - test.images[2, 0].numpy())  # dark on white, 4 times larger
    # What the README then does with them.
    result = cli("interpolate", "-m", tiny_model, tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "s.png",
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    result = cli("reconstruct", "-m", tiny_model, tmp_path / "drawing.png", "--compare", tmp_path / "c.png",
                 "--device", "cpu")
    assert result.exit_code == 0 and "inverted" in result.stderr


def test_export_images_refuses_in_one_line(tmp_path):
    done = _run_script("export_images.py", "--dataset", "digits", "--first", "360", "x.png", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: digits has 360 test images; lower --first or name fewer files"]
    assert not (tmp_path / "x.png").exists()


def test_a_folder_is_split_as_the_readme_says(tmp_path):
    # README: "From 20 images on, every tenth of them (the 10th, 20th, 30th, ...) is the test split".
    from PIL import Image

    from vaecli.data.datasets import load_dataset

    folder = tmp_path / "shapes"
    for count in (19, 25):
        shutil.rmtree(folder, ignore_errors=True)
        for i in range(count):
            (folder / ("odd" if i % 2 else "even")).mkdir(parents=True, exist_ok=True)
            Image.new("L", (28, 28), i).save(folder / ("odd" if i % 2 else "even") / f"{i:02d}.png")
        train, test = (load_dataset(str(folder), split) for split in ("train", "test"))
        if count == 19:  # too few to hold any out: both splits are the whole folder
            assert len(train) == len(test) == 19
            continue
        # Name order is by path: even/00, even/02, ... even/24, then odd/01, ... odd/23.
        order = [f"even/{i:02d}" for i in range(0, 25, 2)] + [f"odd/{i:02d}" for i in range(1, 25, 2)]
        held_out = [order[9], order[19]]
        assert sorted(int(v) for v in test.images[:, 0, 0, 0]) == sorted(int(name[-2:]) for name in held_out)
        assert len(train) == 23 and test.class_names == ["even", "odd"]


@pytest.mark.parametrize(("typed", "meant"), [("minst", "mnist"), ("mnist-resnt", "mnist-resnet"),
                                               ("fashion-mnst", "fashion-mnist"), ("MNIST", "mnist"),
                                               ("mnist.safetensors", "mnist")])
def test_a_misspelt_bundled_model_is_suggested(cli, typed, meant):
    result = cli("sample", "-m", typed, "-n", "1", "--grid", "x.png")
    assert result.exit_code == 2
    assert f"error: {typed}: no such checkpoint or bundled model; did you mean {meant}? (bundled: " in \
        one_error_line(result)
    assert not Path("x.png").exists()


@pytest.mark.parametrize("typed", ["vae.safetensors", "runs/minst", "cnn"])
def test_other_missing_models_get_no_suggestion(cli, typed):
    result = cli("info", typed)
    assert result.exit_code == 2 and "did you mean" not in one_error_line(result)


def _gif_frames(path: Path):
    """Every frame of a GIF as a grey numpy array."""
    import numpy as np
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        return [np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(image)]


def _caption_strip(frames, strip: int = 12):
    """The strip above each frame: white paper with dark text on it."""
    tops = [frame[:strip] for frame in frames]
    for top in tops:
        assert (top == 255).mean() > 0.6 and (top < 128).any()  # mostly white, with text
    return tops


def test_traverse_gif_frames_say_the_swept_value(cli, tiny_model, tmp_path):
    import numpy as np

    gif = tmp_path / "t.gif"
    result = cli("traverse", "-m", tiny_model, "-n", "1", "--steps", "3", "-o", tmp_path / "t.png", "--gif", gif,
                 "--limit", "50", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    frames = _gif_frames(gif)
    assert len(frames) == 4  # -3, 0, 3, then 0 again on the way back
    tops = _caption_strip(frames)
    assert not np.array_equal(tops[0], tops[1]) and not np.array_equal(tops[0], tops[2])
    assert np.array_equal(tops[1], tops[3])  # the same value, the same caption


def test_kl_chart_legend_covers_no_bar(monkeypatch):
    import vaecli.figures.plots as plots

    drawn = []
    monkeypatch.setattr(plots, "figure_png", lambda figure: drawn.append(figure) or b"")
    # The tallest bars at the right, where an upper-right legend used to sit.
    plots.kl_bars_png([0.0, 0.5, 2.0, 3.5, 0.001, 4.1, 5.2, 6.0, 0.0, 5.9], 0.01, "test KL per dimension")
    (figure,) = drawn
    figure.savefig(io.BytesIO(), format="png")
    renderer = figure.canvas.get_renderer()
    legends = figure.legends + [ax.get_legend() for ax in figure.axes if ax.get_legend()]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for bar in figure.axes[0].patches:
            assert not box.overlaps(bar.get_window_extent(renderer)), "the legend covers a bar"


def test_help_says_what_tour_draws(cli):
    line = next(line for line in cli("--help").stdout.splitlines() if line.strip().startswith("tour "))
    assert "notebooks" not in line and "reconstructions" in line and "samples" in line


def test_interpolate_gif_frames_say_their_t(cli, tiny_model, tmp_path):
    import numpy as np

    done = _run_script("export_images.py", "--dataset", "digits", "a.png", "b.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    gif = tmp_path / "morph.gif"
    result = cli("interpolate", "-m", tiny_model, tmp_path / "a.png", tmp_path / "b.png", "--steps", "3",
                 "--gif", gif, "-o", tmp_path / "s.png", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    frames = _gif_frames(gif)
    assert len(frames) == 8  # recon(A), 3 steps, recon(B), then the 3 steps back
    tops = _caption_strip(frames)
    assert len({top.tobytes() for top in tops[:5]}) == 5  # t = 0 (A), 1/4, 2/4, 3/4, 1 (B): each its own
    for forth, back in ((1, 7), (2, 6), (3, 5)):
        assert np.array_equal(tops[forth], tops[back])
