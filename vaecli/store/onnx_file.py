"""A model's decoder and encoder as one self-contained ONNX file, for runtimes without vaecli or torch.

The decoder takes float32 codes (N, latent) and gives the mean image in [0, 1], as `vae decode` has it before
rounding to 8 bits; the encoder takes uint8 images (N, C, H, W) and gives the top layer's posterior mean and
log-variance, converting pixels as `vae encode` does (x / 255). A conditional model takes int64 labels (N,)
for each. The file's metadata_props say all this, and the model's settings, as strings (JSON when structured).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime  # type: ignore[import-untyped]
import torch
from torch import nn

from vaecli import __version__
from vaecli.errors import ExportError, OutputError, SettingError
from vaecli.model.interface import VAEModel
from vaecli.model.objective import output_to_image
from vaecli.store.bundled import model_name
from vaecli.store.checkpoint import Checkpoint

PARTS = ("decoder", "encoder", "both")
PART_NAMES = {"decoder": "decoder", "encoder": "encoder", "both": "encoder and decoder"}  # for messages
TRACE_ROWS = 2  # the exporter treats a batch of 0 or 1 as a constant; the file takes any batch
CHECK_ROWS = 3  # rows of the check in onnxruntime: another batch size than the traced one
TOLERANCE = 1e-4  # onnxruntime against torch, absolute, in pixel values ([0, 1]) and in latent units
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # the exporter colours its messages
MESSAGE_CHARS = 120  # of the exporter's reason, as errors.first_line cuts
IMAGES, CODES = "n_images", "n_codes"  # the batch dimensions' names: the images' and the codes' counts
MAX_PROTO_BYTES = (1 << 31) - 1  # protobuf's limit for one message: past it the weights need a side file


@dataclass(frozen=True)
class Port:
    """One input or output of the file: its name, dtype, shape (the first, named, is the batch) and what it holds."""

    name: str
    dtype: str
    shape: tuple[str | int, ...]
    holds: str

    def describe(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape), "holds": self.holds}


def ports(model: VAEModel, part: str) -> tuple[list[Port], list[Port]]:
    """The file's inputs and outputs in order, for `part`: the encoder's first, then the decoder's."""
    config = model.config
    shape, latent = config.image_shape, config.latent_dim
    inputs, outputs = [], []
    if part in ("encoder", "both"):
        inputs.append(Port("images", "uint8", (IMAGES, *shape), "pixels 0 to 255, divided by 255 inside the graph"))
        if config.classes:
            inputs.append(Port("image_labels", "int64", (IMAGES,), f"each image's class, 0 to {config.classes - 1}"))
        outputs += [Port("mean", "float32", (IMAGES, latent), "the mean of q(z|x), as `vae encode` writes"),
                    Port("logvar", "float32", (IMAGES, latent), "the log-variance of q(z|x)")]
    if part in ("decoder", "both"):
        inputs.append(Port("codes", "float32", (CODES, latent), "top-layer codes z"))
        if config.classes:
            inputs.append(Port("code_labels", "int64", (CODES,), f"each code's class, 0 to {config.classes - 1}"))
        lower = "; lower layers at their prior means" if model.layers > 1 else ""
        outputs.append(Port("decoded", "float32", (CODES, *shape),
                            f"the mean of p(x|z) in [0, 1]{lower}; round(255 x) gives `vae decode`'s pixels"))
    return inputs, outputs


class _Graph(nn.Module):
    """The part's function: inputs in ports' order, labels after their images or codes."""

    def __init__(self, model: VAEModel, part: str):
        super().__init__()
        self.model, self.part = model, part
        self.conditional = bool(model.config.classes)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        step = 2 if self.conditional else 1
        outputs: tuple[torch.Tensor, ...] = ()
        if self.part in ("encoder", "both"):
            images, labels = inputs[0], inputs[1] if self.conditional else None
            inputs = inputs[step:]
            outputs += self.model.encode(images.float() / 255.0, labels)
        if self.part in ("decoder", "both"):
            codes, labels = inputs[0], inputs[1] if self.conditional else None
            # The model's own decoder, as `vae decode` runs it (fast_decoder's rewrite differs in the last bits).
            outputs += (output_to_image(self.model, self.model.decode(codes, labels)).clamp(0.0, 1.0),)
        return outputs


