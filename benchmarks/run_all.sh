#!/usr/bin/env bash
# Every benchmark in turn (about an hour on 2 cores); results land in benchmarks/results/.
#   bash benchmarks/run_all.sh ../shared/data/isic2018
set -euo pipefail
DATA=${1:?usage: run_all.sh DATA_DIR}
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
$PY benchmarks/evaluate_model.py --data "$DATA"
$PY benchmarks/evaluate_model.py --data "$DATA" --tta --out benchmarks/results/evaluate_model_tta.json
$PY benchmarks/paper_protocol.py --data "$DATA" --init scratch --out benchmarks/results/paper_protocol_scratch.json
$PY benchmarks/paper_protocol.py --data "$DATA" --init bundled --out benchmarks/results/paper_protocol_bundled.json
$PY benchmarks/speed.py --data "$DATA"
$PY benchmarks/data_efficiency.py --data "$DATA"
$PY benchmarks/ddp.py --data "$DATA" --limit 100 --size 128 --epochs 2
# Review queue and click-to-fix also need HAM10000 (a second source): HAM=../shared/data/ham10000
if [ -n "${HAM:-}" ]; then
  $PY benchmarks/review_queue.py --isic "$DATA" --ham "$HAM"
  $PY benchmarks/click_to_fix.py --isic "$DATA" --ham "$HAM" --n 100
  $PY benchmarks/click_to_fix.py --isic "$DATA" --ham "$HAM" --n 100 \
    --click-model src/napari_skinseg/weights/skinseg_click_isic2018.pt \
    --out benchmarks/results/click_to_fix_network.json
  $PY benchmarks/compare_models.py --isic "$DATA" --ham "$HAM" --model bundled=bundled \
    --out benchmarks/results/compare_models_bundled.json
  $PY benchmarks/int8_engine.py --isic "$DATA" --ham "$HAM"
fi
$PY benchmarks/engines.py --data "$DATA" --n 100
$PY benchmarks/cpu_path.py --data "$DATA" --n 100
$PY benchmarks/review_engine.py --data "$DATA" --n 100
$PY benchmarks/worker_click_latency.py --data "$DATA" --n 8 --clicks 10
# On a GPU machine: bash benchmarks/gpu/session.sh (see its header; BENCHMARKS.md §13)
