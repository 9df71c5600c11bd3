"""What every benchmark shares: the shapes, the inputs, the byte counts, timing, and the collector.

Nothing here runs at import time beyond defining names (no CUDA query, no global settings).

Byte counts. The LIF layer is memory bound, so its speed is argued from the bytes it must move.
Per neuron-step, for an input of ``e`` bytes per element (4 fp32, 2 bf16), the minimum is::

    forward           read x, write s, save state (h)         3e   (12 B fp32, 6 B bf16)
    backward          read grad_s and the state, write grad_x  3e   (12 B fp32, 6 B bf16)
    forward+backward                                           6e   (24 B fp32, 12 B bf16)

These are the counts in ``kernels/lif/triton_launch.py``; achieved GB/s is this count divided by the median
time, and is compared with a device-to-device copy (2 x bytes per copy) measured in the same run.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from snn.lif.reference import DEFAULT_GAMMA, DEFAULT_TAU, DEFAULT_THRESH

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST_DIR = REPO_ROOT.parent / "shared" / "data"

TAU, THRESH, GAMMA = DEFAULT_TAU, DEFAULT_THRESH, DEFAULT_GAMMA
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GIB = 1024**3


# ----------------------------------------------------------------------------------------------
# shapes and cases
# ----------------------------------------------------------------------------------------------


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


MNIST_SHAPES = (
    Shape("mnist-b128", 128, 6, 512),
    Shape("mnist-b1024", 1024, 6, 512),
    Shape("mnist-b8192", 8192, 6, 512),
)
LARGE = Shape("large", 256, 16, 65536)
# The full large shape is 268M neuron-steps: eager fwd+bwd needs ~10 GB and seconds per call on two
# CPU cores. On CPU the suite runs the same T and N with 1/16 of the batch unless --bench-full-large.
LARGE_CPU = Shape("large-reduced", 16, 16, 65536, note="CPU: B reduced 256 -> 16 (same T, N); --bench-full-large runs B=256")


def lif_shapes(device: torch.device, full_large: bool) -> tuple[Shape, ...]:
    large = LARGE if (device.type == "cuda" or full_large) else LARGE_CPU
    return (*MNIST_SHAPES, large)


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

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def min_bytes(self, mode: str) -> int:
        """Minimum bytes moved (see module docstring) for ``mode`` in ("fwd", "fwdbwd")."""
        per_step = {"fwd": 3, "fwdbwd": 6}[mode] * self.element_size
        return per_step * self.shape.numel


def lif_cases(device: torch.device, full_large: bool) -> list[Case]:
    return [Case(shape, dtype) for shape in lif_shapes(device, full_large) for dtype in DTYPES]


def make_inputs(case: Case, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic input current ``x ~ N(0.6, 0.6)`` (about a third of steps spike) and upstream
    gradient ``g ~ N(0, 1)``, both ``[B, T, N]`` in the case's dtype, generated on ``device``."""
    s = case.shape
    seed = (s.B * 1_000_003 + s.T * 10_007 + s.N) % (2**31)
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn((s.B, s.T, s.N), generator=generator, device=device).mul_(0.6).add_(0.6)
    g = torch.randn((s.B, s.T, s.N), generator=generator, device=device)
    return x.to(case.dtype), g.to(case.dtype)


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimingBudget:
    """How long one benchmark may take: rounds = clamp(seconds / time_per_call, min, max)."""

    seconds: float
    min_rounds: int
    max_rounds: int


CPU_BUDGET = TimingBudget(seconds=2.0, min_rounds=5, max_rounds=100)
GPU_BUDGET = TimingBudget(seconds=0.5, min_rounds=20, max_rounds=2000)
QUICK_CPU_BUDGET = TimingBudget(seconds=0.5, min_rounds=3, max_rounds=20)
QUICK_GPU_BUDGET = TimingBudget(seconds=0.15, min_rounds=10, max_rounds=500)


def budget_for(device: torch.device, quick: bool) -> TimingBudget:
    if device.type == "cuda":
        return QUICK_GPU_BUDGET if quick else GPU_BUDGET
    return QUICK_CPU_BUDGET if quick else CPU_BUDGET


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """``fn`` followed by a device synchronisation, so a timed call ends when the GPU work does.
    The result is dropped inside, so autograd graphs and outputs are freed between rounds."""
    if device.type == "cuda":

        def call() -> None:
            fn()
            torch.cuda.synchronize(device)

    else:

        def call() -> None:
            fn()

    return call


def plan_rounds(call: Callable[[], None], budget: TimingBudget, warm_calls: int = 1) -> int:
    """Run ``call`` ``warm_calls`` times (warm-up: caches, allocator, lazy compilation), time one
    more call, and return the number of rounds that fits the budget."""
    for _ in range(warm_calls):
        call()
    start = time.perf_counter()
    call()
    seconds = max(time.perf_counter() - start, 1e-7)
    return int(min(budget.max_rounds, max(budget.min_rounds, math.ceil(budget.seconds / seconds))))


# Bytes written between timed GPU calls to evict the previous call's data from L2 (as
# triton.testing.do_bench does with 256 MB): the H200 has 50 MB of L2 and the MNIST shapes
# (B=1024: 12.6 MB per fwd+bwd in fp32) fit in it, so without a flush the GB/s can exceed DRAM speed.
L2_FLUSH_BYTES = 256 * 2**20


