"""Fused Leaky Integrate-and-Fire (LIF) layer: one Triton kernel for the forward, one for the backward.

The neuron, every option and the one derivation of the forward and backward are in
:mod:`snn.lif.spec` (not restated here); this module implements them, proven against
:func:`snn.lif.reference.lif_reference` by ``tests/test_lif_contract.py`` and ``tests/test_kernel_lif.py``.
All arithmetic is in fp32 whatever the input dtype; ``tau`` and ``thresh`` are numbers or
per-neuron tensors (learnable: the backward sums their gradients deterministically per tile, then
over tiles), and ``v0``/``return_v`` continue a sequence. No double backward.

What this kernel adds to the spec:

* The backward's grouping is the spec's, the order reference autograd rounds in, so fp32 input
  gradients equal the reference's to the last bit for the defaults. The last step is peeled (no
  ``c`` term: reference autograd never visits the unused last reset, so ``0 * h`` never makes a
  NaN when ``h`` is infinite).
* Saved state (counted with ``saved_tensors_hooks`` in the tests): only ``h``, in
  :func:`saved_h_dtype`: fp32 for fp32 input (4 B per neuron-step); the 16-bit input dtype for
  16-bit input (2 B), except for the ``rectangle`` and ``fast_sigmoid`` surrogates, which save fp32
  (reasons in :func:`saved_h_dtype`). The 16-bit rounding is threshold-consistent: when the
  round-to-nearest value lands on the other side of ``thresh`` than the fp32 ``h``, the neighbouring
  value on the forward's side is stored, so the backward recovers the forward's spikes exactly; a
  finite ``h`` past the 16-bit range is saved as the largest finite value. Neither ``x`` nor the
  spikes are saved; under ``torch.no_grad`` ``h`` is not written.
* Memory traffic per neuron-step, the minimum for this op: forward reads ``x`` and writes ``s`` and
  ``h`` (12 B fp32, 6 B 16-bit; 8 B / 4 B without grad), backward reads ``g_s`` and ``h`` and writes
  ``g_x`` (12 B fp32, 6 B 16-bit).
* No fused multiply-add: both kernels are launched with ``enable_fp_fusion=False`` (no LLVM
  contraction, ``ptxas --fmad=false``), because an FMA rounds ``v * tau + x`` once and flips a spike
  whenever the unfused sum lands exactly on ``thresh``. The interpreter evaluates each op separately
  in numpy, unfused too. A test constructs inputs where the two roundings disagree.

Layout. ``x`` is viewed as ``[B, T, N]`` (no copy when the trailing dims collapse) and read through
its strides, so transposed views and a stride-0 time dimension are read in place. Outputs are
written through their strides too: ``[B, T, ...]`` by default, ``[T, B, ...]`` storage with
``time_major=True``, or the caller's buffers (``out=``/``h_out=``). A 1-D grid enumerates
``[BLOCK_B, BLOCK_N]`` tiles of the ``(B, N)`` neuron plane, N fastest; each program owns its tile
for all T steps (``T`` is a runtime loop bound, so long sequences do not recompile). Offsets are
int64, so tensors past 2**31 elements are addressed correctly.

Interpreter. When no CUDA device is present and the user has not chosen (``TRITON_INTERPRET`` unset
and ``triton.knobs.runtime.interpret`` not set explicitly), importing this module sets
``TRITON_INTERPRET=1`` before the kernels are decorated (Triton 3.x reads it at decoration time, so
this works even when ``triton`` was imported earlier), and the first launch logs one line saying the
kernel runs in the interpreter. Only builtins of ``triton.language`` are used inside the kernels (no
``tl.cdiv``/``tl.zeros``, which are themselves ``@triton.jit`` functions and were decorated for the
GPU if ``triton`` had been imported before the interpreter was chosen). The interpreter truncates
fp32 -> bf16 casts, so bf16 is converted by hand with the bit-exact round-to-nearest-even that
PyTorch and ``cvt.rn.bf16.f32`` use.

Compiled code (checked without a GPU by ``tests/test_static_sm90.py``, report in
``benchmarks/RESULTS.md``): each step's loads are issued before the previous step's stores (both
kernels), a stride-0 time input is loaded once per tile (``X_BCAST``), and compiled launches convert
with the hardware's ``cvt.rn`` (``HW_CVT``; the interpreter keeps the hand-written exact path).
Contiguous, 16-byte-aligned tensors with N % 16 == 0 get 128-bit accesses; other N or an offset view
fall back to scalar accesses on that tensor (about 2x the instructions).
"""

from __future__ import annotations

import logging
import math
import numbers
import os

import torch

from snn.lif.eager import differentiable_h
from snn.lif.signature import make_lif_function
from snn.lif.spec import LIFSpec
from snn.lif.ops import register_lif_ops


def _choose_interpreter() -> None:
    """Run Triton in its CPU interpreter when there is no CUDA device and the user has not chosen."""
    if "TRITON_INTERPRET" in os.environ:
        return
    try:  # an explicit ``triton.knobs.runtime.interpret = ...`` is a choice too
        from triton import knobs

        if "interpret" in vars(knobs.runtime):
            return
    except ImportError:  # older Triton without knobs: the environment variable is all there is
        pass
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


_choose_interpreter()

import triton  # noqa: E402  (after the interpreter choice, although Triton 3.x would also see it later)
import triton.language as tl  # noqa: E402

_log = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Tile shape. A program owns BLOCK_B x BLOCK_N neurons for all T steps; BLOCK_N is the contiguous
# (vectorised) direction. 1024 neurons per program with 4 warps is 8 elements per thread (two
# 16-byte loads of fp32): on an H200 (132 SMs, 16 resident 4-warp programs each) that keeps about
# 64 KiB of loads in flight per SM per step of this memory-bound scan, and the grids are several
# waves (B=8192, N=512 -> 2 x 512 tiles, 4096 programs; B=256, N=65536 -> 1 x 1024 tiles, 16384
# programs). Not yet tuned on the device. Tests shrink these to cross tile boundaries cheaply.
MAX_BLOCK_N = 1024
TILE_NEURONS = 1024

# Testing aid: when True, output buffers are filled with NaN before launch so that any element a
# kernel fails to write shows up. Costs nothing when False.
POISON_OUTPUTS = False


# ----------------------------------------------------------------------------------------------
# dtype helpers (jit, inlined)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _to_fp32(x):
    """Upcast to fp32; bf16 by moving its 16 bits to the top of an fp32 word (exact everywhere)."""
    if x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return x.to(tl.float32)


@triton.jit
def _from_fp32(x, DTYPE: tl.constexpr, HW_CVT: tl.constexpr):
    """Round fp32 to DTYPE to nearest even: the hardware's ``cvt.rn`` when HW_CVT (compiled GPU
    code; a NaN becomes the canonical 0x7FFF), else bf16 by hand because the interpreter truncates."""
    if HW_CVT:
        return x.to(DTYPE)
    elif DTYPE == tl.bfloat16:
        u = x.to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        u = tl.where(x != x, 0x7FC0, u)  # NaN stays a (quiet) NaN
        return u.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DTYPE)


