"""`vae train --snapshots`: training in motion as a GIF, without changing what is trained."""

from __future__ import annotations

from PIL import Image
from safetensors.torch import load_file

from vaecli.figures.snapshots import CAPTION_PX, COLUMNS, FIRST_EPOCH_POINTS, RECONSTRUCTIONS, SAMPLES

TINY = ["--dataset", "digits", "--arch", "mlp", "--hidden", "16", "--latent-dim", "3", "--batch-size", "16",
        "--limit", "256", "--device", "cpu", "-q"]


def test_snapshots_make_a_frame_per_epoch_and_four_in_the_first_without_changing_training(cli, tmp_path):
    plain = cli("train", *TINY, "--epochs", "2", "--no-report", "-o", "plain.safetensors")
    moving = cli("train", *TINY, "--epochs", "2", "--snapshots", "--report", "rep", "-o", "moving.safetensors")
    assert plain.exit_code == 0 and moving.exit_code == 0, (plain.stderr, moving.stderr)
    a, b = load_file(tmp_path / "plain.safetensors"), load_file(tmp_path / "moving.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # same weights, Adam and RNG states

    gif = Image.open(tmp_path / "rep" / "moving-evolution.gif")
    assert gif.n_frames == len(FIRST_EPOCH_POINTS) + 2  # 16 steps an epoch: the four points are apart
    rows = (SAMPLES + 2 * RECONSTRUCTIONS) // COLUMNS
    assert gif.size == (2 * (COLUMNS * 28 + (COLUMNS - 1) * 2), 2 * (CAPTION_PX + rows * 28 + (rows - 1) * 2))
    first, last = _frame(gif, 0), _frame(gif, gif.n_frames - 1)
    originals = slice(2 * (CAPTION_PX + 2 * 30), 2 * (CAPTION_PX + 2 * 30 + 28))
    assert first[originals] == last[originals]  # the same test images in every frame ...
    assert first != last  # ... while the samples and reconstructions change


def _frame(gif: Image.Image, index: int) -> list[bytes]:
    gif.seek(index)
    picture = gif.convert("L")
    return [bytes(picture.crop((0, y, picture.width, y + 1)).tobytes()) for y in range(picture.height)]


def test_snapshots_are_refused_where_nothing_can_be_written_beside_the_checkpoint(cli):
    result = cli("train", *TINY, "--epochs", "1", "--snapshots", "--no-report", "-o", "/dev/null")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --snapshots writes beside --out, and /dev/null is not a regular file; drop one"
    ]