def l2_flush(device: torch.device) -> Callable[[], None] | None:
    """A setup function that overwrites ``L2_FLUSH_BYTES`` and waits for it (CUDA only, else None).

    Passed to pytest-benchmark's ``pedantic(setup=...)``, which runs it before every round
    outside the timed region: each timed call starts with a cold L2, as on a real training step
    whose previous kernels touched other tensors."""
    if device.type != "cuda":
        return None
    buf = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)

    def setup() -> None:
        buf.zero_()
        torch.cuda.synchronize(device)

    return setup


def run_benchmark(
    benchmark, call: Callable[[], None], budget: TimingBudget, warm_calls: int = 1, setup: Callable[[], None] | None = None
) -> dict | None:
    """Time ``call`` with pytest-benchmark and return its statistics in seconds (None when
    benchmarking is disabled, e.g. ``--benchmark-disable``). ``setup`` (e.g. :func:`l2_flush`)
    runs before every round, untimed."""
    rounds = plan_rounds(call, budget, warm_calls)
    benchmark.pedantic(call, setup=setup, rounds=rounds, warmup_rounds=0, iterations=1)
    return stats_of(benchmark)


def stats_of(benchmark) -> dict | None:
    if benchmark.disabled or benchmark.stats is None:
        return None
    s = benchmark.stats.stats
    return {"median": s.median, "q1": s.q1, "q3": s.q3, "min": s.min, "max": s.max, "rounds": s.rounds}


# ----------------------------------------------------------------------------------------------
# memory saved for backward
# ----------------------------------------------------------------------------------------------


def saved_bytes(forward: Callable[[], torch.Tensor], inputs: tuple[torch.Tensor, ...] = ()) -> tuple[int, int]:
    """Bytes the autograd graph of ``forward()`` keeps for the backward, as ``(all, new)``.

    Every tensor packed by ``saved_tensors_hooks`` is counted once per distinct storage (views of
    one buffer count once). ``new`` leaves out storages shared with ``inputs`` (the caller holds
    those anyway); ``all`` includes them. The graph is alive while counting, then released.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    input_ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    total = sum(storages.values())
    new = sum(n for ptr, n in storages.items() if ptr not in input_ptrs)
    return total, new


# ----------------------------------------------------------------------------------------------
# correctness helpers
# ----------------------------------------------------------------------------------------------


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are zero)."""
    a64, b64 = a.double(), b.double()
    denom = b64.norm().item()
    diff = (a64 - b64).norm().item()
    return diff / denom if denom > 0 else diff


def threshold_ties(x: torch.Tensor) -> torch.Tensor:
    """Neurons ``[B, N]`` whose fp32 pre-reset potential equals the threshold exactly at some step.

    Only there can a ``>=`` threshold (SpikingJelly) and our strict ``>`` disagree. The recurrence
    is the one in ``snn.lif.reference`` (``h = v * tau + x``; ``v = h * (1 - s)``), evaluated in fp32.
    """
    x = x.float()
    v = torch.zeros_like(x[:, 0])
    tie = torch.zeros_like(v, dtype=torch.bool)
    for x_t in x.unbind(1):
        h = v * TAU + x_t
        tie |= h == THRESH
        v = h * (h - THRESH <= 0).float()
    return tie


# ----------------------------------------------------------------------------------------------
# machine and versions
# ----------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "snn", "kernels", "benchmarks", "train.py",
             ":(exclude)benchmarks/RESULTS.md", ":(exclude)benchmarks/gpu_check.md"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> str | None:
    """The 1/5/15-minute load averages (other processes on the machine make timings noisy)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def machine_info(device: torch.device) -> dict:
    """The machine and versions that produced a figure (recorded beside every result)."""
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "torchvision": _version("torchvision"),
        "pytest_benchmark": _version("pytest-benchmark"),
        "spikingjelly": _version("spikingjelly"),
        "cupy": _version("cupy-cuda12x") or _version("cupy-cuda13x") or _version("cupy"),
        "git": _git_commit(),
        "device": str(device),
        "triton_interpreter": os.environ.get("TRITON_INTERPRET") == "1",
        "load_average_end": load_average(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / GIB, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
        )
    return info


# ----------------------------------------------------------------------------------------------
# the collector
# ----------------------------------------------------------------------------------------------


@dataclass
class Collector:
    """Results of one session, rendered by ``benchmarks.report`` at the end and stored in the
    pytest-benchmark JSON under ``"snn"``. Each record is a flat dict with a ``kind``."""

    records: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    sink: Path | None = None  # JSON lines written as results arrive (survive a killed run)

    def open_sink(self, path: str | Path, meta: dict) -> None:
        self.sink = Path(path)
        self.sink.parent.mkdir(parents=True, exist_ok=True)
        self.sink.write_text(json.dumps({"kind": "meta", **meta}, default=str) + "\n")

    def add(self, kind: str, **fields) -> dict:
        record = {"kind": kind, **fields}
        self.records.append(record)
        if self.sink is not None:
            with self.sink.open("a") as f:
                f.write(json.dumps(record, default=str) + "\n")
        return record

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]

    def clear(self) -> None:
        self.records.clear()
        self.meta.clear()
        self.sink = None


RESULTS = Collector()


def interleaved_times(calls: dict[str, Callable[[], object]], reps: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Time each of ``calls`` once per round, in turn, for ``reps`` rounds (so a drifting machine
    slows every contender alike); returns ``(median seconds, all times)`` by name."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}, times
