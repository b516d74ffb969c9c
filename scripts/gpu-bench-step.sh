#!/usr/bin/env bash
# Runs ON the GPU machine (through the device tool), from the repo root, with the ignored
# folder gpu/ carried. Build and stage it here first:
#   CARGO_TARGET_DIR=target-cuda cargo build --release -p padam-lab --features cuda
#   mkdir -p gpu && cp target-cuda/release/padam gpu/ && strip gpu/padam
#   cp ../shared/bench/{cuda-env.sh,torch_step_bench.py} gpu/
# Everything is measured in this one call: our step, burn's AdamW/Adam, PyTorch's optimizers.
set -uo pipefail
source gpu/cuda-env.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
date -u +%Y-%m-%dT%H:%MZ >> "$OUT/device.txt"
# cubecl keeps its compiled-kernel and autotune cache under ./target; reuse the last one.
[ -f gpu/cubecl-cache.tgz ] && tar xzf gpu/cubecl-cache.tgz
t0=$(date +%s)
./gpu/padam bench verify --backend cuda 2>&1 | tee "$OUT/verify.txt"
echo "verify took $(( $(date +%s) - t0 )) s"
./gpu/padam bench step --backend cuda --iters "${ITERS:-30}" --json "$OUT/step.json" 2>&1 | tee "$OUT/step.txt"
# the same again: the spread between the two runs is the noise floor of these numbers
./gpu/padam bench step --backend cuda --iters "${ITERS:-30}" 2>&1 | tee "$OUT/step-repeat.txt"
PYTHONUNBUFFERED=1 python3 gpu/torch_step_bench.py 2>&1 | tee "$OUT/torch_step.txt"
tar czf "$OUT/cubecl-cache.tgz" target 2>/dev/null || true
echo "total $(( $(date +%s) - t0 )) s"
