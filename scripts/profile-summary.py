#!/usr/bin/env python3
"""Sum a cubecl kernel-profile log (the `[profiling] logger` file written by
scripts/gpu-profile.sh, plain or .gz) by kernel family: total time, share, launches.

  python3 scripts/profile-summary.py profile-kernels.txt.gz [steps]

Each log line `| <time> | <kernel name parts> |` is one kernel launch, timed by cubecl on its
own (a device sync around it), so small kernels are over-counted; the summary tables cubecl
also writes at each sync are skipped. With `steps`, times are also given per step."""
import collections
import gzip
import re
import sys

UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
LINE = re.compile(r"\|\s*([\d.]+)(s|ms|µs|us|ns)\s*\|\s*(.*)")


def family(parts):
    """A readable key: matmuls by argument kind and tile family, binops by operation."""
    name = parts[0]
    if name == "MatmulEntry":
        fam = [p for p in parts if p.endswith("MatmulFamily")]
        return "MatmulEntry " + parts[1] + (" " + fam[0] if fam else "")
    if name in ("KernelBinop", "KernelScalarBinop", "UnaryNumeric", "PrngKernel"):
        return name + " " + parts[1]
    return name


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: profile-summary.py <profile log[.gz]> [steps]")
    path = sys.argv[1]
    steps = None
    if len(sys.argv) == 3:
        if not sys.argv[2].isdigit() or int(sys.argv[2]) == 0:
            sys.exit(f"profile-summary.py: steps must be a positive integer, got {sys.argv[2]!r}")
        steps = int(sys.argv[2])
    opener = gzip.open if path.endswith(".gz") else open
    total, count = collections.Counter(), collections.Counter()
    try:
        f = opener(path, "rt", encoding="utf-8")
    except OSError as e:
        sys.exit(f"profile-summary.py: cannot read {path}: {e.strerror}")
    with f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            parts = [p.strip() for p in m.group(3).split("|") if p.strip()]
            key = family(parts)
            total[key] += float(m.group(1)) * UNITS[m.group(2)]
            count[key] += 1
    t = sum(total.values())
    n = sum(count.values())
    per = f", {t * 1e3 / steps:.1f} ms and {n // steps} launches per step" if steps else ""
    print(f"{n} kernel launches, {t * 1e3:.1f} ms in all{per}")
    print(f"{'ms':>9} {'share':>6} {'launches':>8}  kernel")
    for key, v in total.most_common(20):
        print(f"{v * 1e3:9.1f} {100 * v / t:5.1f}% {count[key]:8d}  {key}")


if __name__ == "__main__":
    main()