@triton.jit
def _round_to_side(h, spike, bounds, DTYPE: tl.constexpr, HW_CVT: tl.constexpr):
    """Round fp32 ``h`` to 16-bit DTYPE on the forward's side of the threshold, saturating.

    ``bounds = (lo_fire, hi_fire, lo_rest, hi_rest)``, fp32 values of DTYPE from
    :func:`_side_bounds`: the saved value is the nearest DTYPE value to ``h`` clamped to
    ``[lo_fire, hi_fire]`` for a spike and to ``[lo_rest, hi_rest]`` otherwise. ``lo_fire`` is the
    smallest DTYPE value above thresh and ``hi_rest`` the largest at or below it: only an ``h``
    between those two can round across thresh, and there the bound on its side is the answer (the
    one-ulp nudge). The other two bounds are +-big (the largest finite DTYPE value), so a finite
    ``h`` saturates instead of rounding to inf; an infinite or NaN ``h`` passes through. A select
    of the bounds, a max, a min and a select of ``h``: bit-identical (NaN: a NaN) to the rule it
    replaced (round to nearest, saturate, then nudge one ulp toward the right side), which
    ``benchmarks/prove_round_to_side.py`` checks over all 2**32 fp32 values.

    ``HW_CVT`` (compiled GPU code): the final, exact conversion is the hardware's ``cvt.rn``;
    otherwise bf16 is rounded by hand, because the interpreter truncates fp32 -> bf16.
    """
    lo_fire, hi_fire, lo_rest, hi_rest = bounds
    fired = spike > 0
    hc = tl.minimum(tl.maximum(h, tl.where(fired, lo_fire, lo_rest)), tl.where(fired, hi_fire, hi_rest))
    hc = tl.where(tl.abs(h) < float("inf"), hc, h)  # +-inf and NaN are saved as they are
    hc = hc.to(tl.float32)  # a no-op when compiled; the interpreter types a subnormal float argument fp64
    return _from_fp32(hc, DTYPE, HW_CVT)


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _reset(h, spike, thresh, v_reset, SOFT_RESET: tl.constexpr, HAS_V_RESET: tl.constexpr):
    """``v = R(h, s)`` of snn/lif/spec.py, rounded as the reference's reset."""
    if SOFT_RESET:
        v = h - spike * thresh
    else:
        v = h * (1.0 - spike)  # a product, not a select: h = +inf gives NaN exactly as the reference
        if HAS_V_RESET:
            v = v + spike * v_reset
    return v


@triton.jit
def _lif_step(v, x, tau, thresh, v_reset, SOFT_RESET: tl.constexpr, HAS_V_RESET: tl.constexpr,
              DELAYED_RESET: tl.constexpr):
    """One forward step from ``v_{t-1}`` and ``x_t``: (pre-reset h_t, spike s_t as fp32 0/1, v_t)."""
    h = v * tau + x  # two roundings, as eager PyTorch (launched with enable_fp_fusion=False)
    if DELAYED_RESET:  # subtract_next: v_{t-1} is h_{t-1}; its spike's threshold is subtracted now
        h = h - ((v - thresh) > 0).to(tl.float32) * thresh
    spike = ((h - thresh) > 0).to(tl.float32)
    if DELAYED_RESET:
        return h, spike, h
    else:
        return h, spike, _reset(h, spike, thresh, v_reset, SOFT_RESET, HAS_V_RESET)


@triton.jit
def _lif_store(s_ptrs, h_ptrs, h, spike, mask, bounds, SAVE_H: tl.constexpr, HW_CVT: tl.constexpr):
    """Store one step's spikes and, when SAVE_H, its saved potential (16-bit: side-consistent)."""
    tl.store(s_ptrs, _from_fp32(spike, s_ptrs.dtype.element_ty, HW_CVT), mask=mask)
    if SAVE_H:
        if h_ptrs.dtype.element_ty == tl.float32:
            tl.store(h_ptrs, h, mask=mask)
        else:
            tl.store(h_ptrs, _round_to_side(h, spike, bounds, h_ptrs.dtype.element_ty, HW_CVT), mask=mask)


