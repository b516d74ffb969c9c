#!/usr/bin/env bash
# Runs HERE (no GPU): the parser fuzz targets of crates/padam-lab/tests/fuzz.rs at scale,
# CASES inputs per parser (default 100,000; CI runs 300). Prints one line per target:
#   fuzz <parser>: <inputs> inputs, <panics> panics
# and fails if any input made a parser panic. docs/RELIABILITY.md records the last full run.
set -euo pipefail
cd "$(dirname "$0")/.."
PADAM_FUZZ_CASES=${CASES:-100000} cargo test -p padam-lab --test fuzz -- \
  --nocapture --test-threads 1 2>&1 | grep -oE 'fuzz [a-z ]+: [0-9]+ inputs, [0-9]+ panics|test result.*'
