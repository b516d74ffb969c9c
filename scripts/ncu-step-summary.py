#!/usr/bin/env python3
"""The PAdam kernels of one optimizer step, from an Nsight Compute CSV that
`PROFILE=step bash scripts/gpu-profile.sh` wrote (ncu-step-<shapes>-<optimizer>.csv[.gz]).

  python3 scripts/ncu-step-summary.py ncu-step-gpt2-padam_unchecked.csv.gz [steps] [params] [kernels]

The profiled `padam bench step --warmup 2 --iters 2` runs `steps` (default 4) optimizer steps,
each launching the same kernels, so the last step is the last 1/steps of the step's launches:
kernel names containing `kernels` (default `adam_pwd`, PAdam's; `multi_tensor` for PyTorch's
fused AdamW, whose profile also runs 4 steps); set-up kernels are skipped. Prints each launch of that
step (time, DRAM bytes, ncu's DRAM and SM throughput as % of peak, grid) and the step's sum:
kernel time, bytes moved, the bandwidth they imply, and the ratio to the time those bytes
take at `bytes/s` (default 3.05e12, the device-to-device copy measured on an H100; KINDS.md).
ncu runs each kernel alone with the caches flushed, so the sum is the GPU's own time for the
step, without the host's gaps between launches."""
import collections
import csv
import gzip
import sys


def launches(path, kernels):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        lines = [line for line in f if line.startswith('"')]
    by_id = collections.OrderedDict()
    for row in csv.DictReader(lines):
        metrics = by_id.setdefault(row["ID"], {"name": row["Kernel Name"]})
        metrics[row["Metric Name"]] = float(row["Metric Value"].replace(",", "") or "nan")
    return [m for m in by_id.values() if kernels in m["name"]]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    params = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None
    name = sys.argv[4] if len(sys.argv) > 4 else "adam_pwd"
    kernels = launches(path, name)
    if not kernels or len(kernels) % steps:
        sys.exit(f"{path}: {len(kernels)} launches of `{name}` kernels, not a multiple of {steps} steps")
    step = kernels[-len(kernels) // steps:]
    print(f"{path}: {len(step)} launches per step")
    print("  time (us)  read (MB)  written (MB)  DRAM %  SM %   grid  kernel")
    pct = lambda m, k: f"{m[k]:6.1f}" if k in m else "     -"
    for m in step:
        print(f"  {m['gpu__time_duration.sum'] / 1e3:9.1f}  {m.get('dram__bytes_read.sum', 0) / 1e6:9.1f}"
              f"  {m.get('dram__bytes_write.sum', 0) / 1e6:12.1f}"
              f"  {pct(m, 'dram__throughput.avg.pct_of_peak_sustained_elapsed')}"
              f" {pct(m, 'sm__throughput.avg.pct_of_peak_sustained_elapsed')}"
              f"  {m.get('launch__grid_size', 0):5.0f}  {m['name']}")
    seconds = sum(m["gpu__time_duration.sum"] for m in step) * 1e-9
    moved = sum(m.get("dram__bytes_read.sum", 0) + m.get("dram__bytes_write.sum", 0) for m in step)
    print(f"  step: {seconds * 1e3:.3f} ms of kernels, {moved / 1e6:.1f} MB moved in DRAM, "
          f"{moved / seconds / 1e12:.2f} TB/s")
    if params:
        floor = 28 * params / 3.05e12
        print(f"  floor (28 B x {params:.0f} parameters at 3.05 TB/s): {floor * 1e3:.3f} ms; "
              f"the kernels take {seconds / floor:.2f}x")


if __name__ == "__main__":
    main()
