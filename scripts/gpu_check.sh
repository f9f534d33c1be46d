#!/usr/bin/env bash
# The whole GPU check of the fast path in one call (docs/BENCHMARKS.md, docs/REPRODUCTION.md):
#   1. the throughput benchmark (both input paths, fp32 / bf16, RSG phases) and a full-run timing;
#   2. LDAM-DRW against LDAM-DRW-RSG on CIFAR-10-LT rho = 100 from the JPEG CIFAR-10 folder, SEEDS
#      seeds each, with their final test errors.
# Usage: bash scripts/gpu_check.sh ZIP_OR_FOLDER OUT_DIR [SEEDS] [extra key=value ...]
#   ZIP_OR_FOLDER: cifar10-jpeg.zip or the unzipped cifar10-jpeg folder (train/, test/).
#   CPU dry check: BENCH_STEPS=2 and extras such as train.epochs=1 train.device=cpu data.max_per_class=300
set -euo pipefail
source=$1; out=$2; seeds=${3:-1}; shift $(( $# >= 3 ? 3 : $# ))
python=${PYTHON:-python}
mkdir -p "$out"
if [ -d "$source" ]; then root=$source; else
  mkdir -p "$out/data" && unzip -q -o "$source" -d "$out/data" && root="$out/data/cifar10-jpeg"; fi
rsg=configs/fast/cifar10_jpeg_lt_ldam_drw_rsg_r100.yaml
base=configs/fast/cifar10_jpeg_lt_ldam_drw_r100.yaml
"$python" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$out/device.txt"
"$python" scripts/benchmark.py --config "$rsg" --steps "${BENCH_STEPS:-50}" --full-run --full-run-dir "$out/full_run" \
  data.root="$root" "$@" 2>"$out/benchmark.log" | tee "$out/benchmark.md"
for seed in $(seq 0 $((seeds - 1))); do
  for config in "$base" "$rsg"; do
    name=$(basename "$config" .yaml)
    "$python" train.py --config "$config" data.root="$root" train.seed="$seed" \
      output_dir="$out/runs/$name/seed$seed" "$@" 2>"$out/runs_${name}_seed$seed.log" >/dev/null || \
      { echo "FAILED: $name seed $seed (see $out/runs_${name}_seed$seed.log)"; tail -5 "$out/runs_${name}_seed$seed.log"; }
  done
done
"$python" - "$out/runs" <<'PY' | tee "$out/summary.md"
import json, os, statistics, sys
root = sys.argv[1]
print("| method | seeds | final test error % (mean +- std) | per seed |")
print("|---|---|---|---|")
for name in sorted(os.listdir(root)):
    errors = []
    for seed in sorted(os.listdir(os.path.join(root, name))):
        path = os.path.join(root, name, seed, "metrics.jsonl")
        if os.path.exists(path):
            last = [json.loads(line) for line in open(path)][-1]
            errors.append(100 - last["test"]["top1"])
    if errors:
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        print(f"| {name} | {len(errors)} | {statistics.mean(errors):.2f} +- {spread:.2f} | "
              f"{', '.join(f'{e:.2f}' for e in errors)} |")
PY
