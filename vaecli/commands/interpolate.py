"""`vae interpolate`: decode a path between two images' posterior means (every layer's, for an hvae)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import check_output, chosen_class, open_model
from vaecli.commands.options import (
    DeviceOption,
    Invert,
    InvertOption,
    LabelOption,
    ModelOption,
    PixelSeedOption,
    QuietOption,
    SamplePixelsOption,
    ScaleOption,
    gif_option,
    out_option,
    steps_option,
)
from vaecli.errors import UsageError
from vaecli.store.bundled import model_name
from vaecli.store.files import check_output_file, check_output_folder, highest_number, write_atomic
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    import torch

DEFAULT_STRIP = Path("interpolation.png")
END_FRAME_MS = 600  # the GIF rests on each end so the eye can see both images
STEP_FRAME_MS = 120
MAX_STEPS = 10_000  # every frame is held for the strip and the GIF


class Method(str, Enum):
    lerp = "lerp"
    slerp = "slerp"


def interpolate_command(
    first: Annotated[str, typer.Argument(metavar="A", help="First image (PNG/JPEG, or - for stdin).")],
    second: Annotated[str, typer.Argument(metavar="B", help="Second image (PNG/JPEG, or - for stdin).")],
    steps: Annotated[int, steps_option("Decoded points strictly between A and B.", 1, MAX_STEPS)] = 3,
    method: Annotated[
        Method, typer.Option("--method", help="lerp (straight line) or slerp (great circle, keeps the norm typical).")
    ] = Method.lerp,
    out: Annotated[
        str | None,
        out_option("the strip PNG, or - for its bytes on stdout "
                   "[default: interpolation.png, or none when only --frames or --gif is given]", show_default=False),
    ] = None,
    frames: Annotated[
        Path | None,
        typer.Option("--frames", help="Also write each panel as DIR/frame-0001.png...", metavar="DIR",
                     show_default=False),
    ] = None,
    gif: Annotated[
        Path | None,
        gif_option("Also write a looping animation of the decoded path A -> B -> A."),
    ] = None,
    invert: InvertOption = Invert.auto,
    scale: ScaleOption = 1,
    sample_pixels: SamplePixelsOption = False,
    seed: PixelSeedOption = 0,
    label: LabelOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Write one strip: A, recon(A), --steps decodings between them, recon(B), B; paths on stdout.

    Each decoding is the mean of p(x|z), or with --sample-pixels a draw from it; a conditional model
    encodes both ends and decodes the path with the class --label names. A hierarchical model moves
    every layer: the top code by --method, each lower layer's posterior-mean map linearly.

    \b
    Example: vae interpolate a.png b.png --steps 5 --method slerp -o strip.png
    """
    term = Terminal(quiet=quiet)
    strip = _check_outputs(out, frames, gif)
    import torch

    from vaecli.analysis.latent import (
        decode_layers_to_pixels,
        interpolate_layers,
        label_tensor,
        make_generator,
        posterior_layers,
    )
    from vaecli.data.images import (
        check_grid,
        gif_bytes,
        make_grid,
        path_captions,
        png_bytes,
        read_images,
        there_and_back,
    )

    checkpoint = open_model(term, model, device)
    index = chosen_class(term, checkpoint, label, model_name(checkpoint.path))
    if strip is not None:  # one row of steps + 4 panels: its size is known before any work
        check_grid(steps + 4, checkpoint.config.model.image_shape, steps + 4, scale, f"--steps {steps}")
    inputs = read_images([first, second], checkpoint.config.model.image_shape, invert.value)
    for line in inputs.notes(invert.value):
        term.note(line)
    layers = posterior_layers(checkpoint.model, inputs.pixels, label_tensor(index, 2))
    if len(layers) > 1:
        term.note(f"hierarchical model: the path moves the top code ({method.value}) and each of the "
                  f"{len(layers) - 1} lower layers' posterior-mean maps (linearly) from A's to B's")
    path = interpolate_layers(layers, steps, method.value)  # recon(A), steps points, recon(B)
    draws = make_generator(seed) if sample_pixels else None
    decoded = decode_layers_to_pixels(checkpoint.model, path, draws, label_tensor(index, steps + 2))
    panels = torch.cat([inputs.pixels[:1], decoded, inputs.pixels[1:]])
    if strip is not None:
        figure = png_bytes(make_grid(panels, nrow=len(panels)), scale)
        if strip == "-":
            term.emit_bytes(figure)
        else:
            term.emit(str(write_atomic(Path(strip), figure)))
    if frames is not None:
        _write_frames(term, panels, frames, scale)
    if gif is not None:
        loop = torch.cat([decoded, decoded[1:-1].flip(0)])  # A -> B -> back toward A
        durations = [STEP_FRAME_MS] * len(loop)
        durations[0] = durations[len(decoded) - 1] = END_FRAME_MS
        captions = there_and_back(path_captions(len(decoded)))  # each frame's t, as the loop plays
        term.emit(str(write_atomic(gif, gif_bytes(loop, durations, scale, captions))))


def _check_outputs(out: str | None, frames: Path | None, gif: Path | None) -> str | None:
    """Refuse unwritable or conflicting outputs before the model is loaded; returns the strip's target."""
    if out == "-" and (frames is not None or gif is not None):
        raise UsageError("-o - writes PNG bytes to stdout, so paths for --frames/--gif cannot go there")
    strip = out if out is not None else (None if frames or gif else str(DEFAULT_STRIP))
    if strip is not None:
        check_output(strip, "-o")
    if gif is not None:
        check_output_file(gif, "--gif")
    if frames is not None:
        check_output_folder(frames, "--frames")  # made when the first frame is written
    return strip


def _write_frames(term: Terminal, panels: torch.Tensor, folder: Path, scale: int) -> None:
    from vaecli.data.images import write_numbered

    # Frames of one run form a set: number from 1, and say when an earlier, longer run left more.
    for path in write_numbered([panels], len(panels), folder, "frame", force=True, scale=scale):
        term.emit(str(path))
    if highest_number(folder, "frame") > len(panels):
        term.warn(f"{folder} still holds frames after {path.name} from an earlier run; delete them first")
