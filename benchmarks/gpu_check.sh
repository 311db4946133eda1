#!/usr/bin/env bash
# GPU check (issue 4): every model family's smoke preset trained on CUDA through the real CLI
# (`aigc ingest`, `aigc train --device cuda`), then the DCGAN training and generation
# benchmarks on CUDA. Prints each figure; the last lines are the benchmarks' JSON. Under
# 5 minutes on one GPU. Ready to run as is from the repository root on a machine with a GPU:
#
#   make setup TORCH_SPEC=torch     # a CUDA build of torch instead of the CPU pin
#   bash benchmarks/gpu_check.sh
#
# Environment: AIGC_PY (default .venv/bin/python), DEVICE (default cuda; DEVICE=cpu runs the
# same steps on the CPU, which is how CI-less machines check the script itself),
# GPU_CHECK_STEPS (default 20 timed steps per round of the training benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${AIGC_PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
STEPS=${GPU_CHECK_STEPS:-20}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS

"$PY" - "$DEVICE" <<'PY'
import sys, torch
dev = sys.argv[1]
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
if dev.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("gpu_check: DEVICE=cuda but torch sees no GPU (a CPU build of torch? "
                 "reinstall with `make setup TORCH_SPEC=torch`)")
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16: {torch.cuda.is_bf16_supported()}")
PY

snapshot() {  # dataset -> snapshot id
  "$PY" -m aigc ingest --dataset "$1" --home "$WORK/home" --json |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["snapshot_id"])'
}
IMAGES=$(snapshot digits)
TEXT=$(snapshot python-docs)
echo "snapshots: digits $IMAGES, python-docs $TEXT"

for spec in "dcgan $IMAGES" "vae $IMAGES" "diffusion $IMAGES" "charlstm $TEXT" "transformer $TEXT"; do
  set -- $spec
  t0=$SECONDS
  "$PY" -m aigc train --snapshot "$2" --model "$1" --preset smoke --device "$DEVICE" \
    --home "$WORK/home" --json >"$WORK/train-$1.json"
  "$PY" - "$1" "$WORK/train-$1.json" "$((SECONDS - t0))" <<'PY'
import json, sys
family, path, wall = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(path))
keys = ["steps", "samples_per_s"] + sorted(k for k in r if k.startswith("final_"))
shown = ", ".join(f"{k} {r[k]:.4g}" if isinstance(r[k], float) else f"{k} {r[k]}" for k in keys)
print(f"smoke {family}: device {r['device']}, {wall} s, {shown}")
PY
done

echo "== benchmarks/train_throughput.py --device $DEVICE"
"$PY" benchmarks/train_throughput.py --device "$DEVICE" --steps "$STEPS" --rounds 3 --family-steps 10
echo "== benchmarks/generate_throughput.py --device $DEVICE"
"$PY" benchmarks/generate_throughput.py --device "$DEVICE" --n 16384 --batch-size 2048 --baseline-n 256
echo "== benchmarks/diffusion_throughput.py --device $DEVICE"
"$PY" benchmarks/diffusion_throughput.py --device "$DEVICE" --n 1024 --batch-size 256
echo "gpu_check: done in $((SECONDS - START)) s"
