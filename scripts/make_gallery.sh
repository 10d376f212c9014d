#!/usr/bin/env bash
# Draws the README's gallery, docs/gallery/*.png, from the bundled models: what `vae traverse` and
# `vae manifold` show on a model trained long enough to have learned something, and `vae sample --label all`.
#
# Usage: scripts/make_gallery.sh      # needs MNIST and Fashion-MNIST ($VAE_DATA_ROOT) for the test codes, and
#                                     # scikit-image for the photographs' crops (scripts/photo_crops.py)
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
# The colour model on crops of the two photographs it never saw (its test split), written again by the recipe's
# script: each crop beside its reconstruction, samples, and the top latent's coordinates swept.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"${PYTHON:-python}" scripts/photo_crops.py "$scratch/photos-32" 2>/dev/null
mapfile -t crops < <(find "$scratch/photos-32/test" -name '*.png' | sort | awk 'NR % 56 == 1' | head -n 16)
vae reconstruct "${crops[@]}" -m photos-32 --compare "$out/photos-32-reconstructions.png" --nrow 4 --scale 3 \
    --device cpu -q -o "$scratch/recon" >/dev/null
vae sample -m photos-32 -n 36 --seed 0 --grid "$out/photos-32-samples.png" --scale 3 --device cpu -q
vae traverse -m photos-32 --dataset "$scratch/photos-32" --seed 0 --device cpu -q -o "$out/traverse-photos-32.png"
ls -l "$out"
