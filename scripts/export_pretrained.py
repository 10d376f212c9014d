"""Bundle a trained checkpoint as vaecli/pretrained/NAME.safetensors: weights and metadata only.

Usage: python scripts/export_pretrained.py [CHECKPOINT] NAME [--eval "OPTIONS"] [--full-eval "OPTIONS"]
The optimizer and RNG states are dropped (they only matter for --resume); the metadata keeps the
full history, the exact `vae train` command, and the recipe of a model with a fitted prior.
--eval runs `vae eval -m NAME OPTIONS --json` on the bundled file and records its command and output
under `evaluation` (a quick run that tests/test_pretrained.py repeats); --full-eval records the
headline run (whole test split, K = 1000) under `full_evaluation`, which `vae info` shows first.
--dataset-name NAME and --dataset-command "CMD" record a folder dataset as the script that writes it names it.
--unrecorded-machine "cpu: NAME, N threads" names the machine of epochs trained before vaecli recorded
it (from the run's own notes), so `vae info` can state the compute of every epoch.
Without CHECKPOINT the bundled file keeps its weights, bit for bit, and only its metadata is written
again (recorded evaluations lose any path; those asked for are run again).

  python scripts/export_pretrained.py resnet-ft-mixture.safetensors mnist \\
      --eval "--binarize --limit 500 --iw-samples 100 --seed 0" --full-eval "--binarize --iw-samples 1000 --seed 0"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaecli.config import train_command_line
from vaecli.store.bundled import BUNDLED_MODELS, PRETRAINED_DIR
from vaecli.store.checkpoint import METADATA_KEY, load_checkpoint, save_checkpoint
from vaecli.store.files import write_atomic
from vaecli.store.schema import to_dict

EVALUATION_KEYS = {"eval": "evaluation", "full_eval": "full_evaluation"}
# Keys of eval's and fit-prior's JSON renamed since the bundled files were first written.
RENAMED = {"elbo": "neg_elbo", "seconds": "elapsed_s"}
# A word that starts like a path on the developer's machine: a bundled file must not carry one.
ABSOLUTE_PATH = re.compile(r"(?:^|[\s=])(?:/|~/|[A-Za-z]:\\)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, nargs="?", help="the trained model; omit to keep the bundled weights")
    parser.add_argument("name", choices=BUNDLED_MODELS)
    parser.add_argument("--eval", default="", help="options of the quick `vae eval` run to record")
    parser.add_argument("--full-eval", default="", help="options of the headline `vae eval` run to record")
    parser.add_argument("--unrecorded-machine", default="", help="the machine of epochs whose record lacks one")
    parser.add_argument("--dataset-name", default="", help="a folder dataset as its recipe names it (photos-32)")
    parser.add_argument("--dataset-command", default="", help="the command that writes that folder")
    args = parser.parse_args()
    target = PRETRAINED_DIR / f"{args.name}.safetensors"
    if args.checkpoint is not None:
        write_bundle(args.checkpoint, args.name, target, args.dataset_name)
    meta = read_bundled_metadata(target)
    if args.dataset_command:
        meta["dataset_command"] = args.dataset_command
    if args.unrecorded_machine:
        fill_unrecorded_machine(meta["history"], args.unrecorded_machine)
    for option, key in EVALUATION_KEYS.items():
        if getattr(args, option):
            meta[key] = evaluate(args.name, getattr(args, option))
        if isinstance(meta.get(key), dict):
            # An earlier export recorded the file's full path, and the names eval used then.
            meta[key] = current_names({**meta[key], "model": args.name})
    if isinstance(meta.get("prior"), dict):
        meta["prior"] = current_names(meta["prior"])
    found = list(absolute_paths(meta))
    if found:
        sys.exit(f"{target}: the metadata would carry paths of this machine: {found[:3]}; give relative ones")
    rewrite_metadata(target, meta)
    print(target)


def write_bundle(source: Path, name: str, target: Path, dataset_name: str = "") -> None:
    """The trained checkpoint's weights and metadata, without its optimizer and RNG states."""
    checkpoint = load_checkpoint(source)
    if dataset_name:
        # A folder a script writes (scripts/photo_crops.py photos-32) is named as the recipe names it, not by
        # where it lay on the machine that trained.
        checkpoint.config.dataset = dataset_name
    meta = dict(checkpoint.meta)
    meta["config"] = to_dict(checkpoint.config)  # with the resolved network width
    meta["dataset"] = checkpoint.config.dataset  # the copy for readers that do not parse the config
    # With a fitted prior in its past, the recipe's first step is the training from scratch.
    meta["command"] = meta["recipe"][0] if meta.get("recipe") else train_command_line(checkpoint.config)
    meta["bundled_as"] = name
    for key in EVALUATION_KEYS.values():
        meta.pop(key, None)  # measured on other weights, if any
    save_checkpoint(target, checkpoint.model, meta)


def fill_unrecorded_machine(history: list[dict], machine: str) -> None:
    """Name the machine of the epochs trained before each epoch's record held one (device.describe_machine's form)."""
    if not re.fullmatch(r"(\d+ x )?[a-z]+: .+", machine):
        sys.exit(f"--unrecorded-machine {machine!r}: write it as vae records it, e.g. 'cpu: AMD EPYC, 2 threads'")
    for record in history:
        if not record.get("machine"):
            record["machine"] = machine


def evaluate(name: str, options: str) -> dict:
    """Run `vae eval` on the bundled model; its command and JSON output, the model named as users name it."""
    command = ["vae", "eval", "-m", name, *shlex.split(options), "--json", "--device", "cpu"]
    out = subprocess.run([sys.executable, "-m", "vaecli", *command[1:]], capture_output=True, text=True, check=True)
    return {"command": shlex.join(command), **json.loads(out.stdout), "model": name}


def current_names(record: dict) -> dict:
    """A recorded command output under the names vae's JSON uses now (README: JSON for scripts)."""
    return {RENAMED.get(key, key): value for key, value in record.items()}


def read_bundled_metadata(path: Path) -> dict:
    header = _header(path.read_bytes())
    return json.loads(header["__metadata__"][METADATA_KEY])


def rewrite_metadata(path: Path, meta: dict) -> None:
    """Write `meta` into the file with its tensors as they are, and check every tensor's bytes after."""
    from safetensors.torch import load, save

    raw = path.read_bytes()
    before = tensor_digests(raw)
    metadata = {**_header(raw).get("__metadata__", {}), METADATA_KEY: json.dumps(meta, sort_keys=True)}
    write_atomic(path, save(load(raw), metadata=metadata))
    after = tensor_digests(path.read_bytes())
    if after != before:
        changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
        sys.exit(f"{path}: tensors changed while only the metadata was rewritten: {changed[:5]}")


def tensor_digests(raw: bytes) -> dict[str, str]:
    """SHA-256 of each tensor's dtype, shape and stored bytes, read from the safetensors layout itself."""
    header = _header(raw)
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    digests = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        digest = hashlib.sha256(f"{entry['dtype']} {entry['shape']}".encode())
        digest.update(raw[start + begin : start + end])
        digests[name] = digest.hexdigest()
    return digests


def absolute_paths(value: Any, where: str = "") -> Iterator[str]:
    """The keys of text values that hold an absolute path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from absolute_paths(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from absolute_paths(item, f"{where}[{index}]")
    elif isinstance(value, str) and ABSOLUTE_PATH.search(value):
        yield where


def _header(raw: bytes) -> dict:
    size = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + size])


if __name__ == "__main__":
    main()