@triton.jit
def _store_bits(bits_ptr, spike, mask, offs_b, pid_n, B, N, stride_bb, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """Store one step's spikes bit-packed (snn/spikebits.py: neuron n -> byte n // 8, bit n % 8)."""
    GROUP: tl.constexpr = 8 if BLOCK_N >= 8 else BLOCK_N  # a block narrower than a byte holds all of N
    on = tl.where(mask, spike, 0.0).to(tl.int32) << (tl.arange(0, BLOCK_N) % 8)[None, :]
    packed = tl.reduce(tl.reshape(on, (BLOCK_B, BLOCK_N // GROUP, GROUP)), 2, _add)  # tl.sum is not a builtin
    offs_k = pid_n * (BLOCK_N // GROUP) + tl.arange(0, BLOCK_N // GROUP)
    kmask = (offs_b[:, None] < B) & (offs_k[None, :] < (N + 7) // 8)
    tl.store(bits_ptr + offs_b[:, None] * stride_bb + offs_k[None, :], packed.to(tl.uint8), mask=kmask)


@triton.jit
def _neuron_values(ptr, offs_n, N, scalar, IS_VEC: tl.constexpr):
    """A per-neuron parameter as a [1, BLOCK_N] row loaded once per tile (IS_VEC), else the scalar."""
    if IS_VEC:
        return tl.load(ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
    else:
        return scalar


@triton.jit(do_not_specialize=["T"])
def _lif_fwd_kernel(
    x_ptr,  # *{fp16,bf16,fp32} input current, viewed as [B, T, N] with arbitrary strides
    s_ptr,  # *x.dtype output spikes [B, T, N]
    h_ptr,  # *{fp32 (fp32 input), x.dtype (16-bit input)} saved pre-reset potential [B, T, N]
    tau_ptr,  # *fp32 [N] per-neuron tau (TAU_VEC; else unused)
    thresh_ptr,  # *fp32 [N] per-neuron thresh (THRESH_VEC; else unused)
    bounds_ptr,  # *fp32 [4, N] per-neuron clamp bounds of the 16-bit save (THRESH_VEC; see _side_bounds)
    v0_ptr,  # *{fp32, x.dtype} [B, N] initial potential (HAS_V0; else unused)
    v_ptr,  # *fp32 [B, N] contiguous output: the final potential (WRITE_V; else unused)
    bits_ptr,  # *uint8 [B, T, ceil(N/8)] output: the spikes bit-packed (WRITE_BITS; else unused)
    B,  # batch size
    T,  # number of time steps (runtime loop bound, >= 1)
    N,  # neurons per sample (product of the trailing dims)
    stride_xb,  # x stride of dim 0, in elements
    stride_xt,  # x stride of dim 1 (0 for an input broadcast over time: see X_BCAST)
    stride_xn,  # x stride of dim 2
    stride_sb,  # spikes stride of dim 0
    stride_st,  # spikes stride of dim 1
    stride_sn,  # spikes stride of dim 2
    stride_hb,  # saved-potential stride of dim 0
    stride_ht,  # saved-potential stride of dim 1
    stride_hn,  # saved-potential stride of dim 2
    stride_v0b,  # v0 stride of dim 0 (0 when broadcast over the batch)
    stride_v0n,  # v0 stride of dim 1
    stride_bb,  # bits stride of dim 0, in bytes (dim 2 has stride 1)
    stride_bt,  # bits stride of dim 1
    tau,  # fp32 leak factor (scalar; unused when TAU_VEC)
    thresh,  # fp32 firing threshold (scalar; unused when THRESH_VEC)
    v_reset,  # fp32 potential after a hard reset (used when HAS_V_RESET)
    lo_fire,  # fp32 clamp bounds of the 16-bit saved h: after a spike (see _round_to_side)
    hi_fire,
    lo_rest,  # ... and without a spike
    hi_rest,
    SAVE_H: tl.constexpr,  # write h (for the backward, or asked for with return_h)
    X_BCAST: tl.constexpr,  # stride_xt == 0: load x once per tile, not once per step
    SOFT_RESET: tl.constexpr,  # reset="soft": v = h - thresh * s (else hard: h * (1 - s) [+ v_reset * s])
    HAS_V_RESET: tl.constexpr,  # hard reset to a non-zero v_reset
    DELAYED_RESET: tl.constexpr,  # reset="subtract_next": v = h, thresh subtracted at the next step
    TAU_VEC: tl.constexpr,  # tau is per neuron (tau_ptr)
    THRESH_VEC: tl.constexpr,  # thresh is per neuron (thresh_ptr, bounds_ptr)
    HAS_V0: tl.constexpr,  # start from v0 instead of 0
    WRITE_V: tl.constexpr,  # store the final potential
    HW_CVT: tl.constexpr,  # round with the hardware's cvt.rn (compiled GPU code, not the interpreter)
    BLOCK_B: tl.constexpr,  # tile rows (batch direction)
    BLOCK_N: tl.constexpr,  # tile columns (neuron direction, contiguous)
    WRITE_BITS: tl.constexpr = False,  # also store the spikes bit-packed (bits_ptr)
):
    # int64 before any multiplication by a stride: offsets may pass 2**31 elements.
    pid = tl.program_id(0).to(tl.int64)
    num_pid_n = (N + BLOCK_N - 1) // BLOCK_N  # not tl.cdiv: see "Interpreter" in the module docstring
    pid_b = pid // num_pid_n
    pid_n = pid % num_pid_n
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_b[:, None] < B) & (offs_n[None, :] < N)

    x_ptrs = x_ptr + offs_b[:, None] * stride_xb + offs_n[None, :] * stride_xn
    s_ptrs = s_ptr + offs_b[:, None] * stride_sb + offs_n[None, :] * stride_sn
    h_ptrs = h_ptr + offs_b[:, None] * stride_hb + offs_n[None, :] * stride_hn

    # Per-neuron parameters: one load per tile, then registers for all T steps.
    tau = _neuron_values(tau_ptr, offs_n, N, tau, TAU_VEC)
    thresh = _neuron_values(thresh_ptr, offs_n, N, thresh, THRESH_VEC)
    if THRESH_VEC and SAVE_H and h_ptr.dtype.element_ty != tl.float32:
        bounds = (
            tl.load(bounds_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :],
            tl.load(bounds_ptr + N + offs_n, mask=offs_n < N, other=0.0)[None, :],
            tl.load(bounds_ptr + 2 * N + offs_n, mask=offs_n < N, other=0.0)[None, :],
            tl.load(bounds_ptr + 3 * N + offs_n, mask=offs_n < N, other=0.0)[None, :],
        )
    else:
        bounds = (lo_fire, hi_fire, lo_rest, hi_rest)
    if HAS_V0:
        v = _to_fp32(tl.load(v0_ptr + offs_b[:, None] * stride_v0b + offs_n[None, :] * stride_v0n, mask=mask))
    else:
        v = tl.full([BLOCK_B, BLOCK_N], 0.0, tl.float32)

    # Step 0, then for each later step: load x_t, store step t-1, compute step t. The load is
    # issued before the previous step's stores (the compiler cannot move a load above a store: it
    # must assume they alias), so a warp keeps it in flight while it stores; and no register copy
    # is needed, as there would be for a prefetch of x_{t+1}. Loads in the loop need no ``other``:
    # masked-off lanes are never stored, and zero-filling them costs an instruction per register.
    x = _to_fp32(tl.load(x_ptrs, mask=mask))  # when X_BCAST, the one load of x for all steps
    h, spike, v = _lif_step(v, x, tau, thresh, v_reset, SOFT_RESET, HAS_V_RESET, DELAYED_RESET)
    for _ in range(1, T):
        if not X_BCAST:
            x_ptrs += stride_xt
            x = _to_fp32(tl.load(x_ptrs, mask=mask))
        _lif_store(s_ptrs, h_ptrs, h, spike, mask, bounds, SAVE_H, HW_CVT)
        if WRITE_BITS:
            _store_bits(bits_ptr, spike, mask, offs_b, pid_n, B, N, stride_bb, BLOCK_B, BLOCK_N)
            bits_ptr += stride_bt
        s_ptrs += stride_st
        h_ptrs += stride_ht
        h, spike, v = _lif_step(v, x, tau, thresh, v_reset, SOFT_RESET, HAS_V_RESET, DELAYED_RESET)
    _lif_store(s_ptrs, h_ptrs, h, spike, mask, bounds, SAVE_H, HW_CVT)
    if WRITE_BITS:
        _store_bits(bits_ptr, spike, mask, offs_b, pid_n, B, N, stride_bb, BLOCK_B, BLOCK_N)
    if WRITE_V:
        tl.store(v_ptr + offs_b[:, None] * N + offs_n[None, :], v, mask=mask)


@triton.jit
def _surrogate(z, SURROGATE: tl.constexpr, sg_a, sg_b):
    """``sg(z)`` of snn/lif/spec.py (``surrogate_gradient``), op for op; constants from :func:`_surrogate_constants`."""
    if SURROGATE == 0:  # triangle: max(0, alpha - |z|) * (1 / alpha**2); a = alpha, b = 1 / alpha / alpha
        sg = sg_a - tl.abs(z)
        sg = tl.where(sg < 0, 0.0, sg)  # clamp(min=0) that keeps NaN, as torch.clamp does
        return sg * sg_b
    elif SURROGATE == 1:  # sigmoid: (1 - sig) * sig * alpha, sig = sigmoid(z * alpha); a = alpha
        sig = 1.0 / (1.0 + tl.exp(-(z * sg_a)))  # not tl.sigmoid, a @jit function (see "Interpreter")
        return (1.0 - sig) * sig * sg_a
    elif SURROGATE == 2:  # atan: (alpha / 2) / (1 + (z * (pi / 2 * alpha))**2); a = alpha / 2, b = pi / 2 * alpha
        u = z * sg_b
        return sg_a / (1.0 + u * u)
    elif SURROGATE == 4:  # fast_sigmoid: 1 / (|z| * alpha + 1)**2; a = alpha
        d = tl.abs(z) * sg_a + 1.0
        return 1.0 / (d * d)
    else:  # rectangle: alpha where |z| < 0.5 / alpha; a = alpha, b = 0.5 / alpha
        return tl.where(tl.abs(z) < sg_b, sg_a, 0.0)


@triton.jit
def _d_spike(g_s, c, h, thresh, v_reset, SOFT_RESET: tl.constexpr, HAS_V_RESET: tl.constexpr, DETACH_RESET: tl.constexpr):
    """dL/ds_t = g_s + c_t * dR/ds (zero when the reset is detached), grouped as the reference rounds."""
    if DETACH_RESET:
        return g_s
    elif SOFT_RESET:
        return g_s - c * thresh
    else:
        d = g_s - c * h
        if HAS_V_RESET:
            d = d + c * v_reset
        return d


@triton.jit
def _carry_through_reset(c, spike, SOFT_RESET: tl.constexpr):
    """c_t * dR/dh: (1 - s) for a hard reset, 1 for a soft one."""
    if SOFT_RESET:
        return c
    else:
        return c * (1.0 - spike)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _store_partial(ptr, acc, mask, pid_b, offs_n, N):
    """Sum a tile's [BLOCK_B, BLOCK_N] accumulator over its rows into row pid_b of a [num_pid_b, N] buffer.

    Masked-off lanes hold garbage (loads in the loop have no ``other``): they are zeroed first.
    The host sums the rows in a fixed order, so the result is deterministic (no atomics).
    """
    # tl.reduce with our own combine function rather than tl.sum, a @jit function of triton's
    # standard library (see "Interpreter" in the module docstring).
    tl.store(ptr + pid_b * N + offs_n, tl.reduce(tl.where(mask, acc, 0.0), 0, _add), mask=offs_n < N)


@triton.jit(do_not_specialize=["T"])
def _lif_bwd_kernel(
    gs_ptr,  # *{fp16,bf16,fp32} incoming gradient of the spikes [B, T, N], arbitrary strides
    h_ptr,  # *{fp32, fp16, bf16} saved pre-reset potential [B, T, N] (from the forward)
    gx_ptr,  # *x.dtype output gradient of the input [B, T, N]
    tau_ptr,  # *fp32 [N] per-neuron tau (TAU_VEC)
    thresh_ptr,  # *fp32 [N] per-neuron thresh (THRESH_VEC)
    gv_ptr,  # *fp32 [B, N] gradient of the final potential (HAS_GV), strides below
    v0_ptr,  # *{fp32, 16-bit} [B, N] initial potential (HAS_V0: the tau gradient's first term)
    gv0_ptr,  # *fp32 [B, N] contiguous output: gradient of v0 (WRITE_GV0)
    gtau_ptr,  # *fp32 [num_pid_b, N] output: per-tile-row partial sums of the tau gradient (NEED_TAU)
    gthresh_ptr,  # *fp32 [num_pid_b, N] output: same for thresh (NEED_THRESH)
    B,  # batch size
    T,  # number of time steps (runtime loop bound, >= 1)
    N,  # neurons per sample
    stride_gsb,  # grad-spikes stride of dim 0
    stride_gst,  # grad-spikes stride of dim 1 (0 when the gradient is broadcast, e.g. from .sum())
    stride_gsn,  # grad-spikes stride of dim 2
    stride_hb,  # saved-potential stride of dim 0
    stride_ht,  # saved-potential stride of dim 1
    stride_hn,  # saved-potential stride of dim 2
    stride_gxb,  # grad-input stride of dim 0
    stride_gxt,  # grad-input stride of dim 1
    stride_gxn,  # grad-input stride of dim 2
    stride_gvb,  # final-potential gradient strides
    stride_gvn,
    stride_v0b,  # v0 strides (0 where broadcast)
    stride_v0n,
    tau,  # fp32 leak factor (scalar; unused when TAU_VEC)
    thresh,  # fp32 firing threshold (scalar; unused when THRESH_VEC)
    v_reset,  # fp32 potential after a hard reset (HAS_V_RESET)
    sg_a,  # fp32 surrogate constants (see _surrogate / _surrogate_constants), rounded once on the host
    sg_b,
    SURROGATE: tl.constexpr,  # 0 triangle, 1 sigmoid, 2 atan, 3 rectangle, 4 fast_sigmoid (snn.lif.spec.SURROGATES)
    SOFT_RESET: tl.constexpr,  # dR/dh = 1 (reset="soft", and "subtract_next")
    HAS_V_RESET: tl.constexpr,
    DELAYED_RESET: tl.constexpr,  # reset="subtract_next" (detached): v = h, h_t holds - thresh * s_{t-1}
    DETACH_RESET: tl.constexpr,  # the reset treats s as a constant (dR/ds = 0)
    TAU_VEC: tl.constexpr,
    THRESH_VEC: tl.constexpr,
    HAS_GV: tl.constexpr,  # the final potential has a gradient (c_{T-1} = g_v; else 0)
    HAS_V0: tl.constexpr,
    WRITE_GV0: tl.constexpr,
    NEED_TAU: tl.constexpr,
    NEED_THRESH: tl.constexpr,
    HW_CVT: tl.constexpr,  # round with the hardware's cvt.rn (compiled GPU code, not the interpreter)
    BLOCK_B: tl.constexpr,  # tile rows (batch direction)
    BLOCK_N: tl.constexpr,  # tile columns (neuron direction, contiguous)
):
    pid = tl.program_id(0).to(tl.int64)
    num_pid_n = (N + BLOCK_N - 1) // BLOCK_N
    pid_b = pid // num_pid_n
    pid_n = pid % num_pid_n
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_b[:, None] < B) & (offs_n[None, :] < N)
    tau = _neuron_values(tau_ptr, offs_n, N, tau, TAU_VEC)
    thresh = _neuron_values(thresh_ptr, offs_n, N, thresh, THRESH_VEC)

    # Start at the last step and walk back.
    last = (T - 1).to(tl.int64)
    gs_ptrs = gs_ptr + offs_b[:, None] * stride_gsb + offs_n[None, :] * stride_gsn + last * stride_gst
    h_ptrs = h_ptr + offs_b[:, None] * stride_hb + offs_n[None, :] * stride_hn + last * stride_ht
    gx_ptrs = gx_ptr + offs_b[:, None] * stride_gxb + offs_n[None, :] * stride_gxn + last * stride_gxt

    # t = T - 1: c_{T-1} is the final potential's gradient; without one, only the spike path
    # contributes (no 0 * h term, which would turn an infinite h into NaN where the reference has none).
    g_s = _to_fp32(tl.load(gs_ptrs, mask=mask, other=0.0))
    h = _to_fp32(tl.load(h_ptrs, mask=mask, other=0.0))
    z = h - thresh
    spike = (z > 0).to(tl.float32)  # the forward's spike, exactly (see _round_to_side)
    sg = _surrogate(z, SURROGATE, sg_a, sg_b)
    if HAS_GV:
        c = _to_fp32(tl.load(gv_ptr + offs_b[:, None] * stride_gvb + offs_n[None, :] * stride_gvn, mask=mask, other=0.0))
        d = _d_spike(g_s, c, h, thresh, v_reset, SOFT_RESET, HAS_V_RESET, DETACH_RESET)
        g_h = _carry_through_reset(c, spike, SOFT_RESET) + d * sg
    else:
        c = 0.0
        d = g_s
        g_h = g_s * sg
    if NEED_THRESH:
        acc_thresh = -(d * sg)
        if SOFT_RESET and HAS_GV and not DELAYED_RESET:
            acc_thresh = acc_thresh - c * spike
    if NEED_TAU:
        acc_tau = tl.full([BLOCK_B, BLOCK_N], 0.0, tl.float32)
    c = g_h * tau  # gradient reaching v_{t-1}

    for t in range(1, T):
        # Load step T-1-t, then store step T-t: the loads are in flight during the store (as in
        # the forward).
        gs_ptrs -= stride_gst
        h_ptrs -= stride_ht
        g_s = _to_fp32(tl.load(gs_ptrs, mask=mask))  # no other=: masked-off lanes are never stored
        h = _to_fp32(tl.load(h_ptrs, mask=mask))
        tl.store(gx_ptrs, _from_fp32(g_h, gx_ptr.dtype.element_ty, HW_CVT), mask=mask)
        gx_ptrs -= stride_gxt
        z = h - thresh
        spike = (z > 0).to(tl.float32)
        sg = _surrogate(z, SURROGATE, sg_a, sg_b)
        if NEED_TAU:  # g_h[t+1] * v_t, with v_t recomputed from this step's h
            if DELAYED_RESET:
                acc_tau += g_h * h
            else:
                acc_tau += g_h * _reset(h, spike, thresh, v_reset, SOFT_RESET, HAS_V_RESET)
        if NEED_THRESH and DELAYED_RESET:  # h_{t+1} holds - thresh * s_t
            acc_thresh -= g_h * spike
        d = _d_spike(g_s, c, h, thresh, v_reset, SOFT_RESET, HAS_V_RESET, DETACH_RESET)
        g_h = _carry_through_reset(c, spike, SOFT_RESET) + d * sg
        if NEED_THRESH:
            acc_thresh += -(d * sg)
            if SOFT_RESET and not DELAYED_RESET:
                acc_thresh -= c * spike
        c = g_h * tau
    tl.store(gx_ptrs, _from_fp32(g_h, gx_ptr.dtype.element_ty, HW_CVT), mask=mask)
    if NEED_TAU:
        if HAS_V0:  # the first step's v_{-1} = v0 (zero otherwise: nothing to add)
            v0 = _to_fp32(tl.load(v0_ptr + offs_b[:, None] * stride_v0b + offs_n[None, :] * stride_v0n, mask=mask, other=0.0))
            acc_tau += g_h * v0
        _store_partial(gtau_ptr, acc_tau, mask, pid_b, offs_n, N)
    if NEED_THRESH:
        if DELAYED_RESET:  # h_0 holds - thresh * s_{-1}, s_{-1} = (v0 - thresh > 0) (v0 = 0 when absent)
            if HAS_V0:
                v_first = _to_fp32(tl.load(v0_ptr + offs_b[:, None] * stride_v0b + offs_n[None, :] * stride_v0n,
                                           mask=mask, other=0.0))
            else:
                v_first = tl.full([BLOCK_B, BLOCK_N], 0.0, tl.float32)
            acc_thresh -= g_h * ((v_first - thresh) > 0).to(tl.float32)
        _store_partial(gthresh_ptr, acc_thresh, mask, pid_b, offs_n, N)
    if WRITE_GV0:
        tl.store(gv0_ptr + offs_b[:, None] * N + offs_n[None, :], c, mask=mask)


# Whether Triton decorated the kernels for its CPU interpreter (decided when this module loaded).
INTERPRETED = not isinstance(_lif_fwd_kernel, triton.runtime.JITFunction)
_notice_logged = False


# ----------------------------------------------------------------------------------------------
# host launchers
# ----------------------------------------------------------------------------------------------


def _fail(exc_type, message: str):
    return exc_type(f"lif_spike: {message}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_input(x, what: str = "x") -> None:
    """One clear sentence per mistake; never an assert (they vanish under python -O)."""
    if not isinstance(x, torch.Tensor):
        raise _fail(TypeError, f"expected {what} to be a torch.Tensor of shape [B, T, ...], got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        hint = " (the kernel computes in float32; cast with .float())" if x.dtype == torch.float64 else ""
        raise _fail(
            TypeError,
            f"expected a float16, bfloat16 or float32 tensor of shape [B, T, ...] for {what}, "
            f"got {_dtype_name(x.dtype)}{hint}",
        )
    if x.dim() < 2:
        raise _fail(
            ValueError,
            f"expected a float16, bfloat16 or float32 tensor of shape [B, T, ...] for {what}, "
            f"got shape {tuple(x.shape)}",
        )
    if INTERPRETED:
        if x.device.type not in ("cpu", "cuda"):
            raise _fail(ValueError, f"the Triton interpreter needs a cpu or cuda tensor, got {what} on {x.device}")
    elif x.device.type != "cuda":
        raise _fail(
            ValueError,
            f"the compiled Triton kernel needs a CUDA tensor, got {what} on {x.device} "
            "(set TRITON_INTERPRET=1 before importing kernels to run the slow CPU interpreter)",
        )


def _check_params(tau, thresh, gamma) -> tuple:
    """``tau``/``thresh``: numbers, or tensors (checked for shape by snn.lif.spec); ``gamma`` (alpha): a number or None."""
    for name, value in (("tau", tau), ("thresh", thresh), ("gamma", gamma)):
        if value is None and name == "gamma":
            continue
        if isinstance(value, torch.Tensor) and name != "gamma":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _fail(TypeError, f"{name} must be a Python number, got {type(value).__name__}")
    as_float = (lambda v: v if isinstance(v, torch.Tensor) or v is None else float(v))
    return as_float(tau), as_float(thresh), as_float(gamma)


def saved_h_dtype(x_dtype: torch.dtype, spec: LIFSpec) -> torch.dtype:
    """The dtype ``h`` is saved in: fp32 for fp32 input; the 16-bit input dtype otherwise, except for
    the rectangle surrogate, whose window edges a rounded ``h`` could cross (the side-consistent
    rounding protects the threshold only, and the rectangle jumps from 0 to alpha at its edges): it
    saves fp32, 4 B per neuron-step instead of 2, and gets the forward's exact window. So does
    ``fast_sigmoid``, whose slope at the threshold (``2 * alpha``, 50 by default) turns a 16-bit
    rounding of ``h`` into a gradient error several times the 16-bit reference's own (measured in
    tests/test_lif_contract.py)."""
    if x_dtype == torch.float32 or spec.surrogate in ("rectangle", "fast_sigmoid"):
        return torch.float32
    return x_dtype


def _spec_of(gamma, spec: LIFSpec | None) -> LIFSpec:
    """The neuron: ``spec``, or the seed's neuron with the triangle's ``gamma``; never both."""
    if spec is None:
        return LIFSpec(alpha=gamma)
    if gamma is not None and gamma != spec.surrogate_alpha:
        raise _fail(ValueError, f"gamma={gamma} contradicts spec.alpha={spec.surrogate_alpha}; pass one of them")
    return spec


def _neuron_vector(value, shape, device) -> torch.Tensor | None:
    """A tensor ``tau``/``thresh`` as the fp32 ``[N]`` row the kernels load per tile (None for a number)."""
    if not isinstance(value, torch.Tensor):
        return None
    return value.detach().to(device=device, dtype=torch.float32).expand(shape).reshape(-1).contiguous()


def _reduce_to_param(partials: torch.Tensor, param: torch.Tensor, neuron_shape) -> torch.Tensor:
    """Per-tile-row partial sums [rows, N] -> the parameter's gradient, in a fixed order (deterministic)."""
    return partials.sum(dim=0).view(neuron_shape).sum_to_size(param.shape).to(param.dtype)


def _as_3d(t: torch.Tensor, B: int, T: int, N: int) -> torch.Tensor:
    """[B, T, ...] -> [B, T, N]: a view when the trailing dims collapse, else a contiguous copy."""
    try:
        return t.view(B, T, N)
    except RuntimeError:
        return t.reshape(B, T, N)


def _empty(shape, dtype: torch.dtype, device: torch.device, time_major: bool = False) -> torch.Tensor:
    """An output buffer (NaN-filled when POISON_OUTPUTS); ``time_major``: [T, B, ...] storage seen as [B, T, ...]."""
    if time_major:
        return _empty((shape[1], shape[0], *shape[2:]), dtype, device).transpose(0, 1)
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _check_out(out, name: str, shape, dtype: torch.dtype, device: torch.device, B: int, T: int, N: int):
    """A caller-provided output buffer (any strides), viewed as [B, T, N] without copying."""
    if not isinstance(out, torch.Tensor) or out.shape != shape or out.dtype != dtype or out.device != device:
        got = (
            f"{tuple(out.shape)} {_dtype_name(out.dtype)} on {out.device}"
            if isinstance(out, torch.Tensor)
            else type(out).__name__
        )
        raise _fail(ValueError, f"{name} must be a {_dtype_name(dtype)} tensor of shape {tuple(shape)} on {device}, got {got}")
    try:
        return out.view(B, T, N)
    except RuntimeError:
        raise _fail(ValueError, f"{name} must be viewable as [B, T, N] = [{B}, {T}, {N}] without a copy") from None


def _check_bits(bits, B: int, T: int, N: int, device) -> torch.Tensor:
    if (not isinstance(bits, torch.Tensor) or bits.dtype != torch.uint8 or tuple(bits.shape) != (B, T, (N + 7) // 8)
            or bits.device != device or bits.stride(2) != 1):
        raise _fail(ValueError, f"bits_out must be a uint8 tensor of shape {(B, T, (N + 7) // 8)} on {device} "
                                "with a unit last stride")
    return bits


def _block_config(B: int, N: int) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_N, num_warps) for a [B, N] neuron plane."""
    block_n = min(triton.next_power_of_2(N), MAX_BLOCK_N)
    block_b = max(1, min(TILE_NEURONS // block_n, triton.next_power_of_2(B)))
    num_warps = max(1, min(8, block_b * block_n // 256))
    return block_b, block_n, num_warps


def _log_interpreter_notice() -> None:
    global _notice_logged
    if INTERPRETED and not _notice_logged:
        _notice_logged = True
        _log.warning("kernels.lif.triton_launch: the Triton LIF kernel runs in the Triton interpreter on CPU (TRITON_INTERPRET=1): correct but slow.")


# Compile options of every launch. enable_fp_fusion=False: no FMA contraction, so products and sums
# round like eager PyTorch (see the module docstring). The interpreter ignores compile options.
LAUNCH_OPTIONS = {"enable_fp_fusion": False}


def _launch_config(B: int, N: int, constexprs: dict) -> tuple[tuple[int], dict]:
    """(grid, keyword arguments) of a launch over the tiles of a ``[B, N]`` neuron plane.

    Shared with ``benchmarks/static_sm90.py``, which compiles exactly these launches for sm_90.
    """
    block_b, block_n, num_warps = _block_config(B, N)
    grid = (triton.cdiv(B, block_b) * triton.cdiv(N, block_n),)
    return grid, dict(BLOCK_B=block_b, BLOCK_N=block_n, num_warps=num_warps, **constexprs, **LAUNCH_OPTIONS)


def _side_bounds(thresh, dtype: torch.dtype):
    """``(lo_fire, hi_fire, lo_rest, hi_rest)``: the clamp intervals of :func:`_round_to_side`.

    ``thresh`` (a number: four floats; a tensor: four tensors of its shape) is first rounded to
    fp32 (the kernel compares in fp32). ``lo_fire`` is the smallest ``dtype`` value > thresh,
    ``hi_rest`` the largest <= thresh; ``hi_fire`` = max(lo_fire, big) (inf when thresh >= big: the
    nudge past big is inf) and ``lo_rest`` = min(hi_rest, -big), with ``hi_rest`` capped at big
    (thresh = inf). A zero ``lo_fire`` / ``hi_rest`` becomes the fp32 subnormal of the nudge's sign
    (-2**-149 / +2**-149): it rounds to the zero the nudge makes (-0 above, +0 below) and, unlike a
    signed zero, never ties with an ``h`` of +-0 in the kernel's max/min (whose choice between +0
    and -0 is not pinned down). A NaN thresh (nothing spikes) leaves only the saturation. For
    float32 nothing is rounded: all four are thresh.
    """
    is_number = not isinstance(thresh, torch.Tensor)
    t = torch.tensor(thresh, dtype=torch.float32) if is_number else thresh.detach().to(torch.float32).cpu()
    if dtype == torch.float32:
        bounds = (t, t, t, t)
    else:
        big = torch.finfo(dtype).max
        q = t.to(dtype)  # round to nearest (inf passes through)
        inf = torch.full_like(q, math.inf)
        below = torch.where(q.float() > t, torch.nextafter(q, -inf), q).float()
        above = torch.where(q.float() <= t, torch.nextafter(q, inf), q).float()
        tiny = torch.tensor(2.0**-149, dtype=torch.float32)
        below = torch.where(below == 0, tiny, below.clamp(max=big))
        above = torch.where(above == 0, -tiny, above)
        nan = t.isnan()
        bounds = (
            torch.where(nan, big, above),
            torch.where(nan, big, above.clamp(min=big)),
            torch.where(nan, -big, below.clamp(max=-big)),
            torch.where(nan, big, below),
        )
    return tuple(b.item() for b in bounds) if is_number else bounds


def _surrogate_constants(spec: LIFSpec) -> tuple[float, float]:
    """(sg_a, sg_b) of :func:`_surrogate`, computed on the host exactly as snn.lif.spec's formulas do."""
    alpha = spec.surrogate_alpha
    if spec.surrogate == "triangle":
        return alpha, 1.0 / alpha / alpha
    if spec.surrogate == "sigmoid":
        return alpha, 0.0
    if spec.surrogate == "atan":
        return alpha / 2, math.pi / 2 * alpha
    if spec.surrogate == "fast_sigmoid":
        return alpha, 0.0
    return alpha, 0.5 / alpha  # rectangle


def _fwd_launch(x3, s3, h3, B: int, T: int, N: int, tau, thresh, save_h: bool, spec: LIFSpec = LIFSpec(),
                tau_vec=None, thresh_vec=None, bounds=None, v0=None, v_out=None, bits=None):
    """(kernel, positional args, constexprs) of the forward launch for [B, T, N] views.

    ``tau_vec``/``thresh_vec``: fp32 [N] rows for per-neuron parameters (``bounds``: their [4, N]
    side bounds for a 16-bit save); ``v0``: a [B, N] view; ``v_out``: a contiguous fp32 [B, N].
    Unused pointers are given ``x3`` (never dereferenced: their constexpr flag is off).
    """
    scalar_bounds = _side_bounds(thresh, h3.dtype) if thresh_vec is None else (0.0,) * 4
    args = (
        x3, s3, h3, _or(tau_vec, x3), _or(thresh_vec, x3), _or(bounds, x3), _or(v0, x3), _or(v_out, x3),
        _or(bits, x3), B, T, N, *x3.stride(), *s3.stride(), *h3.stride(), *(v0.stride() if v0 is not None else (0, 0)),
        *((0, 0) if bits is None else bits.stride()[:2]), 0.0 if tau_vec is not None else tau, 0.0 if thresh_vec is not None else thresh, spec.v_reset, *scalar_bounds,
    )
    constexprs = dict(
        SAVE_H=save_h, X_BCAST=x3.stride(1) == 0, SOFT_RESET=spec.reset == "soft", HAS_V_RESET=spec.v_reset != 0.0,
        DELAYED_RESET=spec.reset == "subtract_next", TAU_VEC=tau_vec is not None, THRESH_VEC=thresh_vec is not None,
        HAS_V0=v0 is not None, WRITE_V=v_out is not None,
        HW_CVT=not INTERPRETED, **({"WRITE_BITS": True} if bits is not None else {}),
    )
    return _lif_fwd_kernel, args, constexprs


def _bwd_launch(gs3, h3, gx3, B: int, T: int, N: int, tau, thresh, gamma=None, spec: LIFSpec | None = None,
                tau_vec=None, thresh_vec=None, grad_v=None, v0=None, grad_v0=None, grad_tau=None, grad_thresh=None):
    """(kernel, positional args, constexprs) of the backward launch for [B, T, N] views.

    Optional [B, N] views: ``grad_v`` (final potential's gradient), ``v0``; outputs ``grad_v0``
    (contiguous fp32 [B, N]) and ``grad_tau``/``grad_thresh`` (fp32 [rows of tiles, N] partial sums).
    """
    spec = _spec_of(gamma, spec)
    args = (
        gs3, h3, gx3, _or(tau_vec, gs3), _or(thresh_vec, gs3), _or(grad_v, gs3), _or(v0, gs3), _or(grad_v0, gs3),
        _or(grad_tau, gs3), _or(grad_thresh, gs3),
        B, T, N, *gs3.stride(), *h3.stride(), *gx3.stride(),
        *(grad_v.stride() if grad_v is not None else (0, 0)), *(v0.stride() if v0 is not None else (0, 0)),
        0.0 if tau_vec is not None else tau, 0.0 if thresh_vec is not None else thresh, spec.v_reset,
        *_surrogate_constants(spec),
    )
    constexprs = dict(
        SURROGATE=spec.surrogate_id, SOFT_RESET=spec.reset in ("soft", "subtract_next"), HAS_V_RESET=spec.v_reset != 0.0,
        DELAYED_RESET=spec.reset == "subtract_next", DETACH_RESET=spec.detach_reset, TAU_VEC=tau_vec is not None, THRESH_VEC=thresh_vec is not None,
        HAS_GV=grad_v is not None, HAS_V0=v0 is not None, WRITE_GV0=grad_v0 is not None,
        NEED_TAU=grad_tau is not None, NEED_THRESH=grad_thresh is not None, HW_CVT=not INTERPRETED,
    )
    return _lif_bwd_kernel, args, constexprs


def _or(tensor, placeholder):
    return placeholder if tensor is None else tensor


def _launch(kernel, B: int, N: int, args, constexprs: dict) -> None:
    """Launch ``kernel`` over the tiles of a ``[B, N]`` neuron plane (see :func:`_block_config`)."""
    _log_interpreter_notice()
    grid, kwargs = _launch_config(B, N, constexprs)
    kernel[grid](*args, **kwargs)


def lif_forward(
    x: torch.Tensor,
    tau,
    thresh,
    gamma: float | None = None,
    *,
    spec: LIFSpec | None = None,
    save_h: bool = True,
    v0: torch.Tensor | None = None,
    return_v: bool = False,
    time_major: bool = False,
    out: torch.Tensor | None = None,
    h_out: torch.Tensor | None = None,
    bits_out: torch.Tensor | None = None,
):
    """Spikes of the LIF layer for ``x`` of shape ``[B, T, ...]`` and the state the backward needs.

    Returns ``(spikes, h)``, or ``(spikes, h, v)`` when ``return_v``: spikes in ``x.dtype`` and
    shape; the pre-reset potential ``h`` (fp32 for fp32 input, threshold-consistently rounded
    ``x.dtype`` otherwise), or ``None`` when ``save_h`` is False; the final potential ``v`` in fp32
    (the kernel's own precision, so that a chunked sequence continues exactly). ``tau``/``thresh``:
    numbers or tensors broadcastable over ``x.shape[2:]``; ``v0``: initial potential of one step's
    shape (may be a broadcast view). ``spec``: the neuron's options (``gamma`` is only checked
    here: the forward does not use the surrogate). ``out`` / ``h_out`` may supply the output
    buffers (any strides that view as ``[B, T, N]``); ``time_major`` allocates them ``[T, B, ...]``.
    ``bits_out``: a uint8 ``[B, T, ceil(N/8)]`` tensor (unit last stride) that the kernel also fills
    with the spikes bit-packed (:mod:`snn.spikebits`; for :mod:`snn.memory`).
    """
    _check_input(x)
    tau, thresh, gamma = _check_params(tau, thresh, gamma)
    spec = _spec_of(gamma, spec)
    B, T = x.shape[0], x.shape[1]
    neuron_shape = x.shape[2:]
    N = math.prod(neuron_shape)
    h_dtype = saved_h_dtype(x.dtype, spec)

    spikes = _empty(x.shape, x.dtype, x.device, time_major) if out is None else out
    s3 = _check_out(spikes, "out", x.shape, x.dtype, x.device, B, T, N)
    h = None
    if save_h:
        h = _empty(x.shape, h_dtype, x.device, time_major) if h_out is None else h_out
        h3 = _check_out(h, "h_out", x.shape, h_dtype, x.device, B, T, N)
    v = _empty((B, *neuron_shape), torch.float32, x.device) if return_v else None
    if x.numel() == 0:
        if return_v:
            v.copy_(v0 if v0 is not None else torch.zeros_like(v))
            return spikes, h, v
        return spikes, h
    if not save_h:
        h3 = s3  # placeholder pointer, never written (SAVE_H=False)

    tau_vec = _neuron_vector(tau, neuron_shape, x.device)
    thresh_vec = _neuron_vector(thresh, neuron_shape, x.device)
    bounds = None
    if thresh_vec is not None and save_h and h_dtype != torch.float32:
        bounds = torch.stack(_side_bounds(thresh_vec, h_dtype)).to(x.device)
    x3 = _as_3d(x, B, T, N)
    v0_2d = None if v0 is None else _as_2d(v0, B, N)
    kernel, args, constexprs = _fwd_launch(
        x3, s3, h3, B, T, N, tau, thresh, save_h, spec,
        tau_vec=tau_vec, thresh_vec=thresh_vec, bounds=bounds, v0=v0_2d, v_out=None if v is None else v.view(B, N),
        bits=None if bits_out is None else _check_bits(bits_out, B, T, N, x.device),
    )
    _launch(kernel, B, N, args, constexprs)
    return (spikes, h, v) if return_v else (spikes, h)


def lif_backward(
    grad_spikes: torch.Tensor | None,
    h: torch.Tensor,
    tau,
    thresh,
    gamma: float | None = None,
    *,
    spec: LIFSpec | None = None,
    grad_v: torch.Tensor | None = None,
    v0: torch.Tensor | None = None,
    need_tau: bool = False,
    need_thresh: bool = False,
    need_v0: bool = False,
    grad_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
):
    """Gradients given the spikes' gradient and the ``h`` saved by :func:`lif_forward`.

    Returns ``grad_x`` (a new tensor of ``h``'s shape and of the input's dtype ``grad_dtype``,
    default ``h.dtype``; ``out`` may supply it), or
    ``(grad_x, grad_tau, grad_thresh, grad_v0)`` when any of ``need_*`` is set (None where not
    needed). ``grad_spikes`` may be None when only the final potential has a gradient (``grad_v``).
    Reads but never writes ``h``, so a retained graph can run the backward again.
    """
    _check_input(h, "h")
    grad_dtype = h.dtype if grad_dtype is None else grad_dtype
    if grad_spikes is None:
        grad_spikes = torch.zeros((), dtype=grad_dtype, device=h.device).expand(h.shape)
    _check_input(grad_spikes, "grad_spikes")
    tau, thresh, gamma = _check_params(tau, thresh, gamma)
    spec = _spec_of(gamma, spec)
    if grad_spikes.shape != h.shape or grad_spikes.device != h.device:
        raise _fail(
            ValueError,
            f"grad_spikes {tuple(grad_spikes.shape)} on {grad_spikes.device} does not match "
            f"the saved potential {tuple(h.shape)} on {h.device}",
        )
    B, T = h.shape[0], h.shape[1]
    neuron_shape = h.shape[2:]
    N = math.prod(neuron_shape)
    grad_x = _empty(h.shape, grad_dtype, h.device) if out is None else out
    gx3 = _check_out(grad_x, "out", h.shape, grad_dtype, h.device, B, T, N)
    extras = need_tau or need_thresh or need_v0
    if h.numel() == 0:
        if not extras:
            return grad_x
        zeros = (lambda p: None if not isinstance(p, torch.Tensor) else torch.zeros_like(p))
        return grad_x, zeros(tau) if need_tau else None, zeros(thresh) if need_thresh else None, \
            (torch.zeros_like(v0) if need_v0 else None)

    tile_rows = triton.cdiv(B, _block_config(B, N)[0])
    partial = (lambda need: _empty((tile_rows, N), torch.float32, h.device) if need else None)
    grad_tau_rows, grad_thresh_rows = partial(need_tau), partial(need_thresh)
    grad_v0 = _empty((B, N), torch.float32, h.device) if need_v0 else None
    gs3 = _as_3d(grad_spikes, B, T, N)
    h3 = _as_3d(h, B, T, N)
    kernel, args, constexprs = _bwd_launch(
        gs3, h3, gx3, B, T, N, tau, thresh, spec=spec,
        tau_vec=_neuron_vector(tau, neuron_shape, h.device), thresh_vec=_neuron_vector(thresh, neuron_shape, h.device),
        grad_v=None if grad_v is None else _as_2d(grad_v, B, N), v0=None if v0 is None or not (need_tau or (need_thresh and spec.reset == "subtract_next"))
        else _as_2d(v0, B, N),
        grad_v0=grad_v0, grad_tau=grad_tau_rows, grad_thresh=grad_thresh_rows,
    )
    _launch(kernel, B, N, args, constexprs)
    if not extras:
        return grad_x
    return (
        grad_x,
        None if grad_tau_rows is None else _reduce_to_param(grad_tau_rows, tau, neuron_shape),
        None if grad_thresh_rows is None else _reduce_to_param(grad_thresh_rows, thresh, neuron_shape),
        None if grad_v0 is None else grad_v0.view(B, *neuron_shape).to(v0.dtype),
    )


def _as_2d(t: torch.Tensor, B: int, N: int) -> torch.Tensor:
    """One step's [B, ...] tensor (possibly broadcast) as a [B, N] view, or a contiguous copy."""
    try:
        return t.view(B, N)
    except RuntimeError:
        return t.reshape(B, N)


# ----------------------------------------------------------------------------------------------
# registered operators (autograd, fake tensors, vmap: snn/lif/ops.py)
# ----------------------------------------------------------------------------------------------


def _op_forward(x, tau, thresh, spec: LIFSpec, v0, save_h: bool, return_v: bool, time_major: bool):
    outputs = lif_forward(x, tau, thresh, spec=spec, save_h=save_h, v0=v0, return_v=return_v, time_major=time_major)
    return outputs[0], outputs[1], (outputs[2] if return_v else None)


def _op_backward(grad_spikes, h, tau, thresh, spec: LIFSpec, grad_v, v0, need_tau: bool, need_thresh: bool,
                 need_v0: bool, grad_dtype: torch.dtype, time_major: bool):
    out = _empty(h.shape, grad_dtype, h.device, time_major)
    grads = lif_backward(grad_spikes, h, tau, thresh, spec=spec, grad_v=grad_v, v0=v0, need_tau=need_tau,
                         need_thresh=need_thresh, need_v0=need_v0, grad_dtype=grad_dtype, out=out)
    return grads if isinstance(grads, tuple) else (grads, None, None, None)


# The registered operators snn::lif_fwd_triton / snn::lif_bwd_triton around the launchers (looked up at
# call time, so tests can wrap them); ``h`` is saved in :func:`saved_h_dtype`, the final ``v`` in fp32.
# On CUDA, Inductor sees one opaque op per direction (not torch.library.triton_op: the launchers do
# host-side work per call, e.g. the 16-bit side bounds, that is not traceable).
_triton_core = register_lif_ops(
    "triton", _op_forward, _op_backward,
    h_dtype=saved_h_dtype, v_dtype=torch.float32, check=_check_input,
)

# Spikes of a LIF layer (the neuron of snn.lif.spec), fused into one kernel per direction.
lif_spike = make_lif_function(_triton_core, "lif_spike", h_gradient=differentiable_h)
