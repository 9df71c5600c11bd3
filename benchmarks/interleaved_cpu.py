"""Contender 3 (torch.compile of the seed LIF) against our torch backend, alternating call by call.

    python -m benchmarks.interleaved_cpu --threads 2 --shapes 128x6x512,1024x6x512 --dtypes float32,bfloat16 --reps 400

pytest-benchmark times one contender's rounds, then the next one's; on a shared VM whose speed
drifts from minute to minute, a ratio close to 1 can then flip between runs. Here the two
contenders alternate on the same input, so both see the same machine; the training forward (input
requires grad) and forward+backward are timed, and the median and min of each are printed with
the median ratio (> 1: ours faster). Compilation happens before timing.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.contenders import seed_lif
from snn.kernels.lif.cpu_launch import lif_torch_fused
from benchmarks.common import interleaved_times


def _shape(text: str) -> tuple[int, int, int]:
    b, t, n = (int(v) for v in text.split("x"))
    return b, t, n


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--shapes", default="128x6x512,1024x6x512", help="BxTxN,...")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, load average {os.getloadavg()}")
    for shape in map(_shape, args.shapes.split(",")):
        for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
            gen = torch.Generator().manual_seed(0)
            x = (0.6 + 0.6 * torch.randn(shape, generator=gen)).to(dtype).requires_grad_()
            g = torch.randn(shape, generator=gen).to(dtype)
            torch._dynamo.reset()
            compiled = torch.compile(seed_lif, dynamic=False, fullgraph=True)
            calls = {}
            for name, fn in (("compile", compiled), ("ours", lif_torch_fused)):
                calls[f"{name} fwd"] = lambda fn=fn: fn(x)
                calls[f"{name} fwd+bwd"] = lambda fn=fn: torch.autograd.grad(fn(x), x, g)
            for call in calls.values():  # compile, build, warm up
                call(), call()
            med, times = interleaved_times(calls, args.reps)
            cells = " | ".join(f"{name} {1e3 * med[name]:.3f} ms (min {1e3 * min(times[name]):.3f})" for name in calls)
            print(f"B={shape[0]} T={shape[1]} N={shape[2]} {str(dtype).removeprefix('torch.')}: {cells} || ours vs compile "
                  f"(median): fwd {med['compile fwd'] / med['ours fwd']:.2f}x, fwd+bwd {med['compile fwd+bwd'] / med['ours fwd+bwd']:.2f}x",
                  flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
