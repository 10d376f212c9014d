#!/usr/bin/env bash
# Regenerates the README's figures, docs/*.png, with `vae tour` on docs/quickstart.safetensors: a model
# trained exactly as the quick start trains it (`vae train --arch cnn`), kept in the repository so that
# tests/test_readme.py can draw the figures again and compare them.
#
# Usage: scripts/make_docs_figures.sh            # the figures, from the committed model
#        scripts/make_docs_figures.sh --retrain  # train the model again first (5 minutes on 2 CPU cores)
# Needs MNIST ($VAE_DATA_ROOT, or a download) and this checkout's Python environment ($PYTHON, else python).
set -euo pipefail
cd "$(dirname "$0")/.."

model=docs/quickstart.safetensors
vae() { "${PYTHON:-python}" -m vaecli "$@"; }  # this checkout's vaecli, whatever `vae` is on PATH

if [ "${1:-}" = "--retrain" ] || [ ! -f "$model" ]; then
    mkdir -p runs
    # --force: a fresh run from scratch, as on a fresh clone; runs/ is not committed.
    vae train --arch cnn -o runs/quickstart.safetensors --force
    # The optimizer and RNG states only serve --resume; without them the file is a third of the size.
    "${PYTHON:-python}" scripts/weights_only.py runs/quickstart.safetensors "$model"
fi

# Drawn into a scratch folder first: docs/ changes only when all four figures came from MNIST.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# On the CPU, as the test draws them: a GPU's kernels round differently.
status=0
vae tour -m "$model" -o "$scratch" --seed 0 --device cpu > /dev/null 2> "$scratch/stderr" || status=$?
cat "$scratch/stderr" >&2
[ "$status" = 0 ] || exit "$status"
if grep -q "instead" "$scratch/stderr"; then  # tour's note when it falls back to the offline digits
    echo "error: MNIST is not available; set VAE_DATA_ROOT to a folder holding MNIST/raw (docs/ left as it was)" >&2
    exit 1
fi
for figure in latent reconstructions interpolation samples; do
    cp "$scratch/$figure.png" "docs/$figure.png"
    echo "docs/$figure.png"
done
