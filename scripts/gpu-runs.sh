#!/usr/bin/env bash
# Runs ON the GPU machine (device tool), from the repo root, with the ignored folder gpu/ carried:
#   gpu/padam.xz or gpu/padam.gz (stripped, compressed `--features cuda` binary),
#   gpu/cuda-env.sh, gpu/data/<dataset folders the plan needs>, optionally gpu/cubecl-cache.tgz
#   (stage it here with `DATA="fashion-mnist" bash scripts/gpu-stage.sh`).
# A call carries at most 64 MiB with the repository's tracked files (~25 MiB): a binary with
# Fashion-MNIST and the CIFAR-10 stand-in is too much, but data copied to /tmp/padam-data stays
# on a warm machine, so a short call that only brings data can go first (staged here with
# `STAGE=gpu0 CUDA=0 DATA=... bash scripts/gpu-stage.sh`; it copies and unpacks the data):
#   rm -rf gpu && ln -s gpu0 gpu && PLAN=/dev/null bash scripts/gpu-runs.sh
# (checkpoints under gpu/ckpt are restored only by a plan that names their runs).
# Two plans side by side, e.g. runs whose checkpoints come back (CKPT_BACK=1) beside runs whose
# cannot: each its own $OUT subfolder and $RUNS (OUT=$OUT/f RUNS=/tmp/padam-runs-f ... &).
# Trains every run of a plan file in parallel on the one GPU (`padam train` is dispatch-bound
# on small models, so several processes share the GPU well), each with `--resume` when its run
# directory already holds a checkpoint, and stops them all at DEADLINE seconds with SIGTERM,
# which makes each save a checkpoint of the step in progress (they resume in
# the next call on the same warm machine: run directories live in $RUNS, default /tmp/padam-runs).
# Plan lines: `<run name> <config> [padam train options...]`; `#` starts a comment.
#   PLAN=results/plans/fashion.txt DEADLINE=540 bash scripts/gpu-runs.sh
# Packs each run's config.toml, metrics.jsonl, final.json and train.log into $OUT/runs.tgz
# (runs/<name>/...; the device tool brings back at most 8 files per call). Checkpoints stay
# in $RUNS on the machine: the next call must follow within the machine's idle window.
# CKPT_BACK=1 also brings back the newest checkpoint of each unfinished run as
# $OUT/ckpt-<name>.tgz (small models only: a file comes back up to 16 MiB, 8 files a call);
# put those under gpu/ckpt/ to carry them, and a later call on a fresh machine unpacks them
# into $RUNS, so a run survives the end of a session.
set -uo pipefail
source "$(dirname "$0")/gpu-setup.sh"
# Each invocation packs in its own folder: two plans side by side must not pack each other's runs.
OUT=${OUT:-/tmp/out}; STAGE=$(mktemp -d /tmp/runs-out.XXXXXX) || exit 1
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$OUT" "$STAGE/runs"
RUNS=${RUNS:-/tmp/padam-runs}; mkdir -p "$RUNS"
DEADLINE=${DEADLINE:-540}
# BACKEND=tch trains on burn's LibTorch backend (the tch binary, staged with TCH=1).
BACKEND=${BACKEND:-cuda}
BIN=/tmp/padam; [ "$BACKEND" = tch ] && BIN=/tmp/padam-tch
# Data stays in /tmp between calls on a warm machine, so a later call need not carry it again.
mkdir -p /tmp/padam-data
for d in gpu/data/*; do [ -e "$d" ] && [ ! -e "/tmp/padam-data/$(basename "$d")" ] && cp -r "$d" /tmp/padam-data/; done
# Idx files staged as xz of their raw bytes (gpu-stage.sh) are unpacked here, with Python's
# lzma (the machine may have no xz).
find /tmp/padam-data -name '*-ubyte.xz' -exec python3 -c '
import lzma, os, sys
for f in sys.argv[1:]:
    with lzma.open(f) as src, open(f[:-3] + ".part", "wb") as dst:
        dst.write(src.read())
    os.replace(f[:-3] + ".part", f[:-3]); os.remove(f)' {} +
export PADAM_DATA=/tmp/padam-data
# libtorch's OpenMP threads spin after its CPU ops and starve the batch building on rayon's
# (Fashion-MNIST: 7.0 ms of host batch per step, 1.7 with one thread; session 22). The tch binary
# sets one thread itself from session 22's build on; this covers binaries built before.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for f in gpu/ckpt/ckpt-*.tgz; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .tgz); name=${name#ckpt-}
  # Only the plan's own runs (a plan beside it has its own $RUNS and must not pack them as its
  # own); the name compared as a word, as the plan loop below reads it.
  awk -v n="$name" '$1 == n { found = 1 } END { exit !found }' "${PLAN:?set PLAN to a plan file}" || continue
  if ! ls "$RUNS/$name"/ckpt-* >/dev/null 2>&1; then tar xzf "$f" -C "$RUNS" && echo "$name: checkpoint restored from $f"; fi
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/device.txt"
t0=$(date +%s)
pids=()
while read -r name cfg args; do
  [ -z "$name" ] || [[ "$name" == \#* ]] && continue
  dir="$RUNS/$name"
  resume=""
  if ls "$dir"/ckpt-* >/dev/null 2>&1; then
    resume="--resume"
  elif [ -d "$dir" ] && [ ! -f "$dir/final.json" ]; then
    rm -rf "$dir"  # started but stopped before its first checkpoint: nothing to resume
  fi
  if [ -f "$dir/final.json" ] && [ -z "${RERUN:-}" ]; then
    echo "$name: already finished"; continue
  fi
  # shellcheck disable=SC2086
  # TERM at the deadline: the run checkpoints the step in progress and exits (nothing lost);
  # KILL 25 s later if it is stuck.
  timeout --signal=TERM --kill-after=25 "$DEADLINE" "$BIN" train "$cfg" --backend "$BACKEND" --out "$dir" --quiet \
    $resume $args > "$RUNS/$name.stdout" 2> "$RUNS/$name.stderr" &
  pids+=($!)
  echo "$name: started ($cfg $args $resume)"
done < "${PLAN:?set PLAN to a plan file}"
for p in "${pids[@]}"; do wait "$p"; done
echo "all runs stopped after $(( $(date +%s) - t0 )) s"
for dir in "$RUNS"/*/; do
  name=$(basename "$dir"); mkdir -p "$STAGE/runs/$name"
  cp "$dir"/{config.toml,metrics.jsonl,final.json,train.log} "$STAGE/runs/$name/" 2>/dev/null
  cp "$RUNS/$name.stderr" "$STAGE/runs/$name/stderr.txt" 2>/dev/null
  last=$(tail -1 "$dir/metrics.jsonl" 2>/dev/null | head -c 300)
  echo "$name: $( [ -f "$dir/final.json" ] && echo finished || echo "stopped" ) | $last"
  if [ -n "${CKPT_BACK:-}" ] && [ ! -f "$dir/final.json" ]; then
    newest=$(ls "$dir"/ckpt-*.bin 2>/dev/null | tail -1)
    [ -n "$newest" ] && tar czf "$OUT/ckpt-$name.tgz" -C "$RUNS" "$name/config.toml" "$name/metrics.jsonl" \
      "$name/train.log" "$name/$(basename "$newest")" 2>/dev/null
  fi
