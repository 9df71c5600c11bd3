"""The MLP training step per backend, the GPU memory it needs, and CPU throughput against the seed.

* ``test_train_step``: one step (gather a batch from the uint8 images, forward, cross-entropy,
  backward, Adam: the loop body of ``snn.training.train_one_epoch``) at batch 128 and 8192 per
  backend; on a GPU also bf16 autocast and the step's peak memory. On CPU the triton backend runs
  in the Triton interpreter: not timed; ``test_train_backends_agree`` checks it instead.
* ``test_max_batch_in_8gib`` (CUDA): the largest batch whose step peaks at <= 8 GiB, found by running
  steps (doubling, then bisection), never extrapolated.
* ``test_seed_vs_ours_cpu_throughput``: the plain seed pipeline against ours, each in its own process
  (``benchmarks/seed_vs_ours.py``), interleaved, on CPU.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from benchmarks.common import GIB, REPO_ROOT, rel_l2, time_call
from snn.data import load_mnist, to_float_images
from snn.model import MLPConfig, SpikingMLP
from snn.training import make_adam, training_step

MEMORY_LIMIT = 8 * GIB
SEED_BATCHES, SEED_BATCH_SIZE, SEED_REPEATS = 300, 128, 3


@pytest.fixture(autouse=True, scope="module")
def _free_lif_case(lif_store):
    """The LIF benchmarks' last case holds GBs on a GPU: free it so peak memory is this step's."""
    lif_store.activate(None)


def _train_data(request, n: int, device: torch.device):
    """The first ``n`` MNIST training images (uint8, repeated if need be) when MNIST is present, else random ones."""
    try:
        data = load_mnist(request.getfixturevalue("mnist_dir"), download=False)
        reps = -(-n // len(data.train_labels))
        images, labels = data.train_images.repeat(reps, 1, 1)[:n], data.train_labels.repeat(reps)[:n]
        source = "MNIST" if reps == 1 else "MNIST (repeated)"
    except pytest.skip.Exception:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        labels, source = torch.randint(0, 10, (n,), generator=gen), "synthetic"
    return images.to(device), labels.to(device), source


def _make_step(model, optimizer, images, labels, batch, amp, device):
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))[:batch].to(device)
    return lambda: training_step(model, optimizer, images[index], labels[index], amp)[0]


@pytest.mark.parametrize("batch", (128, 8192))
@pytest.mark.parametrize("precision", ("fp32", "bf16-autocast"))
@pytest.mark.parametrize("backend", ("torch", "triton"))
def test_train_step(benchmark, request, bench_device, records, backend, precision, batch):
    if precision != "fp32" and bench_device.type != "cuda":
        pytest.skip("bf16 autocast is benchmarked on CUDA only")
    if backend == "triton" and bench_device.type != "cuda":
        reason = "triton backend on CPU runs in the Triton interpreter: correctness only (test_train_backends_agree), not timed"
        records.add("skip", what="training step, triton backend", case=None, reason=reason)
        pytest.skip(reason)
    torch.manual_seed(0)
    images, labels, source = _train_data(request, batch, bench_device)
    model = SpikingMLP(MLPConfig(), backend=backend).to(bench_device)
    step = _make_step(model, make_adam(model.parameters(), lr=1e-3), images, labels, batch, precision != "fp32", bench_device)
    peak_mib = _peak_bytes(step, bench_device) / 2**20 if bench_device.type == "cuda" else None  # model, Adam, data, activations
    benchmark.group = f"train-step-{batch}"
    stats = time_call(benchmark, step, bench_device)
    if stats:
        benchmark.extra_info.update(backend=backend, precision=precision, batch=batch, samples_per_s=batch / stats["median"],
                                    data=source, peak_mib=peak_mib)
        records.add("train_step", **benchmark.extra_info, **stats)


def test_train_backends_agree(bench_device, records):
    """One step's loss and parameter gradients: triton backend == torch backend (how CPU covers the interpreted triton)."""
    batch, gen = (128 if bench_device.type == "cuda" else 32), torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 28, 28), generator=gen, dtype=torch.uint8).to(bench_device)
    labels = torch.randint(0, 10, (batch,), generator=gen).to(bench_device)
    torch.manual_seed(0)
    models = [SpikingMLP(MLPConfig(), backend=b).to(bench_device) for b in ("torch", "triton")]
    models[1].load_state_dict(models[0].state_dict())
    losses = [F.cross_entropy(m(to_float_images(images)), labels) for m in models]
    for loss in losses:
        loss.backward()
    loss_diff = abs(losses[0].item() - losses[1].item())
    grad_err = max(rel_l2(p1.grad, p0.grad) for p0, p1 in zip(models[0].parameters(), models[1].parameters()))
    records.add("train_agree", batch=batch, loss_diff=loss_diff, grad_rel_err=grad_err,
                status="pass" if loss_diff <= 1e-5 and grad_err <= 1e-4 else "FAIL")
    assert loss_diff <= 1e-5 and grad_err <= 1e-4, f"backends differ: loss by {loss_diff}, gradients by rel-L2 {grad_err}"


