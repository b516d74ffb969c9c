#!/usr/bin/env bash
# Runs HERE (the development machine), from the repo root: builds the `--features cuda` release
# binary and stages the ignored folder gpu/ that a `device` call carries (carry ["gpu"]) for
# gpu-bench.sh and gpu-runs.sh:
#   gpu/padam.xz               stripped binary, xz -9 (~11 MB)
#   gpu/cuda-env.sh            library paths on the GPU machine   (from ../shared/bench)
#   gpu/torch_*_bench.py       PyTorch side of the benchmarks      (from ../shared/bench)
#   gpu/data/<dataset>         the datasets named in DATA          (from ../shared/data)
# Usage:
#   bash scripts/gpu-stage.sh                                # binary + bench scripts
#   DATA="fashion-mnist" bash scripts/gpu-stage.sh           # ... and one dataset
#   TCH=1 bash scripts/gpu-stage.sh                          # ... and the `--features tch` binary
#                                                            #     (gpu/padam-tch.xz, scripts/build-tch.sh)
#   CUDA=0 TCH=1 DATA=cifar10-jpeg bash scripts/gpu-stage.sh # the tch binary alone (no CUDA build):
#                                                            #     room for a dataset beside it
# A call carries at most 64 MiB, the repository's tracked files included; the script adds them
# up and fails when the total is over. gpu/ holds only what the last staging asked for: data
# left from an earlier staging is removed. BUILD=0 skips the build (uses target-cuda as is).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
LIMIT=$((64 * 1024 * 1024))

grep -qx '/gpu/' .git/info/exclude 2>/dev/null || echo '/gpu/' >> .git/info/exclude

CUDA=${CUDA:-1}
bin=target-cuda/release/padam
if [ "$CUDA" != 0 ]; then
  if [ "${BUILD:-1}" != 0 ]; then
    CARGO_TARGET_DIR=target-cuda cargo build --release -p padam-lab --features cuda
  fi
  [ -x "$bin" ] || { echo "error: $bin missing (run without BUILD=0)" >&2; exit 1; }
fi

mkdir -p gpu
# ../shared is read-only and cp keeps its modes: make the old copies writable to replace them.
chmod -R u+w gpu
rm -rf gpu/data gpu/padam gpu/padam.gz gpu/ckpt
# xz -9 takes a minute: keep the staged binary when it is newer than the build (a second
# staging between chained calls must fit the machine's 30 s idle window).
if [ "$CUDA" = 0 ]; then
  rm -f gpu/padam.xz
elif [ ! gpu/padam.xz -nt "$bin" ]; then
  cp "$bin" gpu/padam && strip gpu/padam
  xz -T2 -9 -f gpu/padam
fi
if [ "${TCH:-0}" = 1 ]; then
  [ "${BUILD:-1}" != 0 ] && bash scripts/build-tch.sh
  tbin=target-tch/release/padam
  [ -x "$tbin" ] || { echo "error: $tbin missing (run scripts/build-tch.sh)" >&2; exit 1; }
  if [ ! gpu/padam-tch.xz -nt "$tbin" ]; then
    cp "$tbin" gpu/padam-tch && strip gpu/padam-tch && xz -T2 -9 -f gpu/padam-tch
  fi
else
  rm -f gpu/padam-tch.xz
fi
for f in cuda-env.sh torch_step_bench.py torch_train_bench.py; do
  cp "$SHARED/bench/$f" gpu/ || { echo "error: $SHARED/bench/$f missing" >&2; exit 1; }
done
for d in ${DATA:-}; do
  [ -d "$SHARED/data/$d" ] || { echo "error: DATA names '$d', but $SHARED/data/$d is not a folder" >&2; exit 1; }
  mkdir -p gpu/data && cp -r "$SHARED/data/$d" gpu/data/
done

# What travels: the tracked files (and untracked ones git does not ignore) plus gpu/.
# (files deleted from the work tree but still tracked are not carried: skip them)
tree_bytes=$(git ls-files -co --exclude-standard -z |
  while IFS= read -r -d '' f; do [ -f "$f" ] && stat -c %s "$f"; done | awk '{s+=$1} END {print s+0}')
gpu_bytes=$(find gpu -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
total=$((tree_bytes + gpu_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "staged gpu/ ($(mib "$gpu_bytes")): $(cd gpu && ls -d * data/* 2>/dev/null | tr '\n' ' ')"
echo "a call carries $(mib "$total") of 64 MiB (tree $(mib "$tree_bytes") + gpu/ $(mib "$gpu_bytes"))"
if [ "$total" -gt "$LIMIT" ]; then
  echo "error: over the 64 MiB a call carries; stage fewer datasets per call" >&2
  exit 1
fi
