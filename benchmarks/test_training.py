"""The MLP training step per backend, the GPU memory it needs, and CPU throughput against the seed.

* ``test_train_step``: one full step (gather a batch from the uint8 images, forward, cross-entropy,
  backward, Adam), the loop body of ``snn.training.train_one_epoch``, at batch 128 and 8192 per
  backend; samples/s from the median; on a GPU also bf16 autocast and the peak memory of a step.
  On CPU the triton backend runs in the Triton interpreter: it is not timed there, and
  ``test_train_backends_agree`` checks it computes the torch backend's step instead.
* ``test_max_batch_in_8gib`` (CUDA): the largest batch whose step peaks at <= 8 GiB allocated,
  found by running steps (doubling, then bisection), never extrapolated.
* ``test_seed_vs_ours_cpu_throughput``: the plain seed pipeline (torchvision ``MNIST`` +
  ``ToTensor`` + ``DataLoader(batch_size=128, shuffle=True)`` + ``SeedMLP`` + Adam + cross-entropy)
  against ours (``snn.training.train_one_epoch`` on the uint8 tensor, ``SpikingMLP`` torch backend,
  the same Adam) over the same number of batches, interleaved, on CPU.
"""

from __future__ import annotations

import gc
from pathlib import Path
import statistics

import pytest
import torch
import torch.nn.functional as F

from benchmarks.common import DEFAULT_MNIST_DIR, GIB, rel_l2, run_benchmark, synchronized
from snn.data import load_mnist, to_float_images
from snn.model import MLPConfig, SpikingMLP
from snn.training import make_adam, training_step

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_BATCHES = (128, 8192)
MEMORY_LIMIT = 8 * GIB
SEED_BATCHES, SEED_BATCH_SIZE, SEED_REPEATS = 300, 128, 3


@pytest.fixture(autouse=True, scope="module")
def _free_lif_case(lif_store):
    """The LIF benchmarks' last case holds GBs on a GPU: free it so peak memory is this step's."""
    lif_store.release()
    yield


def _train_data(pytestconfig, n: int, device: torch.device):
    """The first ``n`` MNIST training images (uint8) and labels when MNIST is present, else
    deterministic random ones (the step's cost does not depend on pixel values)."""
    import os
    from pathlib import Path

    root = Path(pytestconfig.getoption("--mnist-dir") or os.environ.get("SNN_MNIST_DIR") or DEFAULT_MNIST_DIR)
    if (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        data = load_mnist(root, download=False)
        reps = -(-n // len(data.train_labels))
        images = data.train_images.repeat(reps, 1, 1)[:n]
        labels = data.train_labels.repeat(reps)[:n]
        source = "MNIST" if reps == 1 else "MNIST (repeated)"
    else:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        labels = torch.randint(0, 10, (n,), generator=gen)
        source = "synthetic"
    return images.to(device), labels.to(device), source


def _make_step(model, optimizer, images, labels, batch, amp, device):
    """The loop body of ``snn.training.train_one_epoch`` on a fixed batch of indices."""
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))[:batch].to(device)

    def step() -> torch.Tensor:
        return training_step(model, optimizer, images[index], labels[index], amp)[0]

    return step


def _precisions(device: torch.device):
    return ("fp32", "bf16-autocast") if device.type == "cuda" else ("fp32",)


@pytest.mark.parametrize("batch", TRAIN_BATCHES)
@pytest.mark.parametrize("precision", ("fp32", "bf16-autocast"))
@pytest.mark.parametrize("backend", ("torch", "triton"))
def test_train_step(benchmark, pytestconfig, bench_device, bench_budget, collector, backend, precision, batch):
    if precision not in _precisions(bench_device):
        pytest.skip("bf16 autocast is benchmarked on CUDA only")
    if backend == "triton" and bench_device.type != "cuda":
        reason = "triton backend on CPU runs in the Triton interpreter: correctness only (test_train_backends_agree), not timed"
        collector.add("skip", what=f"training step, triton backend, batch {batch}", case=None, reason=reason)
        pytest.skip(reason)
    torch.manual_seed(0)
    images, labels, source = _train_data(pytestconfig, batch, bench_device)
    model = SpikingMLP(MLPConfig(), backend=backend).to(bench_device)
    optimizer = make_adam(model.parameters(), lr=1e-3)
    step = _make_step(model, optimizer, images, labels, batch, precision != "fp32", bench_device)
    call = synchronized(step, bench_device)
    peak_mib = None
    if bench_device.type == "cuda":
        call()  # Adam's state exists from here on
        torch.cuda.synchronize(bench_device)
        torch.cuda.reset_peak_memory_stats(bench_device)
        call()
        # Everything allocated at the step's peak: model, Adam state, data, activations (only
        # this test's tensors are alive: the LIF cases were freed).
        peak_mib = torch.cuda.max_memory_allocated(bench_device) / 2**20
    benchmark.group = f"train-step-{batch}"
    stats = run_benchmark(benchmark, call, bench_budget)
    if stats is None:
        return
    info = dict(backend=backend, precision=precision, batch=batch, samples_per_s=batch / stats["median"],
                data=source, device=str(bench_device), peak_mib=peak_mib)
    benchmark.extra_info.update(info)
    collector.add("train_step", **info, **stats)


