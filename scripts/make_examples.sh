#!/usr/bin/env bash
# Draws the pictures beside the README's training recipes, docs/examples/*.png: each recipe run exactly as
# the README gives it, on the CPU with its default seed, then the command the README shows after it.
#
# Usage: scripts/make_examples.sh     # about 2 minutes on 2 CPU cores (the photographs: make_gallery.sh)
# Models go to runs/examples/ (not committed); docs/examples/ changes only when every picture was drawn.
set -euo pipefail
cd "$(dirname "$0")/.."

vae() { "${PYTHON:-python}" -m vaecli "$@"; }  # this checkout's vaecli, whatever `vae` is on PATH
runs=runs/examples
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$runs"
export VAE_DEVICE=cpu

# A 2-D latent on scikit-learn's digits (offline): the plane itself, decoded, beside the test codes.
vae train --dataset digits --latent-dim 2 --epochs 100 --batch-size 32 -o "$runs/digits2d.safetensors" --force -q
vae manifold -m "$runs/digits2d.safetensors" --with-codes -o "$scratch/manifold-digits2d.png" -q

# A conditional model on the same digits: the same eight codes as every class.
vae train --dataset digits --conditional --epochs 100 --batch-size 32 -o "$runs/digits-cond.safetensors" --force -q
vae sample -m "$runs/digits-cond.safetensors" --label all -n 8 --seed 1 --grid "$scratch/conditional-digits.png" -q

mkdir -p docs/examples
cp "$scratch"/*.png docs/examples/
ls -l docs/examples
