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
#   STAGE=gpu0 CUDA=0 DATA="fashion-mnist tinyshakespeare" bash scripts/gpu-stage.sh
#                                                            # data alone, in another folder
# A call carries at most 64 MiB, the repository's tracked files included; the script adds them
# up and fails when the total is over. The folder holds only what the last staging asked for:
# data left from an earlier staging is removed. BUILD=0 skips the build (uses target-cuda as is).
# STAGE names the folder (default gpu): stage the next calls' folders (gpu0, gpu2) ahead, since
# a warm machine is given back after 30 s idle. On the machine, the scripts read gpu/: start a
# call that carries another folder with `rm -rf gpu && ln -s gpu2 gpu && ...`.
# Gzipped idx files (`*-ubyte.gz`, Fashion-MNIST) are staged as xz of their raw bytes (25 MiB
# against 29.5 for the .gz, room for a binary beside the ~25 MiB tree); gpu-runs.sh unpacks
# them on the machine, and the loaders read raw idx files as they read gzipped ones.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
LIMIT=$((64 * 1024 * 1024))

STAGE=${STAGE:-gpu}
case "$STAGE" in */*|.*|'') echo "error: STAGE must be a folder name in the repo root, not '$STAGE'" >&2; exit 1 ;; esac
grep -qx "/$STAGE/" .git/info/exclude 2>/dev/null || echo "/$STAGE/" >> .git/info/exclude

CUDA=${CUDA:-1}
bin=target-cuda/release/padam
if [ "$CUDA" != 0 ]; then
  if [ "${BUILD:-1}" != 0 ]; then
    CARGO_TARGET_DIR=target-cuda cargo build --release -p padam-lab --features cuda
  fi
  [ -x "$bin" ] || { echo "error: $bin missing (run without BUILD=0)" >&2; exit 1; }
fi

mkdir -p "$STAGE"
# ../shared is read-only and cp keeps its modes: make the old copies writable to replace them.
chmod -R u+w "$STAGE"
rm -rf $STAGE/data $STAGE/padam $STAGE/padam.gz $STAGE/ckpt
# xz -9 takes a minute: keep the staged binary when it is newer than the build (a second
# staging between chained calls must fit the machine's 30 s idle window).
if [ "$CUDA" = 0 ]; then
  rm -f $STAGE/padam.xz
elif [ ! $STAGE/padam.xz -nt "$bin" ]; then
  cp "$bin" $STAGE/padam && strip $STAGE/padam
  xz -T2 -9 -f $STAGE/padam
fi
if [ "${TCH:-0}" = 1 ]; then
  [ "${BUILD:-1}" != 0 ] && bash scripts/build-tch.sh
  tbin=target-tch/release/padam
  [ -x "$tbin" ] || { echo "error: $tbin missing (run scripts/build-tch.sh)" >&2; exit 1; }
  if [ ! $STAGE/padam-tch.xz -nt "$tbin" ]; then
    cp "$tbin" $STAGE/padam-tch && strip $STAGE/padam-tch && xz -T2 -9 -f $STAGE/padam-tch
  fi
else
  rm -f $STAGE/padam-tch.xz
fi
for f in cuda-env.sh torch_step_bench.py torch_train_bench.py; do
  cp "$SHARED/bench/$f" $STAGE/ || { echo "error: $SHARED/bench/$f missing" >&2; exit 1; }
done
for d in ${DATA:-}; do
  [ -d "$SHARED/data/$d" ] || { echo "error: DATA names '$d', but $SHARED/data/$d is not a folder" >&2; exit 1; }
  mkdir -p $STAGE/data && cp -r "$SHARED/data/$d" $STAGE/data/
  chmod -R u+w "$STAGE/data/$d"
  for f in "$STAGE/data/$d"/*-ubyte.gz; do
    [ -e "$f" ] || continue
    gunzip -c "$f" | xz -T2 -6 > "${f%.gz}.xz" && rm "$f"
  done
done

# What travels: the tracked files (and untracked ones git does not ignore) plus $STAGE/.
# (files deleted from the work tree but still tracked are not carried: skip them)
tree_bytes=$(git ls-files -co --exclude-standard -z |
  while IFS= read -r -d '' f; do [ -f "$f" ] && stat -c %s "$f"; done | awk '{s+=$1} END {print s+0}')
gpu_bytes=$(find "$STAGE" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
total=$((tree_bytes + gpu_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "staged $STAGE/ ($(mib "$gpu_bytes")): $(cd "$STAGE" && ls -d * data/* 2>/dev/null | tr '\n' ' ')"
echo "a call carries $(mib "$total") of 64 MiB (tree $(mib "$tree_bytes") + $STAGE/ $(mib "$gpu_bytes"))"
if [ "$total" -gt "$LIMIT" ]; then
  echo "error: over the 64 MiB a call carries; stage fewer datasets per call" >&2
  exit 1
fi
