"""Saved-activation accounting and peak RSS of a training step: the measuring half of benchmarks/test_memory.py.

    python -m benchmarks.memory_accounting saved            # the saved-bytes table (one process)
    python -m benchmarks.memory_accounting peak NAME B      # one fresh-process peak-RSS probe (prints JSON)

Saved bytes. Every tensor the autograd graph packs for the backward (``saved_tensors_hooks``,
which also sees what ``torch.utils.checkpoint`` and SpikingJelly's memopt keep: their saved inputs
go through ``save_for_backward`` outside their own hooks) is counted once per distinct storage.
Storages of the model's parameters and buffers are reported separately as weights; storages of
the step's input images are left out (the caller holds them anyway).

Peak RSS. ``ru_maxrss`` of a fresh Python process that builds the model and runs
``$SNN_MEMORY_PEAK_STEPS`` (default 2) training steps with plain SGD (no optimizer state) at
batch ``B``: the peak is the process's high-water mark, imports and model included.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.test_csnn import spikingjelly_csnn  # SpikingJelly's own CSNN, tensorboard stubbed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Saved:
    """What one forward keeps for its backward."""

    activations: int  # bytes, storages counted once, weights and inputs excluded
    weights: int  # bytes of parameter/buffer storages the graph saves
    batch: int

    @property
    def per_sample(self) -> float:
        return self.activations / self.batch


def saved_bytes(model: torch.nn.Module, forward: Callable[[], torch.Tensor], inputs=(), batch: int = 1) -> Saved:
    """Run ``forward()`` under a packing hook and account what its graph saves (see the module docstring)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = max(storages.get(st.data_ptr(), 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    weight_ptrs = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    input_ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    weights = sum(n for p, n in storages.items() if p in weight_ptrs)
    acts = sum(n for p, n in storages.items() if p not in weight_ptrs and p not in input_ptrs)
    return Saved(acts, weights, batch)


# ----------------------------------------------------------------------------------------------
# the contenders: (model, forward(images) -> scores, after-step hook)
# ----------------------------------------------------------------------------------------------


def spikingjelly_memopt(model, batch: int, dtype=torch.float32):
    """SpikingJelly 2.0's ``memopt.optimize_memory`` at its most aggressive preset that runs on a CPU:
    level 1 (levels 2-4 measure CUDA memory and refuse a CPU model), ``checkpoint_budget="memory"``
    (every candidate), ``compress=True`` (binary inputs bit-packed), every layer of the CSNN a
    candidate. Returns (model, seconds the search took)."""
    from spikingjelly.activation_based import functional, layer, memopt, neuron

    targets = (layer.Conv2d, layer.BatchNorm2d, neuron.IFNode, layer.MaxPool2d, layer.Linear)
    example = torch.rand(batch, 1, 28, 28, dtype=dtype)

    def example_forward(m):
        functional.reset_net(m)
        return m(example)

    start = time.perf_counter()
    memopt.optimize_memory(model, targets, example_forward, level=1, checkpoint_budget="memory", compress=True)
    return model, time.perf_counter() - start


def build(name: str, batch: int, channels: int = 128, time_steps: int = 4, dtype=torch.float32):
    """``(model, forward, after_step, search_seconds)`` for a contender name:
    ``mlp-plain``, ``mlp-low``, ``csnn-plain``, ``csnn-low``, ``sj-plain``, ``sj-memopt``."""
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

        model = spikingjelly_csnn(channels, time_steps)
        after = functional.reset_net
        if name == "sj-memopt":
            model = model.to(dtype)
            model, search = spikingjelly_memopt(model, batch, dtype)
    model = model.to(dtype).train()

    def forward(images):
        return model(images)

    return model, forward, after, search


def images_for(name: str, batch: int, dtype=torch.float32) -> torch.Tensor:
    shape = (batch, 784) if name.startswith("mlp") else (batch, 1, 28, 28)
    return torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(dtype)


def train_step(model, forward, after, images) -> None:
    target = torch.arange(images.shape[0]) % 10
    out = forward(images)
    loss = F.mse_loss(out.float(), F.one_hot(target, 10).float())
    loss.backward()
    after(model)


def measure_saved(name: str, batch: int, channels=128, time_steps=4, dtype=torch.float32) -> tuple[Saved, float]:
    model, forward, after, search = build(name, batch, channels, time_steps, dtype)
    images = images_for(name, batch, dtype)
    saved = saved_bytes(model, lambda: forward(images), inputs=(images,), batch=batch)
    after(model)
    return saved, search


def step_times(names, batch: int, channels=128, time_steps=4, dtype=torch.float32, rounds=7) -> dict:
    """Median seconds of one training step (forward, loss, backward, SGD) per contender, the
    contenders interleaved round by round in this process (the ratio is what to read on a loaded
    machine); one untimed warm-up step each."""
    runs = {}
    for name in names:
        model, forward, after, _ = build(name, batch, channels, time_steps, dtype)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        images = images_for(name, batch, dtype)

        def step(model=model, forward=forward, after=after, optimizer=optimizer, images=images):
            optimizer.zero_grad(set_to_none=True)
            train_step(model, forward, after, images)
            optimizer.step()

        step()
        runs[name] = (step, [])
    for _ in range(rounds):
        for name, (step, times) in runs.items():
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return {name: sorted(times)[len(times) // 2] for name, (_, times) in runs.items()}


# ----------------------------------------------------------------------------------------------
# peak RSS in a fresh process
# ----------------------------------------------------------------------------------------------


def _peak_child(name: str, batch: int, channels: int, time_steps: int) -> None:
    model, forward, after, _ = build(name, batch, channels, time_steps)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = images_for(name, batch)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(int(os.environ.get("SNN_MEMORY_PEAK_STEPS", "2"))):
        optimizer.zero_grad(set_to_none=True)
        train_step(model, forward, after, images)
        optimizer.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"name": name, "batch": batch, "peak_mib": peak / 1024, "before_step_mib": base / 1024}))


def peak_rss_mib(name: str, batch: int, channels: int = 128, time_steps: int = 4, limit_mib: float | None = None,
                 timeout: float = 900) -> float | None:
    """Peak RSS (MiB) of a fresh process running training steps of ``name`` at ``batch``; None when it
    ran out of memory under ``limit_mib`` (an address-space cap would also count untouched mappings, so
    the budget is checked on the measured peak instead)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    cmd = [sys.executable, "-m", "benchmarks.memory_accounting", "peak", name, str(batch), str(channels), str(time_steps)]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        if "MemoryError" in run.stderr or "DefaultCPUAllocator" in run.stderr or run.returncode < 0:
            return None
        raise RuntimeError(f"peak probe {name} B={batch} failed:\n{run.stderr[-2000:]}")
    peak = json.loads(run.stdout.strip().splitlines()[-1])["peak_mib"]
    return None if (limit_mib is not None and peak > limit_mib) else peak


def saved_table(rows) -> str:
    out = ["| network | T | dtype | contender | saved activations / sample | weights saved | vs SJ plain | search |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['net']} | {r['T']} | {r['dtype']} | {r['name']} | {_fmt(r['per_sample'])} | "
                   f"{_fmt(r['weights'])} | {r.get('ratio', '')} | {r['search']:.1f} s |")
    return "\n".join(out)


def _fmt(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.2f} KiB"


def main(argv) -> None:
    if argv and argv[0] == "peak":
        _peak_child(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
        return
    rows = []
    batch = 256
    saved, _ = measure_saved("mlp-plain", batch)
    rows.append(dict(net="MLP B=256", T=6, dtype="fp32", name="ours plain", per_sample=saved.per_sample,
                     weights=saved.weights, search=0.0))
    for name in ("mlp-low",):
        try:
            saved, _ = measure_saved(name, batch)
        except TypeError:  # before the memory option exists
            continue
        rows.append(dict(net="MLP B=256", T=6, dtype="fp32", name="ours low", per_sample=saved.per_sample,
                         weights=saved.weights, search=0.0))
    csnn_batch = int(os.environ.get("SNN_MEMORY_CSNN_BATCH", "16"))
    for T in (4, 16):
        for dtype in (torch.float32, torch.bfloat16):
            ref = None
            for name in ("sj-plain", "sj-memopt", "csnn-plain", "csnn-low"):
                try:
                    saved, search = measure_saved(name, csnn_batch, 128, T, dtype)
                except TypeError:
                    continue
                ref = saved.per_sample if name == "sj-plain" else ref
                rows.append(dict(net=f"CSNN C=128 B={csnn_batch}", T=T, dtype=str(dtype).replace("torch.", ""),
                                 name=name, per_sample=saved.per_sample, weights=saved.weights, search=search,
                                 ratio=f"{ref / saved.per_sample:.1f}x"))
                print(saved_table(rows[-1:]).splitlines()[-1], flush=True)
    print(saved_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
