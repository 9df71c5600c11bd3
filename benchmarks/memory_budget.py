"""The largest CSNN batch whose training step fits a peak-RSS budget: ours plain / ours low / SpikingJelly plain / memopt.

    python -m benchmarks.memory_budget [--budget-mib 4096] [--channels 32] [--time-steps 4]

Each figure is the peak RSS (``ru_maxrss``) of a fresh process that builds the network and runs
two training steps (:func:`benchmarks.memory_accounting.peak_rss_mib`; SpikingJelly's memopt runs
its search in that process too). The peak grows linearly with the batch, so two small batches fix
the line, the budget gives the batch, and that batch (rounded down to a multiple of 8) is then
run and its peak reported: the row holds a measured peak, not an extrapolation (when the measured
peak is over the budget, the batch steps down by a tenth, at most three times).
"""

from __future__ import annotations

import argparse
import json

from benchmarks.memory_accounting import peak_rss_mib

CONTENDERS = ("csnn-plain", "csnn-low", "sj-plain", "sj-memopt")
LABELS = {"csnn-plain": "ours plain", "csnn-low": "ours low", "sj-plain": "SpikingJelly BPTT",
          "sj-memopt": "SpikingJelly memopt (level 1, memory, compress)"}


def largest_batch(name: str, budget_mib: float, channels: int, time_steps: int, small=(16, 64)) -> dict:
    p1, p2 = (peak_rss_mib(name, b, channels, time_steps) for b in small)
    slope = (p2 - p1) / (small[1] - small[0])
    base = p1 - slope * small[0]
    batch = max(8, int((budget_mib - base) / slope) // 8 * 8)
    for _ in range(4):
        peak = peak_rss_mib(name, batch, channels, time_steps)
        if peak is not None and peak <= budget_mib:
            break
        batch = max(8, int(batch * 0.9) // 8 * 8)
    return {"name": name, "batch": batch, "peak_mib": peak, "mib_per_sample": slope, "base_mib": base,
            "probes": {small[0]: p1, small[1]: p2}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-mib", type=float, default=4096)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=CONTENDERS, choices=CONTENDERS)
    args = parser.parse_args()
    rows = []
    for name in args.only:
        row = largest_batch(name, args.budget_mib, args.channels, args.time_steps)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n| CSNN C={args.channels} T={args.time_steps}, budget {args.budget_mib:.0f} MiB peak RSS | largest batch | "
          "its measured peak | MiB per sample (slope) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {LABELS[r['name']]} | {r['batch']} | {r['peak_mib']:.0f} MiB | {r['mib_per_sample']:.3f} |")


if __name__ == "__main__":
    main()
