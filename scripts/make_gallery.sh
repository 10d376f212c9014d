#!/usr/bin/env bash
# Draws the README's gallery, docs/gallery/*.png, from the bundled models: what `vae traverse` and
# `vae manifold` show on a model trained long enough to have learned something, and `vae sample --label all`.
#
# Usage: scripts/make_gallery.sh      # needs MNIST and Fashion-MNIST ($VAE_DATA_ROOT) for the test codes
set -euo pipefail
cd "$(dirname "$0")/.."

vae() { "${PYTHON:-python}" -m vaecli "$@"; }  # this checkout's vaecli, whatever `vae` is on PATH
out=docs/gallery
mkdir -p "$out"
for model in mnist fashion-mnist; do
    # On the CPU with fixed seeds: the same pictures on every run.
    vae traverse -m "$model" --active-only --limit 1000 --seed 0 --device cpu -q -o "$out/traverse-$model.png"
    vae manifold -m "$model" --size 15 --with-codes --limit 1000 --device cpu -q -o "$out/manifold-$model.png"
done
# The conditional model: the same eight codes decoded as every class, a row per class.
vae sample -m mnist-conditional --label all -n 8 --seed 1 --device cpu -q --grid "$out/conditional-mnist.png"
ls -l "$out"
