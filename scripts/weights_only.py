"""Copy a checkpoint without its optimizer and RNG states: the weights and metadata, a third of the size.

Usage: python scripts/weights_only.py runs/quickstart.safetensors docs/quickstart.safetensors
The copy draws, samples and evaluates like the original; only `vae train --resume` needs what it drops.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vaecli.store.checkpoint import load_checkpoint, save_checkpoint


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    checkpoint = load_checkpoint(source, device="cpu")
    save_checkpoint(target, checkpoint.model, checkpoint.meta)  # written atomically, like every checkpoint
    print(target)


if __name__ == "__main__":
    main()