def _peak_bytes(step, device: torch.device) -> float:
    """Peak allocated bytes of ``step()`` once a first step has made Adam's state."""
    step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device))


def _peak_step_bytes(backend: str, amp: bool, batch: int, device: torch.device) -> float:
    """Peak allocated bytes of one training step (after Adam's state exists); inf on OOM."""
    gc.collect()
    torch.cuda.empty_cache()
    baseline, gen = torch.cuda.memory_allocated(device), torch.Generator(device=device).manual_seed(0)
    try:
        images = torch.randint(0, 256, (batch, 28, 28), generator=gen, device=device, dtype=torch.uint8)
        labels = torch.randint(0, 10, (batch,), generator=gen, device=device)
        model = SpikingMLP(MLPConfig(), backend=backend).to(device)
        step = _make_step(model, make_adam(model.parameters(), lr=1e-3), images, labels, batch, amp, device)
        return _peak_bytes(step, device) - baseline
    except torch.cuda.OutOfMemoryError:
        return float("inf")
    finally:
        images = labels = model = step = None
        gc.collect()
        torch.cuda.empty_cache()


@pytest.mark.parametrize("precision", ("fp32", "bf16-autocast"))
@pytest.mark.parametrize("backend", ("torch", "triton"))
def test_max_batch_in_8gib(bench_device, records, backend, precision):
    if bench_device.type != "cuda":
        pytest.skip("peak GPU memory and the largest batch in 8 GiB are measured on CUDA only")
    peak = lambda b: _peak_step_bytes(backend, precision != "fp32", b, bench_device)  # noqa: E731
    fits, fits_peak, over, batch = 0, 0.0, None, 1024
    while over is None and batch <= (1 << 22):  # doubling, then bisection to ~1.5 %
        if (p := peak(batch)) > MEMORY_LIMIT:
            over = batch
        else:
            fits, fits_peak, batch = batch, p, batch * 2
    while over is not None and fits and over - fits > max(256, fits // 64):
        mid = (fits + over) // 2 // 64 * 64
        if (p := peak(mid)) <= MEMORY_LIMIT:
            fits, fits_peak = mid, p
        else:
            over = mid
    records.add("max_batch", backend=backend, precision=precision, batch=fits, peak_gib=fits_peak / GIB, first_over=over)
    assert fits > 0, f"{backend}/{precision}: even batch 1024 needs more than 8 GiB"


def test_seed_vs_ours_cpu_throughput(benchmark, mnist_dir, records):
    """Samples/s of each pipeline over the same batches, one process per run, interleaved SEED_REPEATS times."""
    from benchmarks.seed_vs_ours import PIPELINES

    times = {name: [] for name in PIPELINES}

    def one_repeat() -> None:
        for name in PIPELINES:
            command = [sys.executable, "-m", "benchmarks.seed_vs_ours", name, "--data-dir", str(mnist_dir),
                       "--batches", str(SEED_BATCHES), "--batch", str(SEED_BATCH_SIZE)]
            result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT)
            times[name].append(json.loads(result.stdout.strip().splitlines()[-1])["samples_per_s"])

    benchmark.group = "seed-vs-ours-cpu"
    benchmark.pedantic(one_repeat, rounds=SEED_REPEATS, iterations=1)
    med = {k.replace("-", "_"): statistics.median(v) for k, v in times.items()}
    benchmark.extra_info.update(batches=SEED_BATCHES, batch=SEED_BATCH_SIZE, repeats=len(times["seed"]),
                                **{f"{k}_sps": v for k, v in med.items()}, ratio=med["ours"] / med["seed"],
                                **{f"{k.replace('-', '_')}_all": v for k, v in times.items()}, data=f"MNIST from {mnist_dir}")
    records.add("seed_vs_ours", **benchmark.extra_info)
