"""`vae export`: a model's decoder and encoder as an ONNX file, for onnxruntime and other runtimes."""

from __future__ import annotations

import importlib.util
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vaecli.commands.common import check_output, model_path
from vaecli.commands.options import QuietOption, force_option, out_option
from vaecli.errors import UsageError
from vaecli.store.bundled import model_name
from vaecli.store.files import kind_of, write_atomic
from vaecli.terminal.console import Terminal

# The `onnx` extra: torch's exporter writes through onnxscript, onnx holds the file, onnxruntime checks it.
EXTRA = ("onnx", "onnxscript", "onnxruntime")


class Part(str, Enum):
    decoder = "decoder"
    encoder = "encoder"
    both = "both"


def export_command(
    checkpoint: Annotated[
        str | None,
        typer.Argument(help="Checkpoint path or bundled name (default: as for -m).", metavar="MODEL",
                       show_default=False),
    ] = None,
    out: Annotated[
        str | None,
        out_option("the .onnx file, or - for its bytes on stdout [default: NAME.onnx here, NAME the checkpoint's]",
                   show_default=False),
    ] = None,
    part: Annotated[
        Part,
        typer.Option("--part", help="decoder: codes to images; encoder: images to q(z|x)'s mean and "
                     "log-variance; both: one file holding the two."),
    ] = Part.decoder,
    force: Annotated[bool, force_option("Replace an existing file at -o.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Export a model to ONNX: its decoder, its encoder or both, for onnxruntime without vaecli.

    The decoder maps float32 codes (N x latent) to the mean image in [0, 1] that `vae decode`
    rounds to pixels; the encoder maps uint8 images to the mean and log-variance of q(z|x). The
    file is checked in onnxruntime before it is written; its metadata names shapes and classes.
    Prints the file's path (-o - writes the file to stdout). Needs the onnx extra: pip install 'vaecli[onnx]'.

    \b
    Example: vae export mnist -o mnist.onnx
    """
    term = Terminal(quiet=quiet)
    _check_extra()
    path = model_path(term, checkpoint)
    target = out if out is not None else f"{path.stem}.onnx"
    check_output(target, "-o")
    if not force and target != "-" and kind_of(Path(target), "-o") == "file":
        raise UsageError(f"-o {target}: already exists; write elsewhere with -o, or replace it with --force")
    from vaecli.analysis.latent import load_model
    from vaecli.store.onnx_file import PART_NAMES, export_onnx

    loaded = load_model(path, "cpu")  # the graph is traced on the CPU; onnxruntime picks its own device
    exported = export_onnx(loaded, part.value)
    if target == "-":
        term.emit_bytes(exported.payload)
    else:
        term.emit(str(write_atomic(Path(target), exported.payload)))
    term.note(f"exported the {PART_NAMES[part.value]} of {model_name(path)} in {exported.seconds:.1f} s; "
              f"onnxruntime's outputs match the model's to within {exported.difference:.1g}")


def _check_extra() -> None:
    """Refuse before anything is read or written when the onnx extra is not installed."""
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"vae export needs the onnx extra ({', '.join(missing)} missing here); "
                         "install it with pip install 'vaecli[onnx]'")

