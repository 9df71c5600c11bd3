"""In-process CPU ratios, timed with ``torch.utils.benchmark.Timer``, contenders interleaved call by call.

    python -m benchmarks.interleaved lif --shapes 128x6x512,1024x6x512 --dtypes float32,bfloat16 --reps 400
    python -m benchmarks.interleaved op-overhead [--backend torch] [--shape 32 6 512] [--min-run-time 1] [--through-op]
    python -m benchmarks.interleaved folding --batch 16 --steps 50 --reps 5
    python -m benchmarks.interleaved lif-pool --channels 128 --batch 128 --reps 10

* ``lif``: ``torch.compile`` of the seed loop against ``lif_spike(backend="torch")`` (the fused C kernel),
  forward under ``no_grad``, training forward and forward+backward, alternating on the same input so that a shared VM whose speed drifts
  affects both alike (pytest-benchmark times one contender's rounds, then the next one's); > 1: ours faster.
* ``op-overhead``: the per-call cost of the public LIF function on a small input, one thread (the
  registered op's overhead): forward under ``no_grad``, with grad, forward+backward.
* ``folding``: how ``TimeDistributed`` should fold T: one module call over ``[B*T]`` against chunks of
  steps, forward+backward, for the layers of snnTorch's tutorial 6 and a Linear; ``auto`` is its pick.
* ``lif-pool``: the CSNN's two conv blocks' LIF + 2x2 max-pooling (IF neuron, atan, T=4, fp32), the fused C
  pass of :mod:`snn.lif.pool` against the LIF kernel and ``F.max_pool2d`` one after the other: forward
  under ``no_grad`` and forward+backward.
"""

from __future__ import annotations

import argparse
import os

import torch

from benchmarks.common import interleaved


def _ms(m) -> str:
    return f"{1e3 * m.median:.3f} ms (IQR {1e3 * m.iqr:.3f}, min {1e3 * min(m.times):.3f})"


def _no_grad(fn, x):
    with torch.no_grad():
        return fn(x)


def lif(args) -> None:
    from benchmarks.contenders import seed_lif
    from snn.lif.layers import lif_spike

    for shape in args.shapes.split(","):
        for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
            gen = torch.Generator().manual_seed(0)
            size = tuple(int(v) for v in shape.split("x"))
            x = (0.6 + 0.6 * torch.randn(size, generator=gen)).to(dtype).requires_grad_()
            g = torch.randn(size, generator=gen).to(dtype)
            torch._dynamo.reset()
            calls = {}
            ours = lambda t: lif_spike(t, backend="torch")  # noqa: E731  (the public call, all its checks)
            for name, fn in (("compile", torch.compile(seed_lif, dynamic=False, fullgraph=True)), ("ours", ours)):
                calls[f"{name} no_grad"] = lambda fn=fn: _no_grad(fn, x)
                calls[f"{name} fwd"] = lambda fn=fn: fn(x)
                calls[f"{name} fwd+bwd"] = lambda fn=fn: torch.autograd.grad(fn(x), x, g)
            for call in calls.values():  # compile, build, warm up
                call(), call()
            m = interleaved(calls, args.reps)
            print(f"B,T,N={shape} {str(dtype).removeprefix('torch.')}: " + " | ".join(f"{k} {_ms(v)}" for k, v in m.items())
                  + f" || ours vs compile (median): no_grad {m['compile no_grad'].median / m['ours no_grad'].median:.2f}x, "
                  f"fwd {m['compile fwd'].median / m['ours fwd'].median:.2f}x, "
                  f"fwd+bwd {m['compile fwd+bwd'].median / m['ours fwd+bwd'].median:.2f}x", flush=True)


