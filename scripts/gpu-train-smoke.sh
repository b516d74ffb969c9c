#!/usr/bin/env bash
# Runs ON the GPU machine (device tool), from the repo root, with gpu/ carried:
#   gpu/padam.gz (stripped, gzipped `--features cuda` binary), gpu/cuda-env.sh,
#   gpu/torch_train_bench.py, gpu/data/{fashion-mnist,tinyshakespeare}, gpu/cubecl-cache.tgz.
# `padam train` on CUDA for the short Fashion-MNIST and nanoGPT configs, PyTorch's training-step
# bench in the same call for scale.
set -uo pipefail
source gpu/cuda-env.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c gpu/padam.gz > /tmp/padam && chmod +x /tmp/padam
[ -f gpu/cubecl-cache.tgz ] && tar xzf gpu/cubecl-cache.tgz
export PADAM_DATA=$PWD/gpu/data
t0=$(date +%s)
for cfg in ${CONFIGS:-fashion-padam-short fashion-adamw-short nanogpt-padam-short}; do
  timeout ${CFG_TIMEOUT:-200} /tmp/padam train configs/$cfg.toml --backend cuda --out /tmp/runs2/$cfg --quiet \
    > "$OUT/$cfg.json" 2> "$OUT/$cfg.err"
  echo "$cfg rc=$? after $(( $(date +%s) - t0 )) s"; tail -c 600 "$OUT/$cfg.json"; echo; tail -3 "$OUT/$cfg.err"
done
[ -n "${SKIP_TORCH:-}" ] || PYTHONUNBUFFERED=1 timeout 120 python3 gpu/torch_train_bench.py 2>&1 | tee "$OUT/torch_train.txt"
for cfg in ${CONFIGS:-}; do cp /tmp/runs2/$cfg/metrics.jsonl "$OUT/$cfg.metrics.jsonl" 2>/dev/null; done
tar czf "$OUT/cubecl-cache.tgz" target 2>/dev/null || true
echo "total $(( $(date +%s) - t0 )) s"
