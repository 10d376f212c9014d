"""Bundle a trained checkpoint as vaecli/pretrained/NAME.safetensors: weights and metadata only.

Usage: python scripts/export_pretrained.py CHECKPOINT NAME [--eval "--binarize --limit 500 -k 100"]
The optimizer and RNG states are dropped (they only matter for --resume); the metadata keeps the
full history, the exact `vae train` command, and the recipe of a model with a fitted prior. With
--eval, `vae eval -m NAME ... --json` runs on the bundled file and its command and output are
recorded, so a test can check they reproduce.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from vaecli.checkpoint import BUNDLED_MODELS, PRETRAINED_DIR, load_checkpoint, save_checkpoint
from vaecli.config import to_dict, train_command_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("name", choices=BUNDLED_MODELS)
    parser.add_argument("--eval", default="", help="options of the `vae eval` run to record")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    meta = dict(checkpoint.meta)
    meta["config"] = to_dict(checkpoint.config)  # with the resolved network width
    # With a fitted prior in its past, the recipe's first step is the training from scratch.
    meta["command"] = meta["recipe"][0] if meta.get("recipe") else train_command_line(checkpoint.config)
    meta["bundled_as"] = args.name
    target = PRETRAINED_DIR / f"{args.name}.safetensors"
    save_checkpoint(target, checkpoint.model, meta)
    if args.eval:
        command = ["vae", "eval", "-m", args.name, *shlex.split(args.eval), "--json", "--device", "cpu"]
        out = subprocess.run([sys.executable, "-m", "vaecli", *command[1:]], capture_output=True, text=True, check=True)
        meta["evaluation"] = {"command": shlex.join(command), **json.loads(out.stdout)}
        save_checkpoint(target, checkpoint.model, meta)
    print(target)


if __name__ == "__main__":
    main()