def op_overhead(args) -> None:
    from torch.utils.benchmark import Timer

    from snn.lif.backends import get_lif_function

    if args.through_op:
        import snn.lif.ops

        snn.lif.ops.EAGER_FAST_PATH = False  # plain eager calls through the registered op too
    torch.set_num_threads(1)
    lif_fn = get_lif_function(args.backend)
    x = torch.randn(*args.shape) + 0.5
    xg, grad = x.clone().requires_grad_(), torch.ones_like(x)
    print(f"backend={args.backend} shape={tuple(args.shape)} through_op={args.through_op} threads=1")
    for name, stmt in (("forward, no_grad", "with torch.no_grad(): f(x)"), ("forward, grad", "f(xg)"),
                       ("forward+backward", "f(xg).backward(grad)")):
        timer = Timer(stmt, globals=dict(torch=torch, f=lif_fn, x=x, xg=xg, grad=grad), num_threads=1)
        m = timer.blocked_autorange(min_run_time=args.min_run_time)
        print(f"  {name:18s} median {1e6 * m.median:8.1f} us per call (IQR {1e6 * m.iqr:.1f}; "
              f"{len(m.times)} blocks of {m.number_per_run})", flush=True)


def folding(args) -> None:
    from torch import nn

    from snn.time_distributed import TimeDistributed

    layers = {"conv 1->12 k5 28x28": (nn.Conv2d(1, 12, 5), (1, 28, 28)),
              "conv 12->64 k5 12x12": (nn.Conv2d(12, 64, 5), (12, 12, 12)), "linear 1024->10": (nn.Linear(1024, 10), (1024,))}
    print(f"B={args.batch}, T={args.steps}")
    for name, (layer, shape) in layers.items():
        x = (torch.rand(args.batch, args.steps, *shape) < 0.2).float().requires_grad_()
        calls = {}
        for chunk in args.chunks.split(","):
            td = TimeDistributed(layer, fold=chunk if chunk in ("all", "auto") else int(chunk))
            calls[chunk] = lambda td=td: td(x).sum().backward()
        for call in calls.values():
            call()
        print(f"{name}: " + ", ".join(f"{k}: {1e3 * m.median:.1f} ms" for k, m in interleaved(calls, args.reps).items()), flush=True)


def lif_pool(args) -> None:
    from snn.lif.layers import LIFSpike
    from snn.lif.pool import fusable, lif_max_pool2d, unfused

    layer = LIFSpike(tau=1.0, surrogate="atan")
    for side in (28, 14):
        shape = (args.batch, 4, args.channels, side, side)
        x = (torch.randn(shape) * 1.2 + 0.5).requires_grad_()
        grad = torch.randn(*shape[:3], side // 2, side // 2)
        assert fusable(layer, x)

        def train(fn):
            return lambda: fn(x).backward(grad)

        calls = {"fused forward": lambda: _no_grad(lambda v: lif_max_pool2d(layer, v), x),
                 "unfused forward": lambda: _no_grad(lambda v: unfused(layer, v)[0], x),
                 "fused forward+backward": train(lambda v: lif_max_pool2d(layer, v)),
                 "unfused forward+backward": train(lambda v: unfused(layer, v)[0])}
        for call in calls.values():
            call()
        m = interleaved(calls, args.reps)
        print(f"{'x'.join(map(str, shape))}: " + ", ".join(f"{k} {1e3 * v.median:.1f} ms" for k, v in m.items())
              + f"; forward {m['unfused forward'].median / m['fused forward'].median:.2f}x, forward+backward "
              f"{m['unfused forward+backward'].median / m['fused forward+backward'].median:.2f}x", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lif", help="torch.compile of the seed loop vs our fused CPU kernel")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--shapes", default="128x6x512,1024x6x512,16x16x65536", help="BxTxN,... (16x16x65536: the CPU's large shape)")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--reps", type=int, default=200)
    p = sub.add_parser("op-overhead", help="per-call cost of the public LIF function")
    p.add_argument("--backend", default="torch")
    p.add_argument("--shape", type=int, nargs=3, default=(32, 6, 512), metavar=("B", "T", "N"))
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement (Timer.blocked_autorange)")
    p.add_argument("--through-op", action="store_true", help="snn.lif.ops.EAGER_FAST_PATH = False")
    p = sub.add_parser("folding", help="TimeDistributed: fold all T against chunks of steps")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--chunks", default="1,2,5,10,25,all,auto")
    p = sub.add_parser("lif-pool", help="the CSNN's LIF + max-pooling, fused against unfused")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    {"lif": lif, "op-overhead": op_overhead, "folding": folding, "lif-pool": lif_pool}[args.command](args)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
