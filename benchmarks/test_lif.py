"""The LIF layer: every contender on the same inputs, forward and forward+backward, fp32 and bf16.

Per case (shape x dtype): each contender's check against the reference (``benchmarks.harness``),
the bytes it saves for the backward, then the timings ("fwd": the training forward, the input
requires grad; "fwdbwd": plus ``torch.autograd.grad`` with a fixed upstream gradient). The copy
bandwidth the GB/s figures are compared with is measured first, in the same run.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import GIB, time_call
from benchmarks.contenders import OURS_CPU, OURS_GPU

COPY_BYTES = {"cuda": 1 * GIB, "cpu": 256 * 1024**2}  # beyond any cache
SAVED_LIMIT = {"fp32": 4.0, "bf16": 2.0}  # bytes per neuron-step the fused kernels may keep


def test_copy_bandwidth(benchmark, bench_device, records):
    """Device-to-device ``dst.copy_(src)``: GB/s = 2 x bytes / median."""
    nbytes = COPY_BYTES[bench_device.type]
    src = torch.empty(nbytes // 4, device=bench_device).uniform_()
    dst = torch.empty_like(src)
    benchmark.group = "copy"
    stats = time_call(benchmark, lambda: dst.copy_(src), bench_device)
    if stats:
        benchmark.extra_info.update(bytes=nbytes, gb_per_s=2 * nbytes / stats["median"] / 1e9)
        records.add("copy", **benchmark.extra_info, **stats)


def test_lif_matches_reference(lif_store, lif_case, contender):
    lif_store.activate(lif_case)
    result = lif_store.check(contender)
    assert result["status"] == "pass", f"{contender.label} on {lif_case.id}: {result.get('reason')}"


def test_lif_saved_bytes(lif_store, lif_case, contender, records):
    lif_store.activate(lif_case)
    total, new, held = lif_store.saved_per_neuron_step(contender)
    records.add("saved", case=lif_case.id, shape=lif_case.shape.name, dtype=lif_case.dtype_name, contender=contender.key,
                label=contender.label, bytes_all=total, bytes_new=new, bytes_held=held)
    if contender.key in (OURS_GPU, OURS_CPU):
        assert total <= SAVED_LIMIT[lif_case.dtype_name], f"fused kernel saves {total} B per neuron-step"


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_lif_timed(benchmark, lif_store, lif_case, contender, bench_device, records, mode):
    lif_store.activate(lif_case)
    if not contender.timed_on_cpu and bench_device.type != "cuda":
        reason = "Triton interpreter on CPU: correctness only (test_lif_matches_reference), excluded from timings"
        records.add("skip", what=contender.label, case=lif_case.id, reason=reason)
        pytest.skip(reason)
    runner = lif_store.require_checked(contender)
    benchmark.group = f"lif-{mode}-{lif_case.id}"
    stats = time_call(benchmark, runner.forward if mode == "fwd" else runner.forward_backward, bench_device)
    if stats is None:
        return
    s = lif_case.shape
    benchmark.extra_info.update(case=lif_case.id, shape=s.name, dims=s.dims(), shape_note=s.note, dtype=lif_case.dtype_name,
                                mode=mode, contender=contender.key, label=contender.label,
                                gb_per_s=lif_case.min_bytes(mode) / stats["median"] / 1e9,
                                **{k: v for k, v in runner.info.items() if k in ("compile_seconds", "backend", "surrogate")})
    records.add("lif", **benchmark.extra_info, **stats)


def test_spikingjelly_mapping():
    """SpikingJelly's LIFNode as configured here computes our spikes and gradients (its CPU path, off ties)."""
    from benchmarks.common import MNIST_SHAPES, Case, make_inputs, threshold_ties
    from benchmarks.contenders import Unavailable, sj_reference_runner
    from snn.lif.reference import lif_reference

    x, g = make_inputs(Case(MNIST_SHAPES[0], "fp32"), torch.device("cpu"))
    try:
        runner = sj_reference_runner(x, g)
    except Unavailable as exc:
        pytest.skip(str(exc))
    spikes, grad = runner.to_btn(runner.forward().detach()), runner.to_btn(runner.forward_backward())
    xr = x.detach().requires_grad_(True)
    ref = lif_reference(xr)
    (ref_grad,) = torch.autograd.grad(ref, xr, g)
    keep = ~threshold_ties(x)[:, None, :].expand_as(ref)
    assert torch.equal(spikes[keep], ref.detach()[keep]), "SpikingJelly spikes differ from lif_reference off threshold ties"
    torch.testing.assert_close(grad[keep], ref_grad[keep], rtol=1e-5, atol=1e-6)
