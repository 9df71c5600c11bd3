"""Saved-activation accounting and peak RSS of a training step (the measuring half of benchmarks/test_memory.py).

    python -m benchmarks.memory_accounting saved                # the saved-bytes table (one process)
    python -m benchmarks.memory_accounting budget [--budget-mib 4096] [--channels 32] [--time-steps 4]
    python -m benchmarks.memory_accounting steps csnn-plain csnn-low --batch 64    # step times, interleaved
    python -m benchmarks.memory_accounting peak NAME B C T      # one fresh-process peak-RSS probe (prints JSON)

Saved bytes: every tensor the autograd graph packs for the backward (``saved_tensors_hooks``, which also
sees what ``torch.utils.checkpoint`` and SpikingJelly's memopt keep), each storage once; the model's
parameters and buffers apart as weights; the step's input images left out (the caller holds them).
Peak RSS: ``ru_maxrss`` of a fresh process that builds the model and runs ``$SNN_MEMORY_PEAK_STEPS``
(default 2) SGD steps at batch B, imports and model included. ``budget``: the largest CSNN batch whose
peak fits, by a secant search over measured probes (two small batches, two more probes, multiples of
8); the row is the largest *measured* batch within the budget, never an extrapolation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.common import REPO_ROOT, interleaved, saved_storages
from benchmarks.test_csnn import spikingjelly_csnn  # SpikingJelly's own CSNN, tensorboard stubbed



def saved_of(model: torch.nn.Module, forward, inputs, batch: int) -> dict:
    """Saved activation bytes per sample and saved weight bytes of ``forward()``'s graph (module docstring)."""
    storages = saved_storages(forward)
    weights = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    skip = weights | {t.untyped_storage().data_ptr() for t in inputs}
    return {"per_sample": sum(n for p, n in storages.items() if p not in skip) / batch,
            "weights": sum(n for p, n in storages.items() if p in weights)}


def spikingjelly_memopt(model, batch: int, dtype=torch.float32):
    """SpikingJelly 2.0's ``memopt.optimize_memory`` at its most aggressive preset that runs on a CPU (level 1:
    levels 2-4 refuse a CPU model; ``checkpoint_budget="memory"``; ``compress=True``; every layer a candidate).
    Returns (model, seconds the search took)."""
    from spikingjelly.activation_based import functional, layer, memopt, neuron

    example = torch.rand(batch, 1, 28, 28, dtype=dtype)
    start = time.perf_counter()
    memopt.optimize_memory(model, (layer.Conv2d, layer.BatchNorm2d, neuron.IFNode, layer.MaxPool2d, layer.Linear),
                           lambda m: (functional.reset_net(m), m(example))[1], level=1, checkpoint_budget="memory", compress=True)
    return model, time.perf_counter() - start


def build(name: str, batch: int, channels: int = 128, time_steps: int = 4, dtype=torch.float32):
    """``(model, after_step, search_seconds)`` for ``mlp-plain``, ``mlp-low``, ``csnn-plain``, ``csnn-low``,
    ``sj-plain``, ``sj-memopt``."""
    torch.manual_seed(0)
    after, search = (lambda m: None), 0.0
    if name.startswith("mlp"):
        from snn.model import MLPConfig, SpikingMLP

        model = SpikingMLP(MLPConfig(memory=name.split("-")[1]))
    elif name.startswith("csnn"):
        from snn.csnn import CSNNConfig, SpikingCSNN

        model = SpikingCSNN(CSNNConfig(channels=channels, time_steps=time_steps, memory=name.split("-")[1]))
    else:
        from spikingjelly.activation_based import functional

        model, after = spikingjelly_csnn(channels, time_steps).to(dtype), functional.reset_net
        if name == "sj-memopt":
            model, search = spikingjelly_memopt(model, batch, dtype)
    return model.to(dtype).train(), after, search


def images_for(name: str, batch: int, dtype=torch.float32) -> torch.Tensor:
    shape = (batch, 784) if name.startswith("mlp") else (batch, 1, 28, 28)
    return torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(dtype)


def sgd_step(name, batch, channels=128, time_steps=4, dtype=torch.float32):
    """One training step (forward, MSE against one-hot, backward, SGD) of a contender, as a function."""
    model, after, _ = build(name, batch, channels, time_steps, dtype)
    optimizer, images = torch.optim.SGD(model.parameters(), lr=0.01), images_for(name, batch, dtype)
    target = F.one_hot(torch.arange(batch) % 10, 10).float()

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(model(images).float(), target).backward()
        after(model)
        optimizer.step()

    return step


def measure_saved(name: str, batch: int, channels=128, time_steps=4, dtype=torch.float32) -> tuple[dict, float]:
    model, after, search = build(name, batch, channels, time_steps, dtype)
    images = images_for(name, batch, dtype)
    saved = saved_of(model, lambda: model(images), (images,), batch)
    after(model)
    return saved, search


def step_times(names, batch: int, channels=128, time_steps=4, dtype=torch.float32, rounds=7) -> dict:
    """Median seconds of one training step per contender, interleaved round by round in this process
    (read the ratio on a loaded machine); one warm-up step each."""
    steps = {name: sgd_step(name, batch, channels, time_steps, dtype) for name in names}
    for step in steps.values():
        step()
    return {name: m.median for name, m in interleaved(steps, rounds).items()}


