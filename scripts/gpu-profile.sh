#!/usr/bin/env bash
# Runs ON the GPU machine (device tool), from the repo root, with gpu/ carried (as for
# gpu-runs.sh, plus gpu/torch_train_bench.py). Where a training step's GPU time goes:
#   1. torch_train_bench.py and `padam bench train` on one workload, unprofiled, same call;
#   2. the same workload once more with cubecl's kernel profiler on: cubecl then times every
#      kernel on its own (a device sync after each, so the total is not the step's time) and
#      writes a table per kernel name at each device sync to $OUT/profile-kernels.txt.gz.
#   PROFILE_WORKLOAD=resnet18_400 PROFILE_S=200 bash scripts/gpu-profile.sh
# The default batch (400) is the training runs' one, so their tuned kernels are reused.
set -uo pipefail
source "$(dirname "$0")/gpu-setup.sh"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=${PROFILE_WORKLOAD:-resnet18_400}; S=${PROFILE_S:-200}
t0=$(date +%s)
{
  PYTHONUNBUFFERED=1 timeout 120 python3 gpu/torch_train_bench.py
  timeout "$S" /tmp/padam bench train --backend cuda --workloads "$W" --iters 20 --warmup 5
  echo "bench train rc=$? after $(( $(date +%s) - t0 )) s"
} 2>&1 | tee "$OUT/profile-bench.txt"
cp cubecl.toml /tmp/cubecl.toml.saved
cat > cubecl.toml <<TOML
[compilation]
cache = "target"

[profiling]
logger = { level = "basic", file = "/tmp/profile-kernels.txt" }
TOML
timeout "$S" /tmp/padam bench train --backend cuda --workloads "$W" --optimizers padam \
  --iters 3 --warmup 2 --fwd-bwd false 2>&1 | tee -a "$OUT/profile-bench.txt"
echo "profiled bench rc=$? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/profile-bench.txt"
mv /tmp/cubecl.toml.saved cubecl.toml
gzip -c /tmp/profile-kernels.txt > "$OUT/profile-kernels.txt.gz" 2>/dev/null
tar czf "$OUT/cubecl-cache.tgz" target 2>/dev/null || true
