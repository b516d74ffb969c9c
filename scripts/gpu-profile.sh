#!/usr/bin/env bash
# Runs ON the GPU machine (device tool), from the repo root, with gpu/ carried (as for
# gpu-runs.sh, plus gpu/torch_train_bench.py). Where a training step's GPU time goes:
#   1. torch_train_bench.py and `padam bench train` on one workload, unprofiled, same call;
#   2. the same workload once more with cubecl's kernel profiler on: cubecl then times every
#      kernel on its own (a device sync after each, so the total is not the step's time) and
#      writes a table per kernel name at each device sync to $OUT/profile-kernels.txt.gz.
#   PROFILE_WORKLOAD=resnet18_400 PROFILE_S=200 bash scripts/gpu-profile.sh
# The default batch (400) is the training runs' one, so their tuned kernels are reused.
# BACKEND=tch (gpu/padam-tch.xz staged with TCH=1) profiles the LibTorch backend instead, with
# Nsight Compute, next to PyTorch's own step of the same workload (names as in torch_train_bench:
# fashion_cnn_128, resnet18_128, nanogpt_64x256):
#   1. `padam bench train --backend tch` on it, unprofiled;
#   2. under `ncu`, which runs each kernel on its own and times it: PyTorch's training step
#      (AdamW fused) and padam's (PAdam unchecked), a few steps each, to
#      $OUT/ncu-{torch,padam}-<workload>.csv.gz; scripts/profile-summary.py gives the last
#      step of each by kernel.
#   BACKEND=tch PROFILE_WORKLOAD=resnet18_128 bash scripts/gpu-profile.sh
# PROFILE=phases trains a short `padam train` run alone (BACKEND, default tch) with and without
# the data augmentation, after `padam bench train` of the same model: where the training loop's
# host time goes (the metrics' `host` phases), for the gap between the two (Fashion-MNIST:
# 27 ms per step in `padam train` side by side, 1.8 ms in `bench train`). Data as gpu-runs.sh
# leaves it in /tmp/padam-data (run `PLAN=/dev/null bash scripts/gpu-runs.sh` first):
#   PROFILE=phases PHASES_CONFIG=configs/fashion-padam.toml PHASES_ARGS="--epochs 2" bash scripts/gpu-profile.sh
# PROFILE=step profiles the CUDA optimizer step alone (issue 22): `padam bench step --backend
# cuda` on PROFILE_SHAPES (default gpt2) under ncu, every PAdam kernel launch (cubecl names
# them adam_pwd_kernel / multi_adam_pwd_kernel_n_<line size>) with its time, DRAM bytes and throughput, SM
# throughput, registers and grid, to $OUT/ncu-step-<shapes>-<optimizer>.csv.gz, and PyTorch's
# fused AdamW on the same shapes (its `multi_tensor_apply_kernel`s, 4 steps) beside them;
# scripts/ncu-step-summary.py reads them:
#   PROFILE=step PROFILE_SHAPES=gpt2 bash scripts/gpu-profile.sh
set -uo pipefail
source "$(dirname "$0")/gpu-setup.sh"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
t0=$(date +%s)
if [ "${PROFILE:-train}" = step ]; then
  SH=${PROFILE_SHAPES:-gpt2}; S=${PROFILE_S:-200}
  M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum
  M=$M,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed
  M=$M,launch__registers_per_thread,launch__grid_size,launch__block_size,sm__warps_active.avg.pct_of_peak_sustained_active
  # PROFILE_OPTIMIZERS="" profiles PyTorch's step alone (no CUDA binary needed).
  for opt in ${PROFILE_OPTIMIZERS-padam_unchecked padam_unchecked_per_tensor}; do
    timeout "$S" ncu --clock-control none --kernel-name regex:adam_pwd --metrics "$M" --csv --print-units base \
      /tmp/padam bench step --backend cuda --shapes "$SH" --optimizers $opt --iters 2 --warmup 2 \
      > /tmp/ncu-step-$opt.csv 2> /tmp/ncu-step-$opt.err
    rc=$?
    # No rows (the full metric set ran past $S: GPT-2 per tensor took over 80 s in session
    # 21): every kernel of the run (set-up included) with the time and byte metrics only.
    if [ "$(grep -c '^"' /tmp/ncu-step-$opt.csv)" -le 1 ]; then
      timeout "$S" ncu --clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size \
        --csv --print-units base /tmp/padam bench step --backend cuda --shapes "$SH" --optimizers $opt \
        --iters 2 --warmup 2 > /tmp/ncu-step-$opt.csv 2> /tmp/ncu-step-$opt.err
      rc="$rc, unfiltered rc=$?"
    fi
    echo "ncu $opt rc=$rc after $(( $(date +%s) - t0 )) s, $(grep -c '^"' /tmp/ncu-step-$opt.csv) rows" | tee -a "$OUT/profile-step.txt"
    tail -3 /tmp/ncu-step-$opt.err >> "$OUT/profile-step.txt"
    gzip -c /tmp/ncu-step-$opt.csv > "$OUT/ncu-step-$SH-$opt.csv.gz"
  done
  # PyTorch's fused AdamW on the same shapes (torch_step_bench.py's), its multi-tensor kernels
  # profiled the same way: the like-for-like GPU time of the step issue 22 compares with.
  cat > /tmp/torch-step-profile.py <<'PY'
import sys, torch
import torch_step_bench as b
shapes = b.shapes_gpt2() if sys.argv[1] == "gpt2" else b.shapes_resnet18()
params = [torch.nn.Parameter(torch.randn(s, device="cuda") * 0.05) for s in shapes]
for p in params:
    p.grad = torch.randn_like(p) * 1e-3
opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, fused=True)
for _ in range(4):
    opt.step()
