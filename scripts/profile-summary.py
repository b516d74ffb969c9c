#!/usr/bin/env python3
"""Sum a cubecl kernel-profile log (the `[profiling] logger` file written by
scripts/gpu-profile.sh, plain or .gz) by kernel family: total time, share, launches.

  python3 scripts/profile-summary.py profile-kernels.txt.gz [steps [skip]]

Each log line `| <time> | <kernel name parts> |` is one kernel launch, timed by cubecl on its
own (a device sync around it), so small kernels are over-counted; the summary tables cubecl
also writes at each sync are skipped. With `steps`, times are also given per step; with
`skip`, the first `skip` steps are left out (a first step also holds the bench's set-up
kernels). Steps end with the optimizer: the profiled bench runs PAdam, whose kernel
(`AdamPwdKernel`) runs once per parameter tensor per step, so step k ends at that kernel's
(k x launches / steps)-th launch."""
import collections
import gzip
import re
import sys

UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
STEP_END = "AdamPwdKernel"
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
    if len(sys.argv) not in (2, 3, 4):
        sys.exit("usage: profile-summary.py <profile log[.gz]> [steps [skip]]")
    path = sys.argv[1]
    steps, skip = None, 0
    if len(sys.argv) >= 3:
        if not sys.argv[2].isdigit() or int(sys.argv[2]) == 0:
            sys.exit(f"profile-summary.py: steps must be a positive integer, got {sys.argv[2]!r}")
        steps = int(sys.argv[2])
    if len(sys.argv) == 4:
        if not sys.argv[3].isdigit() or int(sys.argv[3]) >= steps:
            sys.exit(f"profile-summary.py: skip must be an integer below steps ({steps}), "
                     f"got {sys.argv[3]!r}")
        skip = int(sys.argv[3])
    opener = gzip.open if path.endswith(".gz") else open
    launches = []
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
            launches.append((family(parts), float(m.group(1)) * UNITS[m.group(2)]))
    if skip:
        ends = [i for i, (key, _) in enumerate(launches) if key == STEP_END]
        if not ends or len(ends) % steps:
            sys.exit(f"profile-summary.py: {len(ends)} {STEP_END} launches do not split into "
                     f"{steps} steps, cannot skip steps")
        launches = launches[ends[skip * len(ends) // steps - 1] + 1:]
        steps -= skip
    total, count = collections.Counter(), collections.Counter()
    for key, seconds in launches:
        total[key] += seconds
        count[key] += 1
    t = sum(total.values())
    n = sum(count.values())
    per = f", {t * 1e3 / steps:.1f} ms and {n // steps} launches per step" if steps else ""
    skipped = f" (first {skip} of {steps + skip} steps left out)" if skip else ""
    print(f"{n} kernel launches{skipped}, {t * 1e3:.1f} ms in all{per}")
    print(f"{'ms':>9} {'share':>6} {'launches':>8}  kernel")
    for key, v in total.most_common(20):
        print(f"{v * 1e3:9.1f} {100 * v / t:5.1f}% {count[key]:8d}  {key}")


if __name__ == "__main__":
    main()
