"""The fused CPU kernel (snn/lif_cpu.py, snn/csrc/lif_cpu.c) beyond the contract test.

The contract (tests/test_lif_contract.py) proves the ``torch`` backend, which runs this kernel on
CPU tensors, against the reference for every option, dtype and layout. Here: bit-identity with the
eager implementation it replaces, thread-count independence of the parameter gradients, what the
forward saves, and the fallback (one warning) where no C compiler is found.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from snn import lif_cpu
from snn.lif_torch import lif_torch
from snn.neuron import LIFSpec

pytestmark = pytest.mark.skipif(not lif_cpu.available(), reason=f"fused CPU kernel not built: {lif_cpu.BUILD_INFO.get('error')}")


def _run(fn, x, g, dtype, time_dim=1, tau=0.5, thresh=1.0, spec=LIFSpec()):
    x = x.to(dtype).requires_grad_()
    s = fn(x, tau, thresh, spec=spec, time_dim=time_dim)
    leaves = [x] + [t for t in (tau, thresh) if isinstance(t, torch.Tensor)]
    return s.detach(), torch.autograd.grad((s * g.to(dtype)).sum(), leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("layout", ["contiguous", "time_major", "stride0", "odd"])
def test_equals_the_eager_backend_bit_for_bit(dtype, layout):
    """Seed neuron: spikes and grad_x identical to snn.lif_torch (itself bit-identical to the reference in fp32)."""
    gen = torch.Generator().manual_seed(1)
    shape = {"contiguous": (5, 7, 600), "time_major": (7, 5, 600), "stride0": (5, 600), "odd": (3, 1, 5, 13)}[layout]
    x = 0.6 + 0.6 * torch.randn(shape, generator=gen)
    time_dim = 0 if layout == "time_major" else 1
    if layout == "stride0":
        x = x.unsqueeze(1).expand(5, 7, 600)
    g = torch.randn(x.shape, generator=gen)
    s_fused, (g_fused,) = _run(lif_cpu.lif_torch_fused, x, g, dtype, time_dim)
    s_eager, (g_eager,) = _run(lif_torch, x, g, dtype, time_dim)
    assert torch.equal(s_fused, s_eager), f"{layout} {dtype}: spikes differ at {(s_fused != s_eager).sum().item()} positions"
    assert torch.equal(g_fused, g_eager), f"{layout} {dtype}: grad_x differs (max {(g_fused - g_eager).abs().max().item()})"


def test_parameter_gradients_do_not_depend_on_the_thread_count():
    gen = torch.Generator().manual_seed(2)
    x = 0.6 + 0.6 * torch.randn(64, 6, 1000, generator=gen)
    g = torch.randn(x.shape, generator=gen)
    grads = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            tau = torch.full((1000,), 0.5, requires_grad=True)
            thresh = torch.full((1000,), 1.0, requires_grad=True)
            grads.append(_run(lif_cpu.lif_torch_fused, x, g, torch.float32, tau=tau, thresh=thresh, spec=LIFSpec(reset="soft"))[1])
    finally:
        torch.set_num_threads(threads)
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            assert torch.equal(a, b), "gradients changed with the thread count"


def test_forward_saves_only_the_input():
    """The backward recomputes h from x: no tensor of the forward's own is kept (0 new bytes per neuron-step)."""
    x = torch.randn(4, 6, 100).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lif_cpu.lif_torch_fused(x)
    assert len(saved) == 1 and saved[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


def test_falls_back_to_eager_with_one_warning_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("SNN_CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SNN_CACHE_DIR", str(tmp_path / "cache"))
    lif_cpu._reset_for_tests()
    try:
        x = (0.6 + 0.6 * torch.randn(3, 4, 10)).requires_grad_()
        with pytest.warns(RuntimeWarning, match="fused CPU LIF kernel is unavailable"):
            s = lif_cpu.lif_torch_fused(x)
        assert not lif_cpu.available() and "no-such-cc" in lif_cpu.BUILD_INFO["error"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # one warning, not one per call
            s2 = lif_cpu.lif_torch_fused(x)
        assert torch.equal(s, lif_torch(x)) and torch.equal(s2, s)
    finally:
        monkeypatch.undo()
        lif_cpu._reset_for_tests()
    assert lif_cpu.available()


def test_large_outputs_are_advised_huge_pages_and_stay_exact(monkeypatch):
    """Forward outputs of 32 MiB or more (spikes, h) get MADV_HUGEPAGE before the kernel writes them;
    smaller ones are left alone (they usually reuse mapped heap memory), and so is grad_x (see
    lif_cpu._advise_huge_pages for the measurement). Results are unchanged."""
    advised = []

    def record(addr, length, advice):
        advised.append((addr, length, advice))
        return 0

    monkeypatch.setattr(lif_cpu, "_madvise", lambda: record)
    small = 0.6 + 0.6 * torch.randn(4, 3, 100, generator=torch.Generator().manual_seed(2))
    _run(lif_cpu.lif_torch_fused, small, torch.ones_like(small), torch.float32)
    assert advised == [], "a small output was advised"

    gen = torch.Generator().manual_seed(3)
    n = (lif_cpu.HUGE_PAGE_MIN_BYTES // 4) // 6 + 4099  # 6 steps of fp32: just over the limit, not a multiple of anything
    x = 0.6 + 0.6 * torch.randn(1, 6, n, generator=gen)
    g = torch.randn(x.shape, generator=gen)
    s_fused, (g_fused,) = _run(lif_cpu.lif_torch_fused, x, g, torch.float32)
    assert [a for _, _, a in advised] == [lif_cpu._MADV_HUGEPAGE], "the spikes (only) must be advised, once"
    lif_cpu.lif_torch_fused(x.detach(), return_h=True)
    assert len(advised) == 3, "spikes and h of a return_h call must each be advised"
    for addr, length, _ in advised:
        assert addr % lif_cpu.HUGE_PAGE == 0 and length % lif_cpu.HUGE_PAGE == 0 and length > 0
    s_eager, (g_eager,) = _run(lif_torch, x, g, torch.float32)
    assert torch.equal(s_fused, s_eager) and torch.equal(g_fused, g_eager)


def test_huge_page_advice_is_a_hint_that_may_be_refused(monkeypatch):
    """Where madvise fails (or THP is off) the outputs are computed exactly as without it."""
    monkeypatch.setattr(lif_cpu, "_madvise", lambda: (lambda *args: -1))
    t = torch.empty(lif_cpu.HUGE_PAGE_MIN_BYTES // 4 + 1)
    assert lif_cpu._advise_huge_pages(t) is t


@pytest.mark.parametrize("case", ["seed", "soft-sigmoid", "v_reset-atan-detach", "learnable-rectangle", "v0-return_v"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_tile_edges_with_poisoned_outputs(monkeypatch, case, dtype):
    """N = 2 tiles + 37 (the C kernel's tile, from the library itself): every tile edge and the vector
    tail are crossed, and every output starts as NaN so an element the kernel fails to write shows."""
    tile = lif_cpu.BUILD_INFO["tile"]
    real_fresh = lif_cpu._fresh_output
    monkeypatch.setattr(lif_cpu, "_fresh_output", lambda *args, **kw: real_fresh(*args, **kw).fill_(float("nan")))
    gen = torch.Generator().manual_seed(4)
    B, T, N = 3, 4, 2 * tile + 37
    x = (0.9 * (0.15 + torch.rand(B, T, N, generator=gen))).to(dtype).requires_grad_()
    g = torch.randn(B, T, N, generator=gen).to(dtype)
    options = {
        "seed": dict(spec=LIFSpec()),
        "soft-sigmoid": dict(spec=LIFSpec(reset="soft", surrogate="sigmoid", alpha=4.0)),
        "v_reset-atan-detach": dict(spec=LIFSpec(v_reset=-0.2, surrogate="atan", detach_reset=True)),
        "learnable-rectangle": dict(spec=LIFSpec(surrogate="rectangle"),
                                    tau=(0.5 + 0.3 * torch.rand(N, generator=gen)).requires_grad_(),
                                    thresh=(0.8 + 0.4 * torch.rand(N, generator=gen)).requires_grad_()),
        "v0-return_v": dict(spec=LIFSpec(), v0=torch.rand(B, N, generator=gen).to(dtype).requires_grad_(), return_v=True),
    }[case]
    results = []
    for fn in (lif_cpu.lif_torch_fused, lif_torch):
        out = fn(x, **options)
        spikes, v = (out.spikes, out.v) if case == "v0-return_v" else (out, None)
        loss = (spikes * g).sum() + (0 if v is None else v.float().sum())
        leaves = [x] + [options[k] for k in ("tau", "thresh", "v0") if k in options]
        results.append((spikes.detach(), None if v is None else v.detach(), torch.autograd.grad(loss, leaves)))
    (s_f, v_f, g_f), (s_e, v_e, g_e) = results
    assert not s_f.isnan().any() and torch.equal(s_f, s_e), "spikes differ from the eager backend"
    if v_f is not None:
        assert torch.equal(v_f, v_e), "final potential differs"
    assert not g_f[0].isnan().any(), "grad_x has unwritten (NaN-poisoned) elements"
    tol = 1e-6 if case != "soft-sigmoid" else 1e-5  # expf's last bit; tau/thresh sums in another order
    for a, b in zip(g_f, g_e):
        torch.testing.assert_close(a.float(), b.float(), rtol=tol if dtype == torch.float32 else 2e-2,
                                   atol=tol if dtype == torch.float32 else 2e-2)


def test_huge_pages_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("SNN_HUGE_PAGES", "0")
    lif_cpu._madvise.cache_clear()
    try:
        assert lif_cpu._madvise() is None
    finally:
        monkeypatch.delenv("SNN_HUGE_PAGES")
        lif_cpu._madvise.cache_clear()