def _peak_child(name: str, batch: int, channels: int, time_steps: int) -> None:
    step = sgd_step(name, batch, channels, time_steps)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(int(os.environ.get("SNN_MEMORY_PEAK_STEPS", "2"))):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"name": name, "batch": batch, "peak_mib": peak / 1024, "before_step_mib": base / 1024}))


def peak_rss_mib(name: str, batch: int, channels: int = 128, time_steps: int = 4, timeout: float = 900) -> float | None:
    """Peak RSS (MiB) of a fresh process running training steps of ``name`` at ``batch``; None when it ran out of memory."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    cmd = [sys.executable, "-m", "benchmarks.memory_accounting", "peak", name, str(batch), str(channels), str(time_steps)]
    run = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        if "MemoryError" in run.stderr or "DefaultCPUAllocator" in run.stderr or run.returncode < 0:
            return None
        raise RuntimeError(f"peak probe {name} B={batch} failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])["peak_mib"]


def _fmt(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.2f} KiB"


def saved_main() -> None:
    print("| network | T | dtype | contender | saved activations / sample | weights saved | vs the first row (SJ plain; MLP: ours plain) | search |\n" + "|---" * 8 + "|")
    cases = [("MLP B=256", 6, torch.float32, ("mlp-plain", "mlp-low"), 256)]
    batch = int(os.environ.get("SNN_MEMORY_CSNN_BATCH", "16"))
    cases += [(f"CSNN C=128 B={batch}", T, dt, ("sj-plain", "sj-memopt", "csnn-plain", "csnn-low"), batch)
              for T in (4, 16) for dt in (torch.float32, torch.bfloat16)]
    for net, T, dtype, names, b in cases:
        ref = None
        for name in names:
            saved, search = measure_saved(name, b, 128, T, dtype)
            ref = ref or saved["per_sample"]
            print(f"| {net} | {T} | {str(dtype)[6:]} | {name} | {_fmt(saved['per_sample'])} | {_fmt(saved['weights'])} | "
                  f"{ref / saved['per_sample']:.1f}x | {search:.1f} s |", flush=True)


def largest_batch(name: str, budget_mib: float, channels: int, time_steps: int, small=(16, 64), probes=2) -> dict:
    points = [(b, peak_rss_mib(name, b, channels, time_steps)) for b in small]
    slope = (points[1][1] - points[0][1]) / (small[1] - small[0])
    for _ in range(probes):  # the line through the last two measured points gives the next batch
        (b1, p1), (b2, p2) = points[-2], points[-1]
        step = (p2 - p1) / (b2 - b1) if b2 != b1 and p2 > p1 else slope
        batch = max(8, int(b2 + (budget_mib - p2) / step) // 8 * 8)
        if any(b == batch for b, _ in points):
            break
        peak = peak_rss_mib(name, batch, channels, time_steps)
        points.append((batch, float("inf") if peak is None else peak))
    batch, peak = max((b, p) for b, p in points if p <= budget_mib)
    return {"name": name, "batch": batch, "peak_mib": peak, "mib_per_sample": slope, "points": points}


BUDGET_LABELS = {"csnn-low": "ours low", "sj-memopt": "SpikingJelly memopt (level 1, memory, compress)",
                 "sj-plain": "SpikingJelly BPTT", "csnn-plain": "ours plain"}


def budget_main(args) -> None:
    rows = []
    for name in args.only:
        rows.append(largest_batch(name, args.budget_mib, args.channels, args.time_steps))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| CSNN C={args.channels} T={args.time_steps}, peak RSS within {args.budget_mib:.0f} MiB | largest measured "
          "batch | its peak | MiB per sample (B 16 -> 64) | probes (batch: MiB) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {BUDGET_LABELS[r['name']]} | {r['batch']} | {r['peak_mib']:.0f} MiB | {r['mib_per_sample']:.2f} | "
              + ", ".join(f"{b}: {p:.0f}" for b, p in r["points"]) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("saved", help="the saved-bytes table")
    budget = sub.add_parser("budget", help="the largest CSNN batch within a peak-RSS budget (minutes)")
    budget.add_argument("--budget-mib", type=float, default=4096)
    budget.add_argument("--channels", type=int, default=32)
    budget.add_argument("--time-steps", type=int, default=4)
    budget.add_argument("--only", nargs="*", default=list(BUDGET_LABELS), choices=list(BUDGET_LABELS))
    steps = sub.add_parser("steps", help="training step times, contenders interleaved")
    steps.add_argument("names", nargs="+")
    steps.add_argument("--batch", type=int, default=64)
    steps.add_argument("--channels", type=int, default=128)
    steps.add_argument("--rounds", type=int, default=7)
    peak = sub.add_parser("peak", help="one fresh-process probe (what budget runs)")
    for arg in ("name", "batch", "channels", "time_steps"):
        peak.add_argument(arg, type=str if arg == "name" else int)
    args = parser.parse_args(argv)
    if args.command == "peak":
        _peak_child(args.name, args.batch, args.channels, args.time_steps)
    elif args.command == "budget":
        budget_main(args)
    elif args.command == "steps":
        print(json.dumps(step_times(args.names, args.batch, args.channels, rounds=args.rounds)))
    else:
        saved_main()


if __name__ == "__main__":
    main()