torch.cuda.synchronize()
PY
  PYTHONPATH=gpu timeout "$S" ncu --clock-control none --kernel-name regex:multi_tensor --metrics "$M" --csv \
    --print-units base python3 /tmp/torch-step-profile.py "$SH" > /tmp/ncu-step-torch.csv 2> /tmp/ncu-step-torch.err
  echo "ncu torch fused AdamW rc=$? after $(( $(date +%s) - t0 )) s, $(grep -c '^"' /tmp/ncu-step-torch.csv) rows" | tee -a "$OUT/profile-step.txt"
  tail -3 /tmp/ncu-step-torch.err >> "$OUT/profile-step.txt"
  gzip -c /tmp/ncu-step-torch.csv > "$OUT/ncu-step-$SH-torch_fused_adamw.csv.gz"
  exit 0
fi
if [ "${PROFILE:-train}" = phases ]; then
  B=${BACKEND:-tch}; BIN=/tmp/padam; [ "$B" = tch ] && BIN=/tmp/padam-tch
  export PADAM_DATA=${PADAM_DATA:-/tmp/padam-data}
  timeout 90 "$BIN" bench train --backend "$B" --workloads "${PHASES_WORKLOAD:-fashion_cnn_128}" \
    --optimizers adamw,padam_deferred --iters 30 --warmup 5 > "$OUT/phases-bench.txt" 2>&1
  for augment in true false; do
    dir=/tmp/phases-augment-$augment; rm -rf "$dir"
    # shellcheck disable=SC2086
    timeout "${PROFILE_S:-120}" "$BIN" train "${PHASES_CONFIG:?}" --backend "$B" --quiet \
      --set data.augment=$augment --out "$dir" ${PHASES_ARGS:-} > "$dir.log" 2>&1
    echo "augment=$augment rc=$? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/phases-bench.txt"
  done
  tar czf "$OUT/phases.tgz" -C /tmp phases-augment-true phases-augment-false \
    phases-augment-true.log phases-augment-false.log 2>/dev/null
  exit 0
fi
if [ "${BACKEND:-cuda}" = tch ]; then
  W=${PROFILE_WORKLOAD:-resnet18_128}; S=${PROFILE_S:-200}
  NCU="ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base"
  timeout "$S" /tmp/padam-tch bench train --backend tch --workloads "$W" \
    --optimizers adamw,padam_unchecked,padam_deferred --iters 30 --warmup 5 2>&1 | tee -a "$OUT/profile-bench.txt"
  cat > /tmp/torch-profile.py <<'PY'
import sys, torch, torch.nn.functional as F
import torch_train_bench as b
w = sys.argv[1]
bs = int(w.rsplit("_", 1)[1].split("x")[0])
if w.startswith("fashion_cnn"):
    model, x, y = b.FashionCNN(), torch.randn(bs, 1, 28, 28), torch.randint(0, 10, (bs,))
elif w.startswith("resnet18"):
    model, x, y = b.resnet18_cifar(), torch.randn(bs, 3, 32, 32), torch.randint(0, 10, (bs,))
else:
    model, x, y = b.GPT(), torch.randint(0, 65, (bs, 256)), torch.randint(0, 65, (bs, 256))
model, x, y = model.to("cuda").train(), x.cuda(), y.cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
for _ in range(5):
    opt.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
    opt.step()
torch.cuda.synchronize()
PY
  PYTHONPATH=gpu timeout "$S" $NCU python3 /tmp/torch-profile.py "$W" > /tmp/ncu-torch.csv 2> /tmp/ncu-torch.err
  echo "ncu torch rc=$? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/profile-bench.txt"
  timeout "$S" $NCU /tmp/padam-tch bench train --backend tch --workloads "$W" \
    --optimizers padam_unchecked --iters 3 --warmup 2 --fwd-bwd false > /tmp/ncu-padam.csv 2> /tmp/ncu-padam.err
  echo "ncu padam rc=$? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/profile-bench.txt"
  for side in torch padam; do
    tail -5 /tmp/ncu-$side.err >> "$OUT/profile-bench.txt"
    gzip -c /tmp/ncu-$side.csv > "$OUT/ncu-$side-$W.csv.gz"
    python3 scripts/profile-summary.py /tmp/ncu-$side.csv 2>&1 | tee -a "$OUT/profile-bench.txt"
  done
  exit 0
fi
W=${PROFILE_WORKLOAD:-resnet18_400}; S=${PROFILE_S:-200}
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
