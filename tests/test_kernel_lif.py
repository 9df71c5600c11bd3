"""The fused Triton LIF kernels (kernels/lif/triton_kernels.py, launched by kernels/lif/triton_launch.py) proven against the seed-literal reference (snn/lif/reference.py).

Runs on the CPU through the Triton interpreter and, where present, on CUDA (the ``device`` fixture).
Every test runs with output buffers poisoned with NaN before launch (the ``poisoned_outputs``
fixture), so an element a kernel fails to write shows up as a NaN spike or gradient. Shapes are small
but cross tile boundaries: the ``small_tiles`` fixture shrinks the tiles to 128 neurons (the
module's ``small_tiles(128)`` marker). Layouts, poisoning, tiles, the 16-bit three-way check and the
saved-bytes counter are tests/lif_helpers.py's.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import textwrap
import zlib
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import snn.kernels.lif.triton_launch as L  # first: it picks the interpreter before the @triton.jit below is decorated
import triton
import triton.language as tl
from snn.kernels import lif_triton
from snn.kernels.lif.triton_kernels import _round_to_side
from lif_helpers import FP32_RTOL, assert_grad_close, make_layout, poisoned_out, saved_bytes_per_element
from snn.lif.reference import lif_reference

REPO_ROOT = Path(__file__).resolve().parents[1]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]
LAYOUTS = ["contiguous", "transposed", "sliced", "permuted", "stride0"]  # lif_helpers.make_layout's kinds

# every test poisoned; tests that ask for small_tiles get tiles of 128 neurons, so that
# N = 300 and B = 5 cross both tile edges
pytestmark = [pytest.mark.usefixtures("poisoned_outputs"), pytest.mark.small_tiles(128)]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def near_threshold(shape, thresh, gen, device):
    """Inputs that keep the potential hovering around the threshold (surrogate window active)."""
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    return (thresh * (0.15 + 1.0 * u)).to(torch.float32).to(device)


def run_fn(fn, leaf_values, build, dtype, grad_spikes, params):
    """Spikes and the gradient of the leaf for ``fn(build(leaf))`` with leaf in ``dtype``."""
    leaf = leaf_values.detach().to(dtype).requires_grad_()
    spikes = fn(build(leaf), *params)
    spikes.backward(grad_spikes.to(dtype))
    return spikes.detach(), leaf.grad


def assert_matches_reference(leaf_values, build, dtype, grad_spikes, params, label):
    """The kernel against the reference: fp32 exactly (spikes) / to 1e-5 (grads); 16-bit three-way.

    16-bit inputs: the kernel accumulates in fp32, so its spikes must equal the fp32 reference run on
    the (rounded) input, and its gradient is held to lif_helpers.assert_grad_close's three-way rule.
    """
    leaf_in = leaf_values.detach().to(dtype)  # the values the kernel actually sees
    s_tri, g_tri = run_fn(lif_triton, leaf_in, build, dtype, grad_spikes, params)
    s_ref, g_ref = run_fn(lif_reference, leaf_in.float(), build, torch.float32, grad_spikes.to(dtype).float(), params)
    assert s_tri.dtype == dtype and s_tri.shape == s_ref.shape, f"{label}: spikes {s_tri.dtype} {tuple(s_tri.shape)}"
    assert torch.equal(s_tri.float(), s_ref), (
        f"{label}: spikes differ from the fp32 reference at {(s_tri.float() != s_ref).sum().item()} positions"
    )
    assert g_tri.dtype == dtype and g_tri.shape == leaf_in.shape, f"{label}: grad {g_tri.dtype} {tuple(g_tri.shape)}"
    g_lp = None if dtype == torch.float32 else run_fn(lif_reference, leaf_in, build, dtype, grad_spikes, params)[1]
    assert_grad_close(g_tri, g_ref, g_lp, dtype, f"{label}: grad")


# ----------------------------------------------------------------------------------------------
# the proof: many random cases against the reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 2, 6, 17])
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_reference_random_cases(device, small_tiles, dtype, kind, T):
    seed = zlib.crc32(f"{dtype} {kind} {T}".encode())  # fresh per case, reproducible
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    B = rng.choice([1, 3, 5])
    trail = rng.choice([(300,), (129,), (1,), (3, 5, 7), (4, 33)])
    if kind == "permuted" and len(trail) < 2:
        trail = (3, 5, 7)
    tau = rng.choice([1.0, rng.uniform(0.05, 1.0)])
    thresh = rng.uniform(0.25, 2.0)
    gamma = rng.uniform(0.2, 1.5) * thresh
    leaf_shape, build, _ = make_layout(kind, B, T, trail)
    leaf = near_threshold(leaf_shape, thresh, gen, device)
    grad_spikes = torch.randn((B, T, *trail), generator=gen).to(device)
    label = f"{kind} B={B} T={T} trail={trail} tau={tau:.3f} thresh={thresh:.3f} gamma={gamma:.3f} {dtype}"
    assert_matches_reference(leaf, build, dtype, grad_spikes, (tau, thresh, gamma), label)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_default_blocks_cross_the_largest_tile(device, dtype):
    """The production tile sizes (BLOCK_N = 1024): N = 1100 spills into a second, partial tile."""
    gen = torch.Generator().manual_seed(7)
    leaf_shape, build, _ = make_layout("contiguous", 2, 3, (1100,))
    leaf = near_threshold(leaf_shape, 1.0, gen, device)
    grad_spikes = torch.randn(leaf_shape, generator=gen).to(device)
    assert L._block_config(2, 1100)[1] == 1024
    assert_matches_reference(leaf, build, dtype, grad_spikes, (0.6, 1.0, 0.7), f"default blocks {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_long_sequence(device, small_tiles, dtype):
    gen = torch.Generator().manual_seed(256)
    leaf_shape, build, _ = make_layout("contiguous", 2, 256, (40,))
    leaf = near_threshold(leaf_shape, 1.0, gen, device)
    grad_spikes = torch.randn(leaf_shape, generator=gen).to(device)
    assert_matches_reference(leaf, build, dtype, grad_spikes, (0.9, 1.0, 0.8), f"T=256 {dtype}")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nan_and_inf_behave_as_the_reference(device, small_tiles, dtype):
    """+inf spikes and leaves NaN behind (h * (1 - s) = inf * 0); -inf and NaN never spike."""
    gen = torch.Generator().manual_seed(11)
    B, T, N = 3, 6, 150
    x = near_threshold((B, T, N), 1.0, gen, "cpu")
    pick = torch.rand((B, T, N), generator=gen)
    x[pick < 0.03] = math.inf
    x[(pick >= 0.03) & (pick < 0.06)] = -math.inf
    x[(pick >= 0.06) & (pick < 0.09)] = math.nan
    grad_spikes = torch.randn((B, T, N), generator=gen)
    assert_matches_reference(x.to(device), lambda t: t, dtype, grad_spikes.to(device), (0.7, 1.0, 0.9), f"nan/inf {dtype}")


def test_spike_exactly_at_threshold_does_not_fire(device):
    x = torch.tensor([1.0, 0.5, 1.5, 0.9], device=device).reshape(1, 4, 1)
    assert lif_triton(x, 0.5, 1.0, 1.0).flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


# ----------------------------------------------------------------------------------------------
# floating-point contraction
# ----------------------------------------------------------------------------------------------


def _fused_fp32(a: float, b: float, c: float) -> float:
    """fl32(a * b + c) with a single rounding (what an FMA computes), exactly, via fractions."""
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    lo = torch.tensor(float(exact), dtype=torch.float64).to(torch.float32)  # a neighbour of the answer
    candidates = [torch.nextafter(lo, torch.tensor(-math.inf)), lo, torch.nextafter(lo, torch.tensor(math.inf))]
    # round to nearest, ties to even, among the three fp32 neighbours around the exact value
    best = min(candidates, key=lambda v: (abs(Fraction(v.item()) - exact), v.view(torch.int32).item() & 1))
    return best.item()


def test_no_fma_contraction_at_the_threshold(device):
    """Inputs where ``v*tau + x`` rounded twice lands exactly on thresh but an FMA rounds above it.

    Step 0: v = x0 in (0.75, 1), no spike. Step 1: p = fl(v * tau) in (0.5, 0.75] and
    x1 = 1 + 2**-24 - p (exact in fp32), so p + x1 = 1 + 2**-24 exactly: a tie that rounds to even,
    1.0 = thresh, no spike. Where the exact product is above p, the fused v*tau + x1 is past the
    tie and rounds to 1 + 2**-23: a spike. The reference (eager, unfused) does not spike there; a
    kernel compiled with FMA contraction would.
    """
    tau = torch.tensor(0.7, dtype=torch.float32).item()
    gen = torch.Generator().manual_seed(3)
    x0s, x1s = [], []
    for v in (0.75 + 0.25 * torch.rand(4000, generator=gen)).tolist():
        v = torch.tensor(v, dtype=torch.float32).item()
        p = (torch.tensor(v) * torch.tensor(tau)).item()  # fp32 product, rounded
        if not (0.5 < p <= 0.75) or Fraction(v) * Fraction(tau) <= Fraction(p):
            continue
        x1 = 1.0 + 2.0**-24 - p
        assert torch.tensor(x1, dtype=torch.float32).item() == x1  # exactly representable
        assert _fused_fp32(v, tau, x1) > 1.0  # an FMA would spike
        x0s.append(v)
        x1s.append(x1)
    assert len(x0s) > 100, "the construction found too few tie cases"
    x = torch.tensor([x0s, x1s], dtype=torch.float32).reshape(1, 2, -1).to(device)  # [B=1, T=2, N]
    ref = lif_reference(x, tau, 1.0, 1.0)
    assert ref[:, 1].sum().item() == 0, "the eager reference rounds the tie to thresh: no spike"
    assert torch.equal(lif_triton(x, tau, 1.0, 1.0), ref), "the kernel must round like eager PyTorch (no FMA)"


# The compiled sm_90 code (no FMA, no spills, 128-bit accesses, instruction budgets) is checked in
# tests/test_static_sm90.py, compiled through the launch binder exactly as a launch compiles it.


# ----------------------------------------------------------------------------------------------
# saved state
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_saved_bytes(device, dtype):
    x = torch.randn(3, 5, 7, device=device).to(dtype).requires_grad_()
    params = (0.5, 1.0, 1.0)
    ref_bytes, _ = saved_bytes_per_element(lif_reference, x, *params)
    tri_bytes, tri_count = saved_bytes_per_element(lif_triton, x, *params)
    # the hook count itself is proven on the reference: 4 tensors of x.dtype per neuron-step
    assert ref_bytes == 4 * x.element_size(), f"reference saves {ref_bytes} B/neuron-step"
    limit = 4 if dtype == torch.float32 else 2
    assert tri_bytes <= limit, f"kernel saves {tri_bytes} B/neuron-step for {dtype}, limit {limit}"
    assert tri_count == 1, f"kernel saves {tri_count} tensors, expected only h"
    # no grad needed: nothing saved and h is not even written
    tri_bytes, tri_count = saved_bytes_per_element(lif_triton, x.detach(), *params)
    assert (tri_bytes, tri_count) == (0, 0)


def test_no_grad_forward_skips_h(device, monkeypatch):
    x = torch.rand(2, 4, 33, device=device) * 2
    spikes, h = L.lif_forward(x, 0.5, 1.0, 1.0, save_h=False)
    assert h is None
    assert torch.equal(spikes, lif_reference(x, 0.5, 1.0, 1.0))
    # through lif_triton: h is written only when a backward can follow
    calls = []
    forward = L.lif_forward
    monkeypatch.setattr(L, "lif_forward", lambda *a, **k: calls.append(k["save_h"]) or forward(*a, **k))
    xg = x.clone().requires_grad_()
    with torch.no_grad():
        lif_triton(xg)
    with torch.inference_mode():
        lif_triton(xg)
    lif_triton(x)
    lif_triton(xg)
    assert calls == [False, False, False, True]


@triton.jit
def _round_to_side_kernel(
    h_ptr,  # *fp32 potentials
    q_ptr,  # *{fp16, bf16} rounded potentials
    thresh,  # fp32 threshold
    lo_fire,  # fp32 clamp bounds from kernels.lif.triton_bounds._side_bounds
    hi_fire,
    lo_rest,
    hi_rest,
    n,  # number of elements
    BLOCK: tl.constexpr,  # elements per program
    HW_CVT: tl.constexpr,  # hardware conversion (compiled GPU code only)
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    h = tl.load(h_ptr + offs, mask=mask, other=0.0)
    spike = ((h - thresh) > 0).to(tl.float32)
    tl.store(q_ptr + offs, _round_to_side(h, spike, (lo_fire, hi_fire, lo_rest, hi_rest), q_ptr.dtype.element_ty, HW_CVT), mask=mask)


def _round_to_side_expected(h: torch.Tensor, thresh: float, dtype: torch.dtype) -> torch.Tensor:
    """Round to nearest; finite overflow saturates; one ulp toward the right side of thresh."""
    q = h.to(dtype)
    big = torch.finfo(dtype).max
    q = torch.where(q.isinf() & h.isfinite(), torch.where(h > 0, big, -big).to(dtype), q)
    spike = (h - thresh) > 0
    wrong = ((q.float() - thresh) > 0) != spike
    up = torch.nextafter(q, torch.full_like(q, math.inf))
    down = torch.nextafter(q, torch.full_like(q, -math.inf))
    return torch.where(wrong, torch.where(spike, up, down), q), wrong


def _hard_potentials(thresh: float) -> torch.Tensor:
    t32 = torch.tensor(thresh, dtype=torch.float32)
    around = [t32]
    for direction in (math.inf, -math.inf):  # the 400 fp32 values on either side of thresh
        v = t32
        for _ in range(400):
            v = torch.nextafter(v, torch.tensor(direction))
            around.append(v)
    special = [0.0, -0.0, 1e-9, -1e-9, 3e-8, -3e-8, 1e-42, -1e-42, 65504.0, 65519.0, 65520.0, 7e4, -7e4,
               3.3e38, 3.4e38, -3.4e38, math.inf, -math.inf, math.nan, 1.0, -1.0, 0.5]
    return torch.cat([torch.stack(around), torch.tensor(special, dtype=torch.float32)])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("thresh", [1.0, 0.0, -1e-9, 0.3, -2.5, 65510.0, 3.3e38])
def test_saved_potential_is_threshold_consistent(device, dtype, thresh):
    """The 16-bit saved h is the nearest value on the forward's side of thresh (bit-exact).

    A T = 1 input cannot exercise this (h = x is already representable), so the rounding helper is
    run directly on fp32 potentials: the 400 fp32 values either side of thresh, signed zeros, values
    that underflow or overflow the 16-bit format, inf and NaN.
    """
    h = _hard_potentials(thresh)
    q = poisoned_out(h.shape, device, dtype)
    _round_to_side_kernel[(triton.cdiv(h.numel(), 256),)](
        h.to(device), q, thresh, *L._side_bounds(thresh, dtype), h.numel(), BLOCK=256, HW_CVT=not L.INTERPRETED
    )
    expected, wrong = _round_to_side_expected(h, thresh, dtype)
    q = q.cpu()
    nan = h.isnan()
    assert q[nan].isnan().all()
    mismatch = q[~nan].view(torch.int16) != expected[~nan].view(torch.int16)
    assert not mismatch.any(), f"h={h[~nan][mismatch][:5].tolist()} q={q[~nan][mismatch][:5].tolist()} expected={expected[~nan][mismatch][:5].tolist()}"
    spike = (h - torch.tensor(thresh, dtype=torch.float32)) > 0
    assert torch.equal((q.float() - thresh) > 0, spike), "a saved h is on the wrong side of thresh"
    if thresh in (1.0, 0.3, -2.5):
        assert wrong.any(), "plain rounding was never inconsistent here: the case proves nothing"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_saved_potential_recovers_forward_spikes(device, small_tiles, dtype):
    """Through the launcher: step-1 potentials within an ulp of thresh; backward sees the same spikes."""
    gen = torch.Generator().manual_seed(5)
    tau, thresh = 0.7, 1.0
    x0 = (0.3 + 0.6 * torch.rand(4096, generator=gen)).to(dtype)
    x1 = (thresh - x0.float() * tau).to(dtype)  # h1 = x0*tau + x1 lands within an ulp of thresh
    x = torch.stack([x0.reshape(2, 2048), x1.reshape(2, 2048)], dim=1).to(device)
    spikes, h = L.lif_forward(x, tau, thresh, 1.0)
    h1_fp32 = x0.float() * torch.tensor(tau) + x1.float()
    plain = ((h1_fp32.to(dtype).float() - thresh) > 0) != ((h1_fp32 - thresh) > 0)
    assert plain.any(), "no potential rounded across thresh: the case proves nothing"
    assert torch.equal(((h.float() - thresh) > 0).to(spikes.dtype), spikes), "saved h disagrees with the spikes"


# ----------------------------------------------------------------------------------------------
# layouts, shapes and edge cases
# ----------------------------------------------------------------------------------------------


def test_stride0_time_input_is_not_materialised(device):
    base = torch.randn(4, 3, 5, device=device)
    x = base.unsqueeze(1).expand(4, 6, 3, 5)
    x3 = L._as_3d(x, 4, 6, 15)
    assert x3.stride(1) == 0 and x3.data_ptr() == base.data_ptr(), "the broadcast input was copied"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_empty_batch(device, dtype):
    for shape in [(0, 5, 7), (0, 5), (3, 0, 7), (3, 4, 0, 2)]:
        x = torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)
        s = lif_triton(x)
        assert s.shape == x.shape and s.dtype == dtype
        s.sum().backward()
        assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_backward_twice_with_retain_graph(device, small_tiles, dtype):
    gen = torch.Generator().manual_seed(2)
    x = near_threshold((3, 6, 130), 1.0, gen, device).to(dtype).requires_grad_()
    s = lif_triton(x, 0.8, 1.0, 0.6)
    g = torch.randn(s.shape, generator=gen).to(device, dtype)
    (g1,) = torch.autograd.grad(s, x, g, retain_graph=True)
    (g2,) = torch.autograd.grad(s, x, g)
    assert torch.equal(g1, g2), "the second backward differs: the first one wrote into saved state"


def test_broadcast_grad_of_sum(device, small_tiles):
    """The gradient of ``spikes.sum()`` arrives expanded (stride 0 everywhere) and is read in place."""
    gen = torch.Generator().manual_seed(4)
    x = near_threshold((3, 4, 50), 1.0, gen, device)
    xt = x.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    lif_triton(xt, 0.5, 1.0, 1.0).sum().backward()
    lif_reference(xr, 0.5, 1.0, 1.0).sum().backward()
    torch.testing.assert_close(xt.grad, xr.grad, rtol=FP32_RTOL, atol=FP32_RTOL)


def test_poisoned_out_buffers_are_fully_written(device, small_tiles):
    """Launchers with caller-provided, NaN-filled, strided output buffers write every element."""
    gen = torch.Generator().manual_seed(9)
    B, T, N = 5, 6, 300
    x = near_threshold((B, T, N), 1.0, gen, device)
    out = poisoned_out((B, T, N), device, transpose=(0, 1))  # non-contiguous buffers
    h_out = poisoned_out((B, T, N), device, transpose=(1, 2))
    spikes, h = L.lif_forward(x, 0.6, 1.0, 0.9, out=out, h_out=h_out)
    assert spikes is out and h is h_out
    assert not out.isnan().any() and not h_out.isnan().any()
    g = torch.randn((B, T, N), generator=gen).to(device)
    gx = poisoned_out((B, T, N), device)
    assert L.lif_backward(g, h_out, 0.6, 1.0, 0.9, out=gx) is gx
    xr = x.clone().requires_grad_()
    sr = lif_reference(xr, 0.6, 1.0, 0.9)
    sr.backward(g)
    assert torch.equal(out, sr)
    torch.testing.assert_close(gx, xr.grad, rtol=FP32_RTOL, atol=FP32_RTOL * xr.grad.abs().max().item())


def _lazy_strided(shape, strides, dtype, device):
    """A view whose offsets pass 2**31 elements over a storage the OS only backs where touched."""
    numel = sum((n - 1) * s for n, s in zip(shape, strides)) + 1
    try:
        base = torch.empty(numel, dtype=dtype, device=device)
    except (RuntimeError, MemoryError) as exc:  # address space or device memory too small
        pytest.skip(f"cannot reserve {numel * torch.finfo(dtype).bits // 8 / 2**30:.1f} GiB: {exc}")
    return base.as_strided(shape, strides)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_offsets_past_2_31_elements(device, dtype):
    """Element offsets above 2**31 from strides that each fit in int32 (b * stride_b overflows int32).

    On the CPU the five storages (4-8 GiB each) are only reserved, never touched beyond the few
    pages in the view; on CUDA they are real allocations (skipped when the device is too small).
    """
    if device == "cuda" and torch.cuda.mem_get_info()[0] < 48 * 2**30:
        pytest.skip("needs about 40 GiB of free device memory")
    B, T, N = 3, 4, 40
    strides = (2**30 + 2**20, N, 1)  # the last batch row starts past element 2**31
    h_dtype = dtype

    def buf(fill=math.nan):
        t = _lazy_strided((B, T, N), strides, dtype, device)
        t.fill_(fill)
        return t

    gen = torch.Generator().manual_seed(31)
    x = buf()
    x.copy_(near_threshold((B, T, N), 1.0, gen, device))
    s, h = buf(), buf()
    L.lif_forward(x, 0.6, 1.0, 0.9, out=s, h_out=h)
    g = buf()
    g.copy_(torch.randn((B, T, N), generator=gen))
    gx = buf()
    L.lif_backward(g, h, 0.6, 1.0, 0.9, out=gx)
    assert h.dtype == h_dtype
    xr = x.detach().contiguous().float().requires_grad_()
    sr = lif_reference(xr, 0.6, 1.0, 0.9)
    sr.backward(g.float())
    assert torch.equal(s.float(), sr), "spikes past offset 2**31 differ"
    tol = FP32_RTOL if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(gx.float(), xr.grad, rtol=tol, atol=tol * xr.grad.abs().max().item())


@pytest.mark.cuda
def test_more_than_2_31_elements_real_tensor(device):
    """A real fp16 tensor of 2**31 + 148 elements (CUDA only; the interpreter would take hours)."""
    if device != "cuda":
        pytest.skip("a real >2**31-element tensor is only affordable on CUDA")
    if torch.cuda.mem_get_info()[0] < 32 * 2**30:
        pytest.skip("needs about 24 GiB of free device memory")
    B, T, N = 2, 2, 2**29 + 37
    x = (torch.rand((B, T, N), device=device, dtype=torch.float16) * 1.2).requires_grad_()
    s = lif_triton(x, 0.5, 1.0, 1.0)
    s.backward(torch.ones_like(s))
    for sl in (slice(0, 1000), slice(N - 1000, N)):  # the tail lies past element 2**31
        xr = x.detach()[:, :, sl].float().requires_grad_()
        sr = lif_reference(xr, 0.5, 1.0, 1.0)
        sr.backward(torch.ones_like(sr))
        assert torch.equal(s[:, :, sl].float(), sr)
        torch.testing.assert_close(x.grad[:, :, sl].float(), xr.grad, rtol=1e-2, atol=1e-2)


@pytest.mark.cuda
def test_long_T_does_not_recompile(device):
    if device != "cuda":
        pytest.skip("the interpreter does not compile")
    x = torch.rand(2, 256, 16, device=device)
    lif_triton(x)
    cache = L._lif_fwd_kernel.device_caches[torch.cuda.current_device()][0]
    before = len(cache)
    for T in (257, 300, 512, 17):
        lif_triton(torch.rand(2, T, 16, device=device))
    assert len(cache) == before, "a new T compiled a new kernel"


# ----------------------------------------------------------------------------------------------
# errors: one sentence, never an assert
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda d: torch.zeros(2, 3, 4, dtype=torch.int64, device=d), TypeError, "got int64"),
        (lambda d: torch.zeros(2, 3, 4, dtype=torch.float64, device=d), TypeError, "got float64"),
        (lambda d: torch.zeros(2, 3, 4, dtype=torch.bool, device=d), TypeError, "got bool"),
        (lambda d: torch.zeros(5, device=d), ValueError, "got shape (5,)"),
        (lambda d: torch.tensor(1.0, device=d), ValueError, "got shape ()"),
        (lambda d: torch.zeros(2, 3, 4, device="meta"), ValueError, "meta"),
        (lambda d: [[1.0, 2.0]], TypeError, "got list"),
    ],
)
def test_bad_input_raises_one_sentence(device, make, exc, words):
    with pytest.raises(exc) as info:
        lif_triton(make(device))
    message = str(info.value)
    assert message.startswith("lif_triton: ") and words in message, message
    assert "\n" not in message


def test_bad_parameters_and_buffers_raise(device):
    x = torch.rand(2, 3, 4, device=device)
    with pytest.raises(ValueError, match="^lif_triton: alpha must be > 0"):
        lif_triton(x, 0.5, 1.0, 0.0)
    with pytest.raises(ValueError, match="^lif_triton: out must be a float32 tensor of shape"):
        L.lif_forward(x, 0.5, 1.0, 1.0, out=torch.empty(2, 3, 4, device="meta"))
    with pytest.raises(ValueError, match="^lif_triton: h_out must be"):
        L.lif_forward(x, 0.5, 1.0, 1.0, h_out=torch.empty(2, 3, 4, dtype=torch.float16, device=device))
    with pytest.raises(ValueError, match="^lif_triton: grad_spikes"):
        L.lif_backward(torch.rand(2, 3, 5, device=device), torch.rand(2, 3, 4, device=device), 0.5, 1.0, 1.0)


# ----------------------------------------------------------------------------------------------
# interpreter selection (subprocesses: the choice is made once, at import)
# ----------------------------------------------------------------------------------------------


def _run_python(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(env_overrides)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300)


def test_interpreter_chosen_without_cuda_and_notice_logged_once(device):
    if device != "cpu" or torch.cuda.is_available():
        pytest.skip("the interpreter is only chosen automatically when there is no CUDA device")
    proc = _run_python(
        """
        import torch, triton, triton.language  # imported before kernels on purpose
        import os
        from snn.kernels import lif_triton, INTERPRETED
        x = torch.rand(2, 3, 5, requires_grad=True)
        lif_triton(x).sum().backward()
        lif_triton(x)
        print(INTERPRETED, os.environ["TRITON_INTERPRET"], x.grad.shape)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "1", "torch.Size([2,", "3,", "5])"]
    notices = [line for line in proc.stderr.splitlines() if "interpreter" in line]
    assert len(notices) == 1 and "slow" in notices[0], proc.stderr


def test_explicit_user_setting_is_respected(device):
    if device != "cpu" or torch.cuda.is_available():
        pytest.skip("checks the CPU-only path")
    proc = _run_python(
        """
        import torch
        from snn.kernels import lif_triton, INTERPRETED
        import os
        try:
            lif_triton(torch.rand(2, 3, 5))
        except ValueError as exc:
            print(INTERPRETED, os.environ["TRITON_INTERPRET"], exc)
        """,
        TRITON_INTERPRET="0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("False 0 lif_triton: the compiled Triton kernel needs a CUDA tensor"), proc.stdout
