#!/usr/bin/env bash
# Many institutions on one GPU: a Flower simulation with fractional client-resources-num-gpus.
#   bash experiments/bench/gpu_simulation.sh [OUT_DIR] [INSTITUTIONS] [GPU_SHARE]
# Writes OUT_DIR/scale.json (wall time, round time, peak host memory) and OUT_DIR/gpu_memory.csv
# (nvidia-smi, every second). Extra Hydra overrides can be given in FED_UML_OVERRIDES.
set -euo pipefail
out=${1:-benchmarks}; n=${2:-64}; share=${3:-0.125}
mkdir -p "$out"
nvidia-smi --query-gpu=timestamp,name,memory.used,memory.total,utilization.gpu --format=csv -l 1 > "$out/gpu_memory.csv" &
smi=$!
trap 'kill $smi 2>/dev/null || true' EXIT
python3 -m experiments.bench.scale --institutions "$n" --client-cpus 1 --client-gpus "$share" --out "$out" \
  device=cuda model=resnet18 dataset.samples_per_class=320 dataset.test_samples_per_class=40 \
  federated.num_rounds=3 federated.local_epochs=1 ${FED_UML_OVERRIDES:-}
kill $smi || true
python3 - "$out/gpu_memory.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))[1:]
used = [float(r[2].split()[0]) for r in rows if len(r) > 2 and r[2].strip().split()[0].replace('.', '').isdigit()]
print(f"GPU {rows[0][1].strip() if rows else '?'}: peak memory used {max(used) if used else float('nan'):.0f} MiB over {len(used)} samples")
PY
