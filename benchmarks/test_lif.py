"""The LIF layer: contenders 1-5 on the same inputs, forward and forward+backward, fp32 and bf16.

Per case (shape x dtype), in this order: each contender's check against contender 1 (spikes
exact, gradient close; see ``benchmarks.harness``), the bytes it saves for the backward, then the
timings. "fwd" is the training forward (the input requires grad, so state is saved); "fwdbwd" is
that forward plus ``torch.autograd.grad`` with a fixed upstream gradient. On CUDA every timed call
ends with ``torch.cuda.synchronize``. The copy bandwidth that the GB/s figures are compared with
is measured first, in the same run.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import GIB, l2_flush, run_benchmark, synchronized

# 1 GiB copied on a GPU (far beyond any cache); 256 MiB on CPU (beyond its last-level cache).
COPY_BYTES = {"cuda": 1 * GIB, "cpu": 256 * 1024**2}
SAVED_LIMIT = {"fp32": 4.0, "bf16": 2.0}  # bytes per neuron-step the fused kernel may keep


def test_copy_bandwidth(benchmark, bench_device, bench_budget, collector):
    """Device-to-device copy ``dst.copy_(src)``: GB/s = 2 * bytes / median time."""
    nbytes = COPY_BYTES[bench_device.type]
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=bench_device).uniform_()
    dst = torch.empty_like(src)
    benchmark.group = "copy"
    stats = run_benchmark(
        benchmark, synchronized(lambda: dst.copy_(src), bench_device), bench_budget, warm_calls=2, setup=l2_flush(bench_device)
    )
    if stats is None:
        return
    gbps = 2 * nbytes / stats["median"] / 1e9
    benchmark.extra_info.update(bytes=nbytes, gb_per_s=gbps)
    collector.add("copy", device=str(bench_device), bytes=nbytes, gb_per_s=gbps, **stats)


def test_lif_matches_reference(lif_store, lif_case, contender):
    """Spikes equal to contender 1 (exactly) and gradients within rounding, on the benchmark input."""
    lif_store.activate(lif_case)
    result = lif_store.check(contender)
    assert result["status"] == "pass", f"{contender.label} on {lif_case.id}: {result.get('reason')}"


def test_lif_saved_bytes(lif_store, lif_case, contender, collector):
    """Bytes kept for the backward per neuron-step (saved_tensors_hooks; storages counted once)."""
    lif_store.activate(lif_case)
    total, new, held = lif_store.saved_per_neuron_step(contender)
    collector.add("saved", case=lif_case.id, shape=lif_case.shape.name, dtype=lif_case.dtype_name,
                  contender=contender.key, label=contender.label, bytes_all=total, bytes_new=new, bytes_held=held)
    if contender.key in ("c4-triton", "c3c-torch-fused"):
        limit = SAVED_LIMIT[lif_case.dtype_name]
        assert total <= limit, f"fused kernel saves {total} B per neuron-step for {lif_case.dtype_name}, limit {limit}"


def _timed(benchmark, lif_store, lif_case, contender, bench_device, bench_budget, collector, mode):
    lif_store.activate(lif_case)
    if not contender.timed_on_cpu and bench_device.type != "cuda":
        reason = ("Triton interpreter on CPU: correctness only (test_lif_matches_reference), "
                  "excluded from timings")
        collector.add("skip", what=contender.label, case=lif_case.id, reason=reason)
        pytest.skip(reason)
    runner = lif_store.require_checked(contender)
    fn = runner.forward if mode == "fwd" else runner.forward_backward
    benchmark.group = f"lif-{mode}-{lif_case.id}"
    stats = run_benchmark(benchmark, synchronized(fn, bench_device), bench_budget, setup=l2_flush(bench_device))
    if stats is None:
        return
    nbytes = lif_case.min_bytes(mode)
    info = dict(case=lif_case.id, shape=lif_case.shape.name, dims=lif_case.shape.dims(), shape_note=lif_case.shape.note,
                dtype=lif_case.dtype_name, mode=mode, contender=contender.key, label=contender.label,
                min_bytes=nbytes, gb_per_s=nbytes / stats["median"] / 1e9, device=str(bench_device))
    info.update({k: v for k, v in runner.info.items() if k in ("compile_seconds", "fullgraph", "backend", "surrogate", "spikingjelly")})
    benchmark.extra_info.update(info)
    collector.add("lif", **info, **stats)


def test_lif_forward(benchmark, lif_store, lif_case, contender, bench_device, bench_budget, collector):
    _timed(benchmark, lif_store, lif_case, contender, bench_device, bench_budget, collector, "fwd")


def test_lif_forward_backward(benchmark, lif_store, lif_case, contender, bench_device, bench_budget, collector):
    _timed(benchmark, lif_store, lif_case, contender, bench_device, bench_budget, collector, "fwdbwd")


def test_spikingjelly_mapping():
    """SpikingJelly's LIFNode, configured as contender 5 is (tau=2.0, decay_input=False, v_reset=0,
    detach_reset=False, PiecewiseQuadratic(alpha=1)), computes our spikes and gradients. Runs on
    its CPU path wherever spikingjelly imports, so the mapping is checked even without a GPU."""
    from benchmarks.common import Case, MNIST_SHAPES, make_inputs, threshold_ties
    from benchmarks.contenders import Unavailable, sj_reference_runner
    from snn.lif.reference import lif_reference

    x, g = make_inputs(Case(MNIST_SHAPES[0], "fp32"), torch.device("cpu"))
    try:
        runner = sj_reference_runner(x, g)
    except Unavailable as exc:
        pytest.skip(str(exc))
    spikes = runner.to_btn(runner.forward().detach())
    grad = runner.to_btn(runner.forward_backward())
    xr = x.detach().requires_grad_(True)
    ref = lif_reference(xr)
    (ref_grad,) = torch.autograd.grad(ref, xr, g)
    keep = ~threshold_ties(x)[:, None, :].expand_as(ref)  # >= vs >: may differ only where h == thresh
    assert torch.equal(spikes[keep], ref.detach()[keep]), "SpikingJelly spikes differ from lif_reference off threshold ties"
    torch.testing.assert_close(grad[keep], ref_grad[keep], rtol=1e-5, atol=1e-6, msg="SpikingJelly gradient differs")