def test_train_backends_agree(bench_device, collector):
    """One step's loss and parameter gradients: triton backend == torch backend (same weights, same
    batch). On CPU this is how the interpreted triton backend is covered."""
    from snn.kernels import INTERPRETED

    batch = 32 if bench_device.type != "cuda" else 128
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 28, 28), generator=gen, dtype=torch.uint8).to(bench_device)
    labels = torch.randint(0, 10, (batch,), generator=gen).to(bench_device)
    torch.manual_seed(0)
    reference = SpikingMLP(MLPConfig(), backend="torch").to(bench_device)
    fused = SpikingMLP(MLPConfig(), backend="triton").to(bench_device)
    fused.load_state_dict(reference.state_dict())
    results = []
    for model in (reference, fused):
        loss = F.cross_entropy(model(to_float_images(images)), labels)
        loss.backward()
        results.append((loss.item(), {n: p.grad for n, p in model.named_parameters()}))
    loss_diff = abs(results[0][0] - results[1][0])
    grad_err = max(rel_l2(results[1][1][n], results[0][1][n]) for n in results[0][1])
    ok = loss_diff <= 1e-5 and grad_err <= 1e-4
    collector.add("train_agree", batch=batch, device=str(bench_device), loss_diff=loss_diff, grad_rel_err=grad_err,
                  status="pass" if ok else "FAIL", interpreted=bool(INTERPRETED))
    assert loss_diff <= 1e-5, f"loss differs between backends by {loss_diff}"
    assert grad_err <= 1e-4, f"parameter gradients differ between backends (max rel-L2 {grad_err})"


def _peak_step_bytes(backend: str, amp: bool, batch: int, device: torch.device) -> float:
    """Peak allocated bytes of one training step (after Adam's state exists); inf on OOM."""
    gc.collect()
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated(device)  # tensors of other tests still alive, if any
    gen = torch.Generator(device=device).manual_seed(0)
    try:
        images = torch.randint(0, 256, (batch, 28, 28), generator=gen, device=device, dtype=torch.uint8)
        labels = torch.randint(0, 10, (batch,), generator=gen, device=device)
        model = SpikingMLP(MLPConfig(), backend=backend).to(device)
        optimizer = make_adam(model.parameters(), lr=1e-3)
        step = _make_step(model, optimizer, images, labels, batch, amp, device)
        step()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - baseline)
    except torch.cuda.OutOfMemoryError:
        return float("inf")
    finally:
        images = labels = model = optimizer = step = None
        gc.collect()
        torch.cuda.empty_cache()


@pytest.mark.parametrize("precision", ("fp32", "bf16-autocast"))
@pytest.mark.parametrize("backend", ("torch", "triton"))
def test_max_batch_in_8gib(bench_device, collector, backend, precision):
    if bench_device.type != "cuda":
        pytest.skip("peak GPU memory and the largest batch in 8 GiB are measured on CUDA only")
    amp = precision != "fp32"
    fits, fits_peak, over = 0, 0.0, None
    batch = 1024
    while batch <= (1 << 22):  # doubling
        peak = _peak_step_bytes(backend, amp, batch, bench_device)
        if peak > MEMORY_LIMIT:
            over = batch
            break
        fits, fits_peak = batch, peak
        batch *= 2
    if over is not None and fits:
        while over - fits > max(256, fits // 64):  # bisection to ~1.5 %
            mid = (fits + over) // 2 // 64 * 64
            peak = _peak_step_bytes(backend, amp, mid, bench_device)
            if peak <= MEMORY_LIMIT:
                fits, fits_peak = mid, peak
            else:
                over = mid
    collector.add("max_batch", backend=backend, precision=precision, batch=fits, peak_gib=fits_peak / GIB, first_over=over)
    assert fits > 0, f"{backend}/{precision}: even batch 1024 needs more than 8 GiB"


def test_seed_vs_ours_cpu_throughput(benchmark, mnist_dir, collector):
    """Samples/s of the plain seed pipeline and of ours over the same batches, each pipeline in its
    own process (``benchmarks/seed_vs_ours.py``), interleaved, SEED_REPEATS times, on CPU."""
    import json
    import subprocess
    import sys

    from benchmarks.seed_vs_ours import PIPELINES

    times = {name: [] for name in PIPELINES}

    def one_repeat() -> None:
        for name in PIPELINES:
            command = [sys.executable, "-m", "benchmarks.seed_vs_ours", name, "--data-dir", str(mnist_dir),
                       "--batches", str(SEED_BATCHES), "--batch", str(SEED_BATCH_SIZE)]
            result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT)
            times[name].append(json.loads(result.stdout.strip().splitlines()[-1])["samples_per_s"])

    benchmark.group = "seed-vs-ours-cpu"
    benchmark.pedantic(one_repeat, rounds=SEED_REPEATS, warmup_rounds=0, iterations=1)
    if not times["seed"]:
        return
    med = {k: statistics.median(v) for k, v in times.items()}
    info = dict(batches=SEED_BATCHES, batch=SEED_BATCH_SIZE, repeats=len(times["seed"]), seed_sps=med["seed"],
                ours_sps=med["ours"], ours_aug_sps=med["ours-aug"],
                seed_all=times["seed"], ours_all=times["ours"], ours_aug_all=times["ours-aug"],
                ratio=med["ours"] / med["seed"],
                threads=torch.get_num_threads(), data=f"MNIST from {mnist_dir}")
    benchmark.extra_info.update(info)
    collector.add("seed_vs_ours", **info)
