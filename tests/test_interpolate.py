"""`vae interpolate` end to end (strip, frames, GIF) and the lerp/slerp paths."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image, ImageDraw

from vaecli.analysis.latent import fractions, interpolate
from vaecli.data.images import CAPTION_PX, GRID_PADDING
from vaecli.errors import SettingError


def shape(path, kind):
    """A white ring or bar on black, 28x28 grey."""
    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    if kind == "ring":
        draw.ellipse((8, 5, 20, 23), outline=255, width=3)
    else:
        draw.line((14, 4, 14, 24), fill=255, width=4)
    image.save(path)
    return path


@pytest.fixture
def pair(tmp_path):
    return shape(tmp_path / "a.png", "ring"), shape(tmp_path / "b.png", "bar")


def test_strip_has_seven_panels_for_three_steps(cli, tiny_model, tmp_path, pair):
    result = cli("interpolate", "a.png", "b.png", "-m", tiny_model, "--steps", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "interpolation.png\n"
    assert result.stderr == ""
    strip = Image.open(tmp_path / "interpolation.png")
    assert strip.format == "PNG" and strip.mode == "L"
    assert strip.size == (7 * 28 + 6 * GRID_PADDING, 28)
    # A first and B last, as the model saw them.
    assert strip.crop((0, 0, 28, 28)).tobytes() == Image.open(pair[0]).tobytes()
    assert strip.crop((strip.width - 28, 0, strip.width, 28)).tobytes() == Image.open(pair[1]).tobytes()


def test_frames_are_the_strip_panels_one_file_each(cli, tiny_model, tmp_path, pair):
    strip = cli("interpolate", "a.png", "b.png", "-m", tiny_model, "-o", "s.png", "--scale", "2")
    frames = cli("interpolate", "a.png", "b.png", "-m", tiny_model, "--frames", "fr", "--scale", "2")
    assert strip.exit_code == frames.exit_code == 0, frames.stderr
    assert frames.stdout == "".join(f"fr/frame-{i:04d}.png\n" for i in range(1, 8))
    assert not (tmp_path / "interpolation.png").exists()  # only what was asked for
    whole = Image.open(tmp_path / "s.png")
    assert whole.size == (2 * (7 * 28 + 6 * GRID_PADDING), 56)
    for index, line in enumerate(frames.stdout.splitlines()):
        frame = Image.open(tmp_path / line)
        assert frame.size == (56, 56) and frame.mode == "L"
        left = index * 2 * (28 + GRID_PADDING)
        assert whole.crop((left, 0, left + 56, 56)).tobytes() == frame.tobytes()


def test_gif_goes_there_and_back(cli, tiny_model, tmp_path, pair):
    result = cli("interpolate", "a.png", "b.png", "-m", tiny_model, "--gif", "anim.gif", "-o", "s.png")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "s.png\nanim.gif\n"
    gif = Image.open(tmp_path / "anim.gif")
    # Each frame under a strip with its t: widened alike so that the longest caption fits.
    assert gif.format == "GIF" and gif.height == 28 + CAPTION_PX and gif.width >= 28
    assert gif.n_frames == 8  # recon(A), 3 steps, recon(B), then the 3 steps back
    assert gif.info.get("loop") == 0


def test_methods_reach_the_path_and_are_deterministic(cli, tiny_model, tmp_path, pair, monkeypatch):
    # The tiny model codes the ring and the bar almost alike (two epochs on digits), so lerp and slerp may
    # decode to the same pixels: that the command's path follows --method is checked on the path itself.
    import vaecli.analysis.latent

    real, paths = vaecli.analysis.latent.interpolate, {}

    def spy(a, b, steps, method="lerp"):
        paths.setdefault(method, []).append(real(a, b, steps, method))
        return paths[method][-1]

    monkeypatch.setattr(vaecli.analysis.latent, "interpolate", spy)
    runs = {
        name: cli("interpolate", "a.png", "b.png", "-m", tiny_model, "--method", method, "-o", "-", "--steps", "2")
        for name, method in (("lerp", "lerp"), ("slerp", "slerp"), ("again", "slerp"))
    }
    assert all(run.exit_code == 0 for run in runs.values())
    assert runs["slerp"].stdout_bytes == runs["again"].stdout_bytes
    assert sorted(paths) == ["lerp", "slerp"] and len(paths["slerp"]) == 2
    assert not torch.equal(paths["lerp"][0], paths["slerp"][0])
    assert Image.open(io.BytesIO(runs["lerp"].stdout_bytes)).size == (6 * 28 + 5 * GRID_PADDING, 28)


def test_paths_lie_strictly_between_the_ends():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert fractions(3).tolist() == [0.25, 0.5, 0.75]
    lerp = interpolate(a, b, 3, "lerp")
    assert torch.allclose(lerp[1], torch.tensor([0.5, 0.5]))
    slerp = interpolate(a, b, 3, "slerp")
    assert torch.allclose(slerp.norm(dim=1), torch.ones(3))  # on the circle, not inside it
    assert torch.allclose(slerp[1], torch.tensor([0.5, 0.5]).sqrt())
    assert torch.allclose(interpolate(a, 2 * a, 1, "slerp"), torch.tensor([[1.5, 0.0]]))  # parallel
    assert torch.isfinite(interpolate(a, -a, 2, "slerp")).all()  # opposite: falls back to lerp
    with pytest.raises(SettingError, match="`steps` must be 1 or more"):
        interpolate(a, b, 0, "lerp")
    with pytest.raises(SettingError, match="`method=nearest`"):
        interpolate(a, b, 1, "nearest")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--steps", "0"], "--steps"),
        (["-o", "-", "--frames", "f"], "-o - writes PNG bytes to stdout"),
        (["--method", "cubic"], "--method"),
        (["-o", "."], ".: is a folder"),
    ],
)
def test_bad_options_are_one_line_errors(cli, tiny_model, pair, args, expected):
    result = cli("interpolate", "a.png", "b.png", "-m", tiny_model, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
