"""What the benchmarks share and what is ours: shapes, inputs, byte counts, saved-bytes accounting, timing glue.

Timing is not ours: on CPU pytest-benchmark plans the rounds (``--benchmark-max-time``,
``--benchmark-min-rounds``); on CUDA ``triton.testing.do_bench`` times (it flushes L2 and
synchronises around every call); the in-process ratios use ``torch.utils.benchmark.Timer``.

Byte counts. The LIF layer is memory bound. Per neuron-step, for ``e`` bytes per element (4 fp32, 2 bf16)::

    forward           read x, write s, save state (h)         3e   (12 B fp32, 6 B bf16)
    backward          read grad_s and the state, write grad_x  3e
    forward+backward                                           6e   (24 B fp32, 12 B bf16)

Achieved GB/s is this count over the median time, compared with a copy (2 x bytes) of the same run.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from snn.lif.reference import lif_reference
from snn.lif.spec import DEFAULT_GAMMA as GAMMA, DEFAULT_TAU as TAU, DEFAULT_THRESH as THRESH  # noqa: F401  (GAMMA: contenders)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST_DIR = REPO_ROOT.parent / "shared" / "data"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GIB = 1024**3


@dataclass(frozen=True)
class Shape:
    """A LIF input ``[B, T, N]``; ``note`` says how it differs from the issue's list, if it does."""

    name: str
    B: int
    T: int
    N: int
    note: str = ""

    @property
    def numel(self) -> int:
        return self.B * self.T * self.N

    def dims(self) -> str:
        return f"B={self.B},T={self.T},N={self.N}"


MNIST_SHAPES = (Shape("mnist-b128", 128, 6, 512), Shape("mnist-b1024", 1024, 6, 512), Shape("mnist-b8192", 8192, 6, 512))
LARGE = Shape("large", 256, 16, 65536)
# 268M neuron-steps: eager fwd+bwd needs ~10 GB and minutes on two cores, so CPU runs 1/16 of the batch.
LARGE_CPU = Shape("large-reduced", 16, 16, 65536, note="CPU: B reduced 256 -> 16 (same T, N); --bench-full-large runs B=256")


@dataclass(frozen=True)
class Case:
    """One benchmark input: a shape and a dtype."""

    shape: Shape
    dtype_name: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.dtype_name]

    @property
    def id(self) -> str:
        return f"{self.shape.name}-{self.dtype_name}"

    def min_bytes(self, mode: str) -> int:
        """Minimum bytes moved (module docstring) for ``mode`` in ("fwd", "fwdbwd")."""
        return {"fwd": 3, "fwdbwd": 6}[mode] * self.dtype.itemsize * self.shape.numel


def lif_cases(device: torch.device, full_large: bool) -> list[Case]:
    large = LARGE if (device.type == "cuda" or full_large) else LARGE_CPU
    return [Case(shape, dtype) for shape in (*MNIST_SHAPES, large) for dtype in DTYPES]


def make_inputs(case: Case, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded input ``x ~ N(0.6, 0.6)`` (about a third of steps spike) and upstream gradient ``g ~ N(0, 1)``."""
    s = case.shape
    generator = torch.Generator(device=device).manual_seed((s.B * 1_000_003 + s.T * 10_007 + s.N) % (2**31))
    x = torch.randn((s.B, s.T, s.N), generator=generator, device=device).mul_(0.6).add_(0.6)
    g = torch.randn((s.B, s.T, s.N), generator=generator, device=device)
    return x.to(case.dtype), g.to(case.dtype)


def time_call(benchmark, fn: Callable[[], object], device: torch.device) -> dict | None:
    """Seconds per call of ``fn``: pytest-benchmark's statistics on CPU, ``do_bench``'s on CUDA
    (its rep follows ``--benchmark-max-time``). None when benchmarking is disabled."""
    if benchmark.disabled:
        benchmark(fn)
        return None
    if device.type == "cuda":
        from triton.testing import do_bench

        ms = do_bench(fn, rep=int(1000 * min(benchmark._max_time, 1.0)), return_mode="all")
        q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
        s = {"median": statistics.median(ms), "q1": q[0], "q3": q[2], "min": min(ms), "max": max(ms)}
        return {**{k: v / 1e3 for k, v in s.items()}, "rounds": len(ms), "timer": "triton.testing.do_bench"}
    benchmark(fn)
    s = benchmark.stats.stats
    return {"median": s.median, "q1": s.q1, "q3": s.q3, "min": s.min, "max": s.max, "rounds": s.rounds, "timer": "pytest-benchmark"}


def interleaved(calls: dict[str, Callable[[], object]], reps: int, number: int = 1) -> dict:
    """``torch.utils.benchmark`` Measurements by name, each call timed ``number`` times per turn, in
    turn, ``reps`` turns (A B A B ...: a machine whose speed drifts slows every contender alike), at
    the caller's thread count (``Timer`` runs at one thread unless told: it was, before 2026-12-03)."""
    from torch.utils.benchmark import Measurement, Timer

    threads = torch.get_num_threads()
    timers = {name: Timer("fn()", globals={"fn": fn}, label=name, num_threads=threads) for name, fn in calls.items()}
    turns: dict[str, list] = {name: [] for name in calls}
    for _ in range(reps):
        for name, timer in timers.items():
            turns[name].append(timer.timeit(number))
    return {name: Measurement.merge(m)[0] for name, m in turns.items()}


def saved_storages(forward: Callable[[], object]) -> dict[int, int]:
    """``{storage pointer: bytes}`` of every tensor the autograd graph of ``forward()`` packs for its
    backward (``saved_tensors_hooks``; views of one buffer count once). The graph is then released."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = max(storages.get(st.data_ptr(), 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return storages


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (the difference's norm when b is zero)."""
    diff, denom = (a.double() - b.double()).norm().item(), b.double().norm().item()
    return diff / denom if denom > 0 else diff


def threshold_ties(x: torch.Tensor) -> torch.Tensor:
    """Neurons ``[B, N]`` whose fp32 potential equals the threshold exactly at some step: only there can
    SpikingJelly's ``>=`` and our ``>`` differ (``h`` of :func:`snn.lif.reference.lif_reference`, in fp32)."""
    with torch.no_grad():
        return (lif_reference(x.float(), TAU, THRESH, return_h=True).h == THRESH).any(dim=1)


def load_average() -> str | None:
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else None


class Records(list):
    """The session's non-timing results (checks, saved bytes, skips) and timing records, stored under
    ``"snn"`` in the ``--benchmark-json`` file; with ``sink`` also appended as JSON lines as they come."""

    sink: Path | None = None

    def add(self, kind: str, **fields) -> dict:
        self.append(record := {"kind": kind, **fields})
        if self.sink is not None:
            with self.sink.open("a") as f:
                f.write(json.dumps(record, default=str) + "\n")
        return record

    def of(self, kind: str) -> list[dict]:
        return [r for r in self if r["kind"] == kind]


RESULTS = Records()