def example_inputs(model: VAEModel, part: str, rows: int, seed: int = 0) -> list[torch.Tensor]:
    """Seeded inputs for every port of `part`, `rows` each: uint8 noise images, normal codes, cycling labels."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    found = []
    for port in ports(model, part)[0]:
        if port.name == "images":
            found.append(torch.randint(0, 256, (rows, *config.image_shape), generator=generator, dtype=torch.uint8))
        elif port.name == "codes":
            found.append(torch.randn((rows, config.latent_dim), generator=generator))
        else:
            found.append(torch.arange(rows, dtype=torch.int64) % config.classes)
    return found


def metadata(checkpoint: Checkpoint, part: str, source: str) -> dict[str, str]:
    """The file's metadata_props: each value a string, JSON where it has structure."""
    config = checkpoint.config.model
    inputs, outputs = ports(checkpoint.model, part)
    return {
        "vaecli_version": __version__,
        "source": source,
        "part": part,
        "arch": config.arch,
        "image_shape": json.dumps(list(config.image_shape)),
        "latent_dim": str(config.latent_dim),
        "likelihood": config.likelihood,
        "class_names": json.dumps(checkpoint.class_names),
        "layers": str(checkpoint.model.layers),
        "dataset": str(checkpoint.config.dataset),
        "binarized": json.dumps(bool(checkpoint.config.binarize)),
        "model_config": json.dumps(asdict(config), sort_keys=True),
        "inputs": json.dumps({port.name: port.describe() for port in inputs}),
        "outputs": json.dumps({port.name: port.describe() for port in outputs}),
    }


@dataclass(frozen=True)
class Exported:
    """An exported file's bytes, the seconds the export took, and onnxruntime's largest difference from torch."""

    payload: bytes
    seconds: float
    difference: float


def export_onnx(checkpoint: Checkpoint, part: str) -> Exported:
    """The ONNX file of `part` of the model (see the module's docstring), checked in onnxruntime."""
    source = Path(model_name(checkpoint.path)).name  # a bundled name, or the file's: no path of this machine
    if part not in PARTS:
        raise SettingError(f"`part={part}`: choose one of {', '.join(PARTS)}")
    start = time.perf_counter()
    model = copy.deepcopy(checkpoint.model).to("cpu", torch.float32).eval()  # the caller's stays where it was
    proto = trace(model, part)
    forget_trace_records(proto)
    for key, value in metadata(checkpoint, part, source).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if proto.ByteSize() > MAX_PROTO_BYTES:
        raise OutputError(f"{source}: the {PART_NAMES[part]} would make an ONNX file over 2 GiB, more than one "
                          "file holds")
    payload = proto.SerializeToString()
    difference = check_outputs(model, part, payload)
    return Exported(payload, time.perf_counter() - start, difference)


def trace(model: VAEModel, part: str) -> onnx.ModelProto:
    """The part as an ONNX graph with a dynamic batch, by torch's exporter; ExportError names the part that failed."""
    inputs, outputs = ports(model, part)
    batches = {name: torch.export.Dim(name) for name in (IMAGES, CODES)}
    dynamic = tuple({0: batches[str(port.shape[0])]} for port in inputs)
    try:
        # The exporter reports its progress on stdout and warns on stderr: neither is the user's business.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _Graph(model, part), tuple(example_inputs(model, part, TRACE_ROWS)), dynamo=True,
                dynamic_shapes=(dynamic,), input_names=[port.name for port in inputs],
                output_names=[port.name for port in outputs], external_data=False,
                verbose=False,
            )
            assert program is not None  # no file was named: the program comes back
            return program.model_proto
    except Exception as exc:  # the exporter raises many kinds; each is one line naming the part
        raise ExportError(f"could not export the {_failed_part(model, part)}: {exporter_reason(exc)}") from exc


def forget_trace_records(proto: onnx.ModelProto) -> None:
    """Drop what the exporter notes on each node and value for debugging: the stack traces hold paths of this
    machine (its home, its Python's), and the records a tenth of the file."""
    graph = proto.graph
    for item in [graph, *graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        del item.metadata_props[:]


def exporter_reason(exc: BaseException) -> str:
    """The first line of the error that started it: torch's exporter wraps each in a page of generic advice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = ANSI_ESCAPE.sub("", str(exc)).strip().splitlines()
    return lines[0][:MESSAGE_CHARS] if lines else type(exc).__name__


def _failed_part(model: VAEModel, part: str) -> str:
    """Which part of a failed export of both is to blame: the encoder's alone is tried (the decoder's otherwise)."""
    if part != "both":
        return part
    try:
        trace(model, "encoder")
    except ExportError:
        return "encoder"
    return "decoder"


def check_outputs(model: VAEModel, part: str, payload: bytes) -> float:
    """Run the file in onnxruntime on a batch the trace never saw; its largest difference from torch's outputs."""
    inputs, _ = ports(model, part)
    given = example_inputs(model, part, CHECK_ROWS, seed=1)
    with torch.no_grad():
        expected = _Graph(model, part)(*given)
    session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
    found = session.run(None, {port.name: tensor.numpy() for port, tensor in zip(inputs, given, strict=True)})
    worst = max(float(np.abs(np.asarray(a) - b.numpy()).max()) for a, b in zip(found, expected, strict=True))
    if not worst <= TOLERANCE:
        raise ExportError(f"the exported {PART_NAMES[part]}: onnxruntime's outputs differ from the model's by "
                          f"{worst:.3g} (more than {TOLERANCE:g}); this model cannot be exported faithfully")
    return worst
