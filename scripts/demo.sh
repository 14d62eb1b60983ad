#!/usr/bin/env bash
# The main job on an embedded default: generate synthetic dermoscopy-like samples, segment them
# with the bundled model into Results/ (masks + outline overlays), and score them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh .
SKINSEG=.venv/bin/skinseg
[ -d samples/images ] || $SKINSEG sample samples --n 6 --size 512 --seed 0
$SKINSEG segment samples/images Results --overlay --overwrite
$SKINSEG evaluate Results samples/masks --csv Results/evaluation.csv --overwrite
