# Sourced by gpu-bench.sh and gpu-runs.sh ON the GPU machine, from the repo root, with the
# ignored folder gpu/ carried: library paths, the binary unpacked to /tmp/padam, and cubecl's
# kernel cache under ./target.
source gpu/cuda-env.sh
# The binary comes as gpu/padam.xz (`xz -9`: 10.9 MB on 2026-12-04 against 18.3 MB gzipped,
# room for more data in a 64 MiB call) or gpu/padam.gz; xz falls back to Python's lzma.
unpack_xz() { xz -dc "$1" 2>/dev/null || python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$1"; }
if [ ! -x /tmp/padam ]; then
  if [ -f gpu/padam.xz ]; then unpack_xz gpu/padam.xz > /tmp/padam; else gunzip -c gpu/padam.gz > /tmp/padam; fi
  chmod +x /tmp/padam
fi
# cubecl keeps autotune results under ./target; reuse the last call's (gpu/cubecl-cache.tgz).
[ -f gpu/cubecl-cache.tgz ] && [ ! -d target ] && tar xzf gpu/cubecl-cache.tgz
# Keep the compiled PTX there too (off by default), so it comes back with the autotune cache
# (session 4: 86 MB of PTX, 7 MB gzipped). A cold call loading it is not yet timed.
# AUTOTUNE_LEVEL (minimal, balanced = cubecl's default, extensive, full) trades the first-use
# autotune time of a fresh machine against kernel choice; every row of one call shares it.
[ -f cubecl.toml ] || printf '[compilation]\ncache = "target"\n[autotune]\nlevel = "%s"\n' \
  "${AUTOTUNE_LEVEL:-balanced}" > cubecl.toml
