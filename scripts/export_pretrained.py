"""Bundle a trained checkpoint as vaecli/pretrained/NAME.safetensors: weights and metadata only.

Usage: python scripts/export_pretrained.py CHECKPOINT NAME [--eval-json FILE]
The optimizer and RNG states are dropped (they only matter for --resume); the metadata keeps the
full history and the exact `vae train` command, and, with --eval-json, the output of
`vae eval --json` on this model, so tests can check that evaluation reproduces it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaecli.checkpoint import BUNDLED_MODELS, PRETRAINED_DIR, load_checkpoint, save_checkpoint
from vaecli.config import to_dict, train_command_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("name", choices=BUNDLED_MODELS)
    parser.add_argument("--eval-json", type=Path, help="output of `vae eval --json` for this model")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    meta = dict(checkpoint.meta)
    meta["config"] = to_dict(checkpoint.config)  # with the resolved network width
    meta["command"] = train_command_line(checkpoint.config)
    meta["bundled_as"] = args.name
    if args.eval_json is not None:
        meta["evaluation"] = json.loads(args.eval_json.read_text())
    target = PRETRAINED_DIR / f"{args.name}.safetensors"
    save_checkpoint(target, checkpoint.model, meta)
    print(target)


if __name__ == "__main__":
    main()
