#!/usr/bin/env python3
"""Sum a kernel profile by kernel family: total time, share, launches. Two inputs:

- a cubecl kernel-profile log (the `[profiling] logger` file that scripts/gpu-profile.sh
  writes for `--backend cuda`, plain or .gz), described below;
- an Nsight Compute CSV (`ncu --csv --metrics gpu__time_duration.sum`, written by
  scripts/gpu-profile.sh for `--backend tch` and for PyTorch, plain or .gz). ncu serialises
  the kernels, so the times are the kernels' own. A training loop launches the same kernels
  every step, so one step is the shortest period with which the launches' names repeat at
  the end of the log; the summary is that last step's.

  python3 scripts/profile-summary.py profile-kernels.txt.gz [steps [skip]]
  python3 scripts/profile-summary.py ncu-padam.csv.gz

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


def ncu_launches(path, opener):
    """(kernel name, seconds) per launch of an ncu CSV, or None when `path` is not one."""
    import csv
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        lines = [line for line in f if line.startswith('"')]
    if not lines or "Kernel Name" not in lines[0]:
        return None
    rows = list(csv.DictReader(lines))
    scale = {"nsecond": 1e-9, "ns": 1e-9, "usecond": 1e-6, "us": 1e-6, "msecond": 1e-3,
             "ms": 1e-3, "second": 1.0, "s": 1.0}
    out = []
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        out.append((r["Kernel Name"], value * scale.get(r.get("Metric Unit", "ns"), 1e-9)))
    return out


def last_step(launches, shortest=8):
    """The launches of the last step: the shortest period p with which the names of the last
    2p launches repeat (None when no period fits twice)."""
    names = [n for n, _ in launches]
    for p in range(shortest, len(names) // 2 + 1):
        if names[-p:] == names[-2 * p:-p]:
            return launches[-p:]
    return None


def short(name):
    """A kernel's name without its parameter list (its template arguments tell the
    element-wise kernels' operations apart)."""
    depth = 0
    for i, c in enumerate(name):
        depth += (c == "<") - (c == ">")
        if c == "(" and depth == 0 and i > 0:
            name = name[:i]
            break
    return name.replace("void ", "")[:120]


def summarise_ncu(path, launches):
    step = last_step(launches)
    if step is None:
        sys.exit(f"profile-summary.py: the launches of {path} do not repeat: no step found")
    total, count = collections.Counter(), collections.Counter()
    for name, seconds in step:
        total[short(name)] += seconds
        count[short(name)] += 1
    t = sum(total.values())
    print(f"{path}: one step = {len(step)} kernel launches, {t * 1e3:.2f} ms of kernel time "
          f"({len(launches)} launches profiled)")
    print(f"{'ms':>9} {'share':>6} {'launches':>8}  kernel")
    for key, v in total.most_common(25):
        print(f"{v * 1e3:9.3f} {100 * v / t:5.1f}% {count[key]:8d}  {key}")


def main():
    if len(sys.argv) == 2:
        path = sys.argv[1]
        opener = gzip.open if path.endswith(".gz") else open
        try:
            launches = ncu_launches(path, opener)
        except OSError as e:
            sys.exit(f"profile-summary.py: cannot read {path}: {e.strerror}")
        if launches is not None:
            return summarise_ncu(path, launches)
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
