# Sourced by gpu-bench.sh and gpu-runs.sh ON the GPU machine, from the repo root, with the
# ignored folder gpu/ carried: library paths, the binary unpacked to /tmp/padam, and cubecl's
# kernel cache under ./target.
source gpu/cuda-env.sh
[ -x /tmp/padam ] || { gunzip -c gpu/padam.gz > /tmp/padam && chmod +x /tmp/padam; }
# cubecl keeps autotune results under ./target; reuse the last call's (gpu/cubecl-cache.tgz).
[ -f gpu/cubecl-cache.tgz ] && [ ! -d target ] && tar xzf gpu/cubecl-cache.tgz
# Keep the compiled PTX there too (off by default), so it comes back with the autotune cache
# (session 4: 86 MB of PTX, 7 MB gzipped). A cold call loading it is not yet timed.
# AUTOTUNE_LEVEL (minimal, balanced = cubecl's default, extensive, full) trades the first-use
# autotune time of a fresh machine against kernel choice; every row of one call shares it.
[ -f cubecl.toml ] || printf '[compilation]\ncache = "target"\n[autotune]\nlevel = "%s"\n' \
  "${AUTOTUNE_LEVEL:-balanced}" > cubecl.toml
