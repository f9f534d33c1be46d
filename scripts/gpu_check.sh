#!/usr/bin/env bash
# The whole GPU check of the fast path in one call (docs/BENCHMARKS.md, docs/REPRODUCTION.md):
#   1. the throughput benchmark (both input paths, fp32 / bf16, RSG phases) and a full-run timing;
#   2. a torch.profiler summary of training steps before and from T_th (scripts/profile_step.py:
#      top kernels, host gaps, CUDA synchronisations per step);
#   3. LDAM-DRW against LDAM-DRW-RSG on CIFAR-10-LT rho = 100 from the JPEG CIFAR-10 folder, SEEDS
#      seeds each, all at once (scripts/job_pool.py, JOBS_PER_GPU per GPU), with their final test errors.
# Usage: bash scripts/gpu_check.sh ZIP_OR_FOLDER OUT_DIR [SEEDS] [extra key=value ...]
#   ZIP_OR_FOLDER: cifar10-jpeg.zip or the unzipped cifar10-jpeg folder (train/, test/).
#   Environment: BENCH_STEPS (50), BENCH_ARGS (more scripts/benchmark.py options), PROFILE_STEPS (20),
#   JOBS_PER_GPU (default: all 2 x SEEDS runs at once), GPUS (default: every visible GPU; 0 the CPU).
#   CPU dry check: BENCH_STEPS=2 BENCH_ARGS='--precisions none --warmup 1' PROFILE_STEPS=2 and extras
#   such as train.epochs=1 train.device=cpu data.max_per_class=300
set -euo pipefail
source=$1; out=$2; seeds=${3:-1}; shift $(( $# >= 3 ? 3 : $# ))
python=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the training packages, from the checkout (no setup.sh there)
mkdir -p "$out"
if [ -d "$source" ]; then root=$source; else
  mkdir -p "$out/data" && unzip -q -o "$source" -d "$out/data" && root="$out/data/cifar10-jpeg"; fi
rsg=configs/fast/cifar10_jpeg_lt_ldam_drw_rsg_r100.yaml
base=configs/fast/cifar10_jpeg_lt_ldam_drw_r100.yaml
"$python" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$out/device.txt"
"$python" scripts/benchmark.py --config "$rsg" --steps "${BENCH_STEPS:-50}" ${BENCH_ARGS:-} --full-run \
  --full-run-dir "$out/full_run" data.root="$root" "$@" 2>"$out/benchmark.log" | tee "$out/benchmark.md"
"$python" scripts/profile_step.py --config "$rsg" --steps "${PROFILE_STEPS:-20}" data.root="$root" "$@" \
  2>"$out/profile.log" | tee "$out/profile.md" || echo "FAILED: the profile (see $out/profile.log)"
commands="$out/runs.txt"
: > "$commands"
for seed in $(seq 0 $((seeds - 1))); do
  for config in "$base" "$rsg"; do
    name=$(basename "$config" .yaml)
    printf '%q ' "$python" train.py --config "$config" data.root="$root" train.seed="$seed" \
      output_dir="$out/runs/$name/seed$seed" train.progress=false "$@" >> "$commands"
    echo >> "$commands"
  done
done
# every run at once unless JOBS_PER_GPU says otherwise; each run's log is $out/runs/<name>/seed<k>.log
"$python" scripts/job_pool.py --jobs-per-gpu "${JOBS_PER_GPU:-$((2 * seeds))}" ${GPUS:+--gpus "$GPUS"} "$commands" \
  2>&1 | tee "$out/runs.log" || true
"$python" - "$out/runs" <<'PY' | tee "$out/summary.md"
import json, os, statistics, sys
root = sys.argv[1]
print("| method | seeds | final test error % (mean +- std) | per seed |")
print("|---|---|---|---|")
for name in sorted(os.listdir(root)):
    errors = []
    for seed in sorted(d for d in os.listdir(os.path.join(root, name)) if not d.endswith(".log")):
        path = os.path.join(root, name, seed, "metrics.jsonl")
        if os.path.exists(path):
            last = [json.loads(line) for line in open(path)][-1]
            errors.append(100 - last["test"]["top1"])
    if errors:
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        print(f"| {name} | {len(errors)} | {statistics.mean(errors):.2f} +- {spread:.2f} | "
              f"{', '.join(f'{e:.2f}' for e in errors)} |")
PY
