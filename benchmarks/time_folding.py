"""How TimeDistributed should fold T: one conv forward+backward over [B*T] against chunks of steps.

    python -m benchmarks.time_folding --batch 16 --steps 50 --reps 5

The layers of snnTorch's tutorial 6 (12C5 on 28x28, 64C5 on 12x12) and a Linear, fed [B, T, ...]
spikes-like inputs; each row is a chunk size (steps per module call; T = fold all), timed
forward + backward, the strategies interleaved call by call (medians). The ``auto`` row is what
:class:`snn.time_distributed.TimeDistributed` picks.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from snn.time_distributed import TimeDistributed
from benchmarks.common import interleaved_times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--chunks", default="1,2,5,10,25,all,auto")
    args = parser.parse_args(argv)
    B, T = args.batch, args.steps
    print(f"threads {torch.get_num_threads()}, B={B}, T={T}, load average {os.getloadavg()}")
    layers = {
        "conv 1->12 k5 28x28": (nn.Conv2d(1, 12, 5), (1, 28, 28)),
        "conv 12->64 k5 12x12": (nn.Conv2d(12, 64, 5), (12, 12, 12)),
        "linear 1024->10": (nn.Linear(1024, 10), (1024,)),
    }
    for name, (layer, shape) in layers.items():
        x = (torch.rand(B, T, *shape) < 0.2).float().requires_grad_()
        calls = {}
        for chunk in args.chunks.split(","):
            fold = {"all": "all", "auto": "auto"}.get(chunk, None) or int(chunk)
            td = TimeDistributed(layer, fold=fold)
            calls[chunk] = lambda td=td: td(x).sum().backward()
        for call in calls.values():
            call()
        med, _ = interleaved_times(calls, args.reps)
        cells = ", ".join(f"{k}: {1e3 * med[k]:.1f} ms" for k in calls)
        print(f"{name}: {cells}", flush=True)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
