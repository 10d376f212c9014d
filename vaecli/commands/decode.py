"""`vae decode`: turn latent codes (.npy, N x latent) back into images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vaecli.commands.options import (
    DeviceOption,
    ModelOption,
    NrowOption,
    QuietOption,
    ScaleOption,
    SeedOption,
)
from vaecli.commands.sample import (
    ForceOption,
    GridOption,
    OutFolderOption,
    check_outputs,
    write_images,
)
from vaecli.console import term
from vaecli.errors import InputError, UsageError


def decode_command(
    codes: Annotated[
        str | None,
        typer.Argument(help=".npy file of codes (N x latent) as `vae encode` writes; - or none reads stdin.",
                       metavar="FILE.npy", show_default=False),
    ] = None,
    out: OutFolderOption = ".",
    grid: GridOption = None,
    nrow: NrowOption = None,
    scale: ScaleOption = 1,
    force: ForceOption = False,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Decode each row of a .npy array to an image: decoded-0001.png... in -o DIR, or one --grid.

    Example: vae encode a.png b.png | vae decode -o out/
    """
    term.quiet = quiet
    check_outputs(out, grid, nrow)
    data, name = _read_source(codes)
    from vaecli.latent import decode_to_pixels, open_model, read_codes

    checkpoint, note = open_model(model, device)
    if note:
        term.note(note)
    z = read_codes(data, checkpoint.config.model.latent_dim, name)
    write_images(decode_to_pixels(checkpoint.model, z), out, grid, nrow, scale, force, "decoded")


def _read_source(codes: str | None) -> tuple[bytes, str]:
    if codes is None or codes == "-":
        if codes is None and sys.stdin.isatty():
            raise UsageError("give a .npy file, or pipe one in: vae encode a.png | vae decode")
        return sys.stdin.buffer.read(), "stdin"
    path = Path(codes)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a .npy file written by `vae encode`")
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