done
# EXPORT_BACK=1: each finished run's sparse export (`padam export`, model.sparse.safetensors:
# 5 MB for a 95%-sparse ResNet18, where its checkpoints are 130 MB) comes back in
# $OUT/exports.tgz, for `padam bench infer`, `padam sample` and `padam eval` here.
# A file comes back only up to 16 MiB, so exports are packed smallest first up to 15 MiB in
# all; a dense model's "sparse" file (an AdamW nanoGPT's is 43 MB) would take the whole archive
# with it. What is left out is named, and stays in $RUNS/<name>/export on the machine.
if [ -n "${EXPORT_BACK:-}" ]; then
  mkdir -p "$STAGE/exports"
  for dir in "$RUNS"/*/; do
    name=$(basename "$dir"); [ -f "$dir/final.json" ] || continue
    "$BIN" export "$dir" --out "$dir/export" > /dev/null 2>> "$STAGE/export-errors.txt" \
      || echo "$name: export failed (see export-errors.txt in runs.tgz)"
  done
  budget=$((15 * 1024 * 1024))
  for f in $(ls -S -r "$RUNS"/*/export/*sparse* 2>/dev/null); do
    name=$(basename "$(dirname "$(dirname "$f")")"); size=$(stat -c %s "$f")
    if [ "$size" -le "$budget" ]; then
      mkdir -p "$STAGE/exports/$name" && cp "$f" "$STAGE/exports/$name/" && budget=$((budget - size))
      echo "$name: exported ($size bytes)"
    else
      echo "$name: export of $size bytes left out ($budget bytes left of the 15 MiB that come back); it stays in $f"
    fi
  done
  tar czf "$OUT/exports.tgz" -C "$STAGE" exports
  cp "$STAGE/export-errors.txt" "$STAGE/runs/" 2>/dev/null
fi
tar czf "$OUT/runs.tgz" -C "$STAGE" runs
tar czf "$OUT/cubecl-cache.tgz" target 2>/dev/null || true
