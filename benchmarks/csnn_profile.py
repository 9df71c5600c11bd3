"""Where the CSNN training step's time goes, ours vs SpikingJelly's (torch.profiler, CPU).

    python -m benchmarks.csnn_profile --channels 128 --batch 128      # the table of benchmarks/RESULTS.md

Each operator's self time is charged to the nearest enclosing event that names a part of the
network (convolutions, BatchNorm, LIF, pooling, linear layers, loss, optimizer), so the
elementwise ops inside SpikingJelly's neuron count as its LIF. What no named event encloses is
"other": for SpikingJelly mostly the autograd nodes of its neuron's Python loop (``MulBackward0``,
``RsubBackward1`` ...), for ours the reshapes and the mean over T. The profiler's own overhead
inflates many small ops (SpikingJelly's loop) more than few large ones, so the unprofiled wall
time of the same step is printed beside it.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import interleaved
from benchmarks.test_csnn import make_pair, step_function

# (part, substrings of lower-cased event names), matched in this order
PARTS = (
    ("optimizer", ("optimizer.", "_foreach", "sgd")),
    ("loss", ("mse_loss", "mselossbackward")),
    ("conv", ("conv",)),
    ("batchnorm", ("batch_norm", "batchnorm", "var_mean")),
    ("pooling", ("max_pool", "maxpool")),
    ("linear", ("aten::mm", "mmbackward", "aten::addmm", "addmmbackward", "aten::linear")),
    ("lif", ("lif", "sj_if", "surrogate", "heaviside")),
)
ORDER = [name for name, _ in PARTS] + ["other"]


def _part(name: str) -> str | None:
    lowered = name.lower()
    for part, needles in PARTS:
        if any(needle in lowered for needle in needles):
            return part
    return None


def charge(events) -> dict[str, float]:
    """Seconds of self CPU time per part: each event's self time goes to the part of its nearest
    ancestor (itself included) whose name names one, else to "other"."""
    totals = dict.fromkeys(ORDER, 0.0)
    for event in events:
        node, part = event, None
        while node is not None and part is None:
            part = _part(node.name)
            node = node.cpu_parent
        totals[part or "other"] += event.self_cpu_time_total / 1e6
    return totals


def profile_step(function) -> dict[str, float]:
    function()  # warm-up (and the C kernel's first-call build)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        function()
    return charge(prof.events())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    args = parser.parse_args(argv)
    dtype = torch.bfloat16 if args.bf16 else None
    theirs, ours = make_pair(args.channels)
    steps = {"SpikingJelly": step_function(theirs, args.batch, True, dtype),
             "ours": step_function(ours, args.batch, False, dtype)}
    print(f"C={args.channels} batch {args.batch} {'bf16' if args.bf16 else 'fp32'}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load {os.getloadavg()}")
    parts = {name: profile_step(step) for name, step in steps.items()}
    walls = {name: m.median for name, m in interleaved(steps, 3).items()}
    print("| part | " + " | ".join(f"{name} (s)" for name in steps) + " | " + " | ".join(f"{name} share" for name in steps) + " |")
    print("| --- " * (1 + 2 * len(steps)) + "|")
    for part in ORDER:
        seconds = [parts[name][part] for name in steps]
        shares = [parts[name][part] / max(sum(parts[name].values()), 1e-12) for name in steps]
        print(f"| {part} | " + " | ".join(f"{s:.3f}" for s in seconds) + " | " + " | ".join(f"{s:.0%}" for s in shares) + " |")
    print("| profiled total | " + " | ".join(f"{sum(parts[name].values()):.3f}" for name in steps) + " | | |")
    print("| wall, unprofiled (median of 3, interleaved) | " + " | ".join(f"{walls[name]:.3f}" for name in steps) + " | | |")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
