"""`vae sample` end to end: numbered files, grids, stdout bytes, seeds, numbering, errors."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from vaecli.data.images import GRID_PADDING, make_grid
from vaecli.store.files import numbered_names


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_numbered_pngs_and_their_paths_on_stdout(cli, tiny_model, tmp_path):
    result = cli("sample", "-m", tiny_model, "-n", "3", "-o", "out", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "out/sample-0001.png\nout/sample-0002.png\nout/sample-0003.png\n"
    assert result.stderr.startswith("seed ") and len(result.stderr.splitlines()) == 1  # the seed drawn
    for line in result.stdout.splitlines():
        image = _png((tmp_path / line).read_bytes())
        assert image.size == (28, 28) and image.mode == "L"


def test_default_folder_is_the_current_one(cli, tiny_model, tmp_path):
    result = cli("sample", "-m", tiny_model, "-n", "1", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "sample-0001.png\n"
    assert (tmp_path / "sample-0001.png").is_file()


def test_same_seed_same_bytes_and_other_seed_other_bytes(cli, tiny_model):
    first = cli("sample", "-m", tiny_model, "-n", "4", "-o", "-", "--seed", "5")
    again = cli("sample", "-m", tiny_model, "-n", "4", "-o", "-", "--seed", "5")
    other = cli("sample", "-m", tiny_model, "-n", "4", "-o", "-", "--seed", "6")
    assert first.exit_code == again.exit_code == other.exit_code == 0, first.stderr
    assert first.stdout_bytes == again.stdout_bytes
    assert first.stdout_bytes != other.stdout_bytes
    grid = _png(first.stdout_bytes)  # stdout holds the grid's PNG bytes and nothing else
    assert grid.size == (2 * 28 + GRID_PADDING, 2 * 28 + GRID_PADDING) and grid.mode == "L"


def test_grid_file_with_nrow_and_scale(cli, tiny_model, tmp_path):
    result = cli("sample", "-m", tiny_model, "-n", "5", "--nrow", "5", "--grid", "g.png", "--scale", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "g.png\n"
    grid = Image.open(tmp_path / "g.png")
    assert grid.size == (3 * (5 * 28 + 4 * GRID_PADDING), 3 * 28) and grid.mode == "L"
    assert not list(tmp_path.glob("sample-*.png"))  # a grid instead of single files


def test_scale_is_nearest_neighbour(cli, tiny_model, tmp_path):
    plain = cli("sample", "-m", tiny_model, "-n", "1", "-o", "a", "-q", "--seed", "3")
    big = cli("sample", "-m", tiny_model, "-n", "1", "-o", "b", "--scale", "2", "-q", "--seed", "3")
    assert plain.exit_code == big.exit_code == 0
    small = Image.open(tmp_path / "a/sample-0001.png")
    large = Image.open(tmp_path / "b/sample-0001.png")
    assert large.size == (56, 56)
    assert large.resize((28, 28), Image.Resampling.NEAREST).tobytes() == small.tobytes()


def test_zero_temperature_decodes_the_prior_mean_every_time(cli, tiny_model, tmp_path):
    result = cli("sample", "-m", tiny_model, "-n", "2", "-t", "0", "-o", "out")
    assert result.exit_code == 0, result.stderr
    first, second = ((tmp_path / p).read_bytes() for p in result.stdout.splitlines())
    assert first == second


def test_existing_samples_are_kept_and_numbering_goes_on(cli, tiny_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sample-0001.png").write_bytes(b"old 1")
    (out / "sample-0002.png").write_bytes(b"old 2")
    result = cli("sample", "-m", tiny_model, "-n", "2", "-o", "out", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "out/sample-0003.png\nout/sample-0004.png\n"
    assert (out / "sample-0001.png").read_bytes() == b"old 1"
    forced = cli("sample", "-m", tiny_model, "-n", "1", "-o", "out", "--force", "-q")
    assert forced.exit_code == 0
    assert forced.stdout == "out/sample-0001.png\n"
    assert _png((out / "sample-0001.png").read_bytes()).size == (28, 28)


def test_numbering_keeps_glob_order_past_four_digits(tmp_path):
    (tmp_path / "sample-9999.png").write_bytes(b"")
    names = [p.name for p in numbered_names(tmp_path, "sample", 2, force=False)]
    assert names == ["sample-10000.png", "sample-10001.png"]
    assert [p.name for p in numbered_names(tmp_path / "none", "x", 1, force=False)] == ["x-0001.png"]


def test_make_grid_places_images_row_by_row():
    import numpy as np

    images = np.stack([np.full((1, 2, 2), value, np.uint8) for value in (10, 20, 30)])
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (1, 5, 5)
    assert grid[0, 0, 0] == 10 and grid[0, 0, 3] == 20 and grid[0, 3, 0] == 30
    assert grid[0, 2, 2] == 128 and grid[0, 4, 4] == 128  # padding and the empty cell


def test_count_zero_is_a_usage_error(cli, tiny_model):
    result = cli("sample", "-m", tiny_model, "-n", "0")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "--count" in result.stderr


def test_negative_temperature_is_refused(cli, tiny_model):
    result = cli("sample", "-m", tiny_model, "-t", "-1")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: --temperature must be a finite number from 0 to 100, not -1"]


def test_unwritable_output_folder_is_one_line(cli, tiny_model, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = cli("sample", "-m", tiny_model, "-n", "1", "-o", "file/sub")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == "error: -o file/sub: file is not a folder; choose another path"


def test_grid_to_stdout_and_grid_file_conflict(cli, tiny_model):
    result = cli("sample", "-m", tiny_model, "-o", "-", "--grid", "g.png")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_without_a_seed_each_run_draws_new_images_and_says_its_seed(cli, tiny_model):
    first = cli("sample", "-m", tiny_model, "-n", "4", "-o", "out")
    second = cli("sample", "-m", tiny_model, "-n", "4", "-o", "out")
    assert first.exit_code == second.exit_code == 0
    a, b = (Path(result.stdout.split()[0]).read_bytes() for result in (first, second))
    assert a != b, "two runs without --seed drew the same images"
    seed = first.stderr.split("seed ")[1].split()[0]
    again = cli("sample", "-m", tiny_model, "-n", "4", "-o", "again", "--seed", seed)
    assert Path(again.stdout.split()[0]).read_bytes() == a
