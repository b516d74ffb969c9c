#!/usr/bin/env bash
# Runs ON the GPU machine (through the device tool), from the repo root, with the ignored
# folder gpu/ carried. Stage it here first: `bash scripts/gpu-stage.sh` (builds the
# `--features cuda` binary, copies ../shared/bench/{cuda-env.sh,torch_*_bench.py}).
# Everything is measured in this one call, so the ratios between ours, burn's AdamW and
# PyTorch's optimizers and training steps come from one machine state:
#   1. padam bench verify (every optimizer, fused kernel and tensor ops, vs float64)
#   2. padam bench step, twice (the spread is the noise), then torch_step_bench.py
#   3. torch_train_bench.py, then padam bench train on the same workloads
# Each part has its own time limit (seconds): VERIFY_S, STEP_S, TORCH_STEP_S, TRAIN_S (TORCH_TRAIN=0 leaves
# out torch_train_bench.py); STEP_OPTIMIZERS and TRAIN_OPTIMIZERS pick the rows; HOST_PROFILE=1 adds
# `padam bench step --host-profile` on PROFILE_OPTIMIZERS (where each step's host time goes); the compiled-kernel
# cache comes back as $OUT/cubecl-cache.tgz for the next call (carry it as gpu/cubecl-cache.tgz).
# BACKENDS (default "cuda") runs each padam part on every backend named: "cuda tch" also runs the
# `--features tch` binary (staged with `TCH=1 bash scripts/gpu-stage.sh`).
set -uo pipefail
source "$(dirname "$0")/gpu-setup.sh"
OUT=${OUT:-/tmp/out}; FINAL=$OUT; OUT=/tmp/bench-out; rm -rf "$OUT"; mkdir -p "$OUT" "$FINAL"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/device.txt"
date -u +%Y-%m-%dT%H:%MZ >> "$OUT/device.txt"
t0=$(date +%s)
BACKENDS=${BACKENDS:-cuda}
bin() { if [ "$1" = tch ]; then echo /tmp/padam-tch; else echo /tmp/padam; fi; }
{
  for b in $BACKENDS; do
    timeout "${VERIFY_S:-120}" "$(bin "$b")" bench verify --backend "$b"
    echo "verify $b rc=$? after $(( $(date +%s) - t0 )) s"
  done
} 2>&1 | tee "$OUT/verify.txt"
if [ "${STEP_S:-150}" != 0 ]; then
{
  for b in $BACKENDS; do
    timeout "${STEP_S:-150}" "$(bin "$b")" bench step --backend "$b" --iters "${ITERS:-30}" --json "$OUT/step-$b.json" \
      ${STEP_OPTIMIZERS:+--optimizers "$STEP_OPTIMIZERS"}
    echo "step $b rc=$? after $(( $(date +%s) - t0 )) s"
  done
  if [ "${STEP_REPEAT:-1}" = 1 ]; then
    timeout "${STEP_S:-150}" /tmp/padam bench step --backend cuda --iters "${ITERS:-30}" \
      --optimizers burn_adamw,padam,padam_deferred,padam_unchecked,padam_per_tensor,padam_deferred_per_tensor,padam_tensor_ops
    echo "step (repeat) rc=$? after $(( $(date +%s) - t0 )) s"
  fi
  if [ "${HOST_PROFILE:-0}" = 1 ]; then
    # Host time per step span (padam's trace spans: step.walk, fused.queue, fused.launch, ...).
    timeout "${STEP_S:-150}" /tmp/padam bench step --backend cuda --iters "${ITERS:-30}" --host-profile \
      --json "$OUT/step-profile.json" --optimizers "${PROFILE_OPTIMIZERS:-padam,padam_unchecked,burn_sgd,walk_only}"
    echo "step (host profile) rc=$? after $(( $(date +%s) - t0 )) s"
  fi
  PYTHONUNBUFFERED=1 timeout "${TORCH_STEP_S:-90}" python3 gpu/torch_step_bench.py
} 2>&1 | tee "$OUT/step.txt"
fi
if [ -n "${TRAIN_S:-}" ]; then
  {
    [ "${TORCH_TRAIN:-1}" = 1 ] && PYTHONUNBUFFERED=1 timeout 120 python3 gpu/torch_train_bench.py
    for b in $BACKENDS; do
      timeout "$TRAIN_S" "$(bin "$b")" bench train --backend "$b" --workloads "${WORKLOADS:-fashion_cnn_128,nanogpt_64x256,resnet18_128}" \
        --iters "${TRAIN_ITERS:-20}" --warmup 5 --json "$OUT/train-$b.json" \
        ${TRAIN_OPTIMIZERS:+--optimizers "$TRAIN_OPTIMIZERS"}
      echo "bench train $b rc=$? after $(( $(date +%s) - t0 )) s"
    done
  } 2>&1 | tee "$OUT/train.txt"
fi
# One archive of the outputs (the device tool brings back at most 8 files per call).
tar czf "$FINAL/bench.tgz" -C "$OUT" .
tar czf "$FINAL/cubecl-cache.tgz" target 2>/dev/null || true
ls -la "$FINAL"
echo "total $(( $(date +%s) - t0 )) s"
