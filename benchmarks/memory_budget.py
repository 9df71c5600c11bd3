"""The largest CSNN batch whose training step fits a peak-RSS budget: ours plain / ours low / SpikingJelly plain / memopt.

    python -m benchmarks.memory_budget [--budget-mib 4096] [--channels 32] [--time-steps 4]

Each figure is the peak RSS (``ru_maxrss``) of a fresh process that builds the network and runs
two training steps (:func:`benchmarks.memory_accounting.peak_rss_mib`; SpikingJelly's memopt runs
its search in that process too). The peak grows about linearly with the batch: two small batches
start a secant search (two more probes, batches multiples of 8), and the row is the largest
*measured* batch whose peak is within the budget, with that peak (not an extrapolation).
"""

from __future__ import annotations

import argparse
import json

from benchmarks.memory_accounting import peak_rss_mib

CONTENDERS = ("csnn-low", "sj-memopt", "sj-plain", "csnn-plain")
LABELS = {"csnn-plain": "ours plain", "csnn-low": "ours low", "sj-plain": "SpikingJelly BPTT",
          "sj-memopt": "SpikingJelly memopt (level 1, memory, compress)"}


def largest_batch(name: str, budget_mib: float, channels: int, time_steps: int, small=(16, 64), probes=2) -> dict:
    """Secant search: the line through the last two measured (batch, peak) points gives the next batch
    (a multiple of 8); the answer is the largest measured batch whose peak is within the budget."""
    points = [(b, peak_rss_mib(name, b, channels, time_steps)) for b in small]
    slope = (points[1][1] - points[0][1]) / (small[1] - small[0])
    for _ in range(probes):
        (b1, p1), (b2, p2) = points[-2], points[-1]
        step = (p2 - p1) / (b2 - b1) if b2 != b1 and p2 > p1 else slope
        batch = max(8, int(b2 + (budget_mib - p2) / step) // 8 * 8)
        if any(b == batch for b, _ in points):
            break
        peak = peak_rss_mib(name, batch, channels, time_steps)
        points.append((batch, float("inf") if peak is None else peak))
    fits = [(b, p) for b, p in points if p <= budget_mib]
    batch, peak = max(fits)
    return {"name": name, "batch": batch, "peak_mib": peak, "mib_per_sample": slope, "points": points}


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
    print(f"\n| CSNN C={args.channels} T={args.time_steps}, peak RSS within {args.budget_mib:.0f} MiB | largest measured "
          "batch | its peak | MiB per sample (B 16 -> 64) | probes (batch: MiB) |\n|---|---|---|---|---|")
    for r in rows:
        probes = ", ".join(f"{b}: {p:.0f}" for b, p in r["points"])
        print(f"| {LABELS[r['name']]} | {r['batch']} | {r['peak_mib']:.0f} MiB | {r['mib_per_sample']:.2f} | {probes} |")


if __name__ == "__main__":
    main()
