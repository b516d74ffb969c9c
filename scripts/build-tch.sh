#!/usr/bin/env bash
# Builds padam with burn's LibTorch backend (`--backend tch`: PyTorch's cuDNN/cuBLAS kernels).
# Runs on any Linux x86-64 machine, with or without a GPU:
#   bash scripts/build-tch.sh                 # release binary in target-tch/release/padam
#   CHECK=1 bash scripts/build-tch.sh         # clippy only, nothing linked (what CI runs)
#   bash scripts/build-tch.sh test -p padam-lab --test tch   # any cargo command after it
# What it needs: libtorch's headers and libraries, version 2.11 (the PyTorch the GPU hosts
# have). TORCH_DIR may name a PyTorch install's `torch` package folder (it holds include/ and
# lib/); otherwise the one the python3 on PATH imports; otherwise the script downloads the
# torch 2.11.0 wheel from PyPI (530 MB, no dependencies) into .tch/ and unpacks its include/
# and lib/ (the wheel is a zip; nothing is installed).
# burn-tch 0.21 pins tch 0.22, whose C++ wrappers were generated for libtorch 2.9: they compile
# against 2.11's headers (LIBTORCH_BYPASS_VERSION_CHECK skips tch's exact-version check).
# The binary is linked without the CUDA libraries libtorch_cuda needs (they come with the
# PyTorch install it runs against): run it with that install's lib folder on the library path:
#   LD_LIBRARY_PATH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib padam ...
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.11.0
if [ -z "${TORCH_DIR:-}" ]; then
  TORCH_DIR=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)
fi
if [ -z "$TORCH_DIR" ] || [ ! -d "$TORCH_DIR/include" ]; then
  TORCH_DIR=$PWD/.tch/torch
  if [ ! -f "$TORCH_DIR/lib/libtorch_cpu.so" ]; then
    mkdir -p .tch
    wheel=$(ls .tch/torch-$TORCH_VERSION-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 "torch==$TORCH_VERSION" -d .tch
      wheel=$(ls .tch/torch-$TORCH_VERSION-*.whl | head -1)
    fi
    python3 - "$wheel" .tch <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith(("torch/include/", "torch/lib/"))])
PY
  fi
fi
version=$(python3 -c 'import sys, re; print(re.search(r"__version__ = .([0-9.]+)", open(sys.argv[1]).read()).group(1))' "$TORCH_DIR/version.py" 2>/dev/null || echo unknown)
[ "$version" = unknown ] || [ "${version%%+*}" = "$TORCH_VERSION" ] \
  || echo "warning: $TORCH_DIR is PyTorch $version; padam's tch backend is built and tested against $TORCH_VERSION" >&2
export LIBTORCH=$TORCH_DIR LIBTORCH_BYPASS_VERSION_CHECK=1 LIBTORCH_CXX11_ABI=1
unset LIBTORCH_USE_PYTORCH
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-tch}
# libtorch_cuda's own dependencies (cudart, cuBLAS, cuDNN, ...) are resolved at run time.
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,--allow-shlib-undefined"
if [ "${CHECK:-0}" = 1 ]; then
  exec cargo clippy --locked --all-targets -p padam-lab --features tch -- -D warnings
elif [ $# -gt 0 ]; then
  exec cargo "$@" --features tch
else
  exec cargo build --release -p padam-lab --features tch
fi
