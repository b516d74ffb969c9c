# Sourced by gpu-bench.sh and gpu-runs.sh ON the GPU machine, from the repo root, with the
# ignored folder gpu/ carried: library paths, the binary unpacked to /tmp/padam, and cubecl's
# kernel cache under ./target.
source gpu/cuda-env.sh
# The binary comes as gpu/padam.xz (`xz -9`: 10.9 MB on 2026-12-04 against 18.3 MB gzipped,
# room for more data in a 64 MiB call) or gpu/padam.gz; xz falls back to Python's lzma. A warm
# machine keeps /tmp/padam between calls; it is unpacked again whenever the carried archive
# differs from the one it came from (a new build), so no call runs a stale binary.
# gpu/padam-tch.xz, when staged (`TCH=1 bash scripts/gpu-stage.sh`), is the `--features tch`
# binary: unpacked to /tmp/padam-tch, and run against the host's own PyTorch install.
unpack() {  # unpack <archive> <binary>
  local archive=$1 bin=$2 stamp
  stamp=$(cksum < "$archive")
  if [ ! -x "$bin" ] || [ "$(cat "$bin.src" 2>/dev/null)" != "$stamp" ]; then
    case "$archive" in
      *.xz) xz -dc "$archive" > "$bin.new" 2>/dev/null \
              || python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$archive" > "$bin.new" ;;
      *) gunzip -c "$archive" > "$bin.new" ;;
    esac
    chmod +x "$bin.new" && mv "$bin.new" "$bin" && echo "$stamp" > "$bin.src"
  fi
}
archive=gpu/padam.xz; [ -f "$archive" ] || archive=gpu/padam.gz
[ -f "$archive" ] && unpack "$archive" /tmp/padam
[ -f gpu/padam-tch.xz ] && unpack gpu/padam-tch.xz /tmp/padam-tch
# A later call on the warm machine may carry no binary (a data-only carry): the one unpacked
# before still needs the host's libtorch.
if [ -x /tmp/padam-tch ]; then
  torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
# cubecl keeps autotune results under ./target; reuse the last call's (gpu/cubecl-cache.tgz).
[ -f gpu/cubecl-cache.tgz ] && [ ! -d target ] && tar xzf gpu/cubecl-cache.tgz
# Keep the compiled PTX there too (off by default), so it comes back with the autotune cache
# (session 4: 86 MB of PTX, 7 MB gzipped). A cold call loading it is not yet timed.
# AUTOTUNE_LEVEL (minimal, balanced = cubecl's default, extensive, full) trades the first-use
# autotune time of a fresh machine against kernel choice; every row of one call shares it.
[ -f cubecl.toml ] || printf '[compilation]\ncache = "target"\n[autotune]\nlevel = "%s"\n' \
  "${AUTOTUNE_LEVEL:-balanced}" > cubecl.toml
