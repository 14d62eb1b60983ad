#!/bin/bash
# One prepared GPU session (issues 11, 12, 13), everything in one call of at most ~9.5 minutes:
#   phase 1, alone on the GPU: folder segmentation throughput (gpu_throughput.py) and the
#            training loop against a bare train step (train_speed.py);
#   phase 2, together on the GPU: bundled-model v2 candidates (train_model_v2.py) and the
#            click-to-fix network (train_click_model.py), each within the time left.
# Needs: .gpu/data.npz (or $DATA; made by pack_data.py; CC BY-NC data, never committed) and .whl/ holding the
# segmentation-models-pytorch wheel (the GPU image lacks it). Results go to $OUT.
set -u
T0=$(date +%s)
END=$((T0 + ${SESSION_SECONDS:-555}))
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/gpu
LOG=$OUT/log.txt
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/benchmarks:$PWD/benchmarks/gpu
DEVICE=${DEVICE:-cuda}
{
  echo "== machine"; nvidia-smi -L; nproc
  python3 -c "import torch, segmentation_models_pytorch as smp; print('torch', torch.__version__, 'smp', smp.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
} >>"$LOG" 2>&1

# the ISIC images of the packed file as 256² JPEG files, the source of the throughput test
python3 - >>"$LOG" 2>&1 <<'EOF'
import numpy as np, pathlib
import os; d = np.load(os.environ.get("DATA", ".gpu/data.npz")); out = pathlib.Path("/tmp/gpu/jpeg"); out.mkdir(parents=True, exist_ok=True)
for part in ("isic_train", "isic_val"):
    jpeg, off, names = d[part + "_jpeg"], d[part + "_offsets"], d[part + "_names"]
    for i, name in enumerate(names):
        (out / f"{name}.jpg").write_bytes(jpeg[off[i]:off[i + 1]].tobytes())
print("jpeg files:", len(list(out.iterdir())))
EOF

echo "== phase 1a: folder segmentation throughput ($(($(date +%s) - T0)) s)" >>"$LOG"
if [ -f benchmarks/gpu_throughput.py ]; then
  timeout 90 python3 benchmarks/gpu_throughput.py /tmp/gpu/jpeg --device "$DEVICE" --n ${THROUGHPUT_N:-1500} --budget 55 \
    --out "$OUT/throughput.json" >>"$LOG" 2>&1 || echo "throughput: exit $?" >>"$LOG"
fi
echo "== phase 1b: training loop vs bare step ($(($(date +%s) - T0)) s)" >>"$LOG"
timeout 70 python3 benchmarks/gpu/train_speed.py --device "$DEVICE" --out "$OUT/train_speed.json" \
  ${TRAIN_SPEED_ARGS:-} >>"$LOG" 2>&1 || echo "train_speed: exit $?" >>"$LOG"

NOW=$(date +%s)
SECONDS_LEFT=$((END - NOW - 25))
echo "== phase 2: training, $SECONDS_LEFT s each ($((NOW - T0)) s)" >>"$LOG"
COMMON="--device $DEVICE --seconds $SECONDS_LEFT --barrier /tmp/gpu/barrier --parties 3 ${TRAIN_ARGS:-}"
python3 benchmarks/gpu/train_model_v2.py ${DATA:-.gpu/data.npz} --out /tmp/gpu/v2a.pt $COMMON \
  --log /tmp/gpu/v2a.json >>"$LOG" 2>&1 &
python3 benchmarks/gpu/train_model_v2.py ${DATA:-.gpu/data.npz} --out /tmp/gpu/v2b.pt $COMMON \
  --colour-constancy shades_of_gray --log /tmp/gpu/v2b.json >>"$LOG" 2>&1 &
python3 benchmarks/gpu/train_click_model.py ${DATA:-.gpu/data.npz} --out "$OUT/click_model.pt" $COMMON \
  ${CLICK_ARGS:-} --log /tmp/gpu/click.json >>"$LOG" 2>&1 &
wait
for v in v2a v2b; do
  [ -f /tmp/gpu/$v.fp16.pt ] && cp /tmp/gpu/$v.fp16.pt "$OUT/$v.pt"
done
(cd /tmp/gpu && tar cf "$OUT/logs.tar" *.json 2>/dev/null)
echo "== done ($(($(date +%s) - T0)) s)" >>"$LOG"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv >>"$LOG" 2>&1
