#!/usr/bin/env bash
# Regenerates the README's figures in docs/ with `vae tour`, from a model trained exactly as the
# quick start trains it (`vae train --arch cnn`). Usage: scripts/make_docs_figures.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-runs/quickstart.safetensors}"
if [ ! -f "$model" ]; then
    mkdir -p "$(dirname "$model")"
    vae train --arch cnn -o "$model"
fi
vae tour -m "$model" -o docs --seed 0
