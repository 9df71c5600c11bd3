"""Per-call cost of the public LIF function on a small CPU input (the registered op's overhead).

    python -m benchmarks.op_overhead [--backend torch] [--shape 32 6 512] [--repeat 2000]

Prints the minimum, the median (and the 10th/90th percentile) microseconds per call of the eager forward under
``torch.no_grad``, of forward with grad, and of forward + backward, with the machine's load average
(the CI machine is shared, so figures are only comparable within one run). Run it at two commits to
compare before/after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from snn.lif.backends import get_lif_function


def _time(fn, repeat: int) -> tuple[float, float, float]:
    for _ in range(max(10, repeat // 10)):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    q = statistics.quantiles(samples, n=10)
    return min(samples), statistics.median(samples), q[0], q[-1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 6, 512), metavar=("B", "T", "N"))
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--through-op", action="store_true",
                        help="send plain eager calls through the registered op too (snn.lif.ops.EAGER_FAST_PATH = False)")
    args = parser.parse_args(argv)
    if args.through_op:
        import snn.lif.ops

        snn.lif.ops.EAGER_FAST_PATH = False
    torch.set_num_threads(1)
    lif = get_lif_function(args.backend)
    x = torch.randn(*args.shape) + 0.5
    xg = x.clone().requires_grad_()
    grad = torch.ones_like(x)

    def no_grad():
        with torch.no_grad():
            lif(x)

    def fwd_bwd():
        lif(xg).backward(grad)

    print(f"backend={args.backend} shape={tuple(args.shape)} through_op={args.through_op} torch={torch.__version__} threads=1 "
          f"load average={os.getloadavg()[0]:.2f}")
    for name, fn in (("forward, no_grad", no_grad), ("forward, grad", lambda: lif(xg)), ("forward+backward", fwd_bwd)):
        best, med, lo, hi = _time(fn, args.repeat)
        print(f"  {name:18s} min {best:7.1f} us  median {med:8.1f} us  (p10 {lo:.1f}, p90 {hi:.1f})")


if __name__ == "__main__":
    main()
