"""Fused Leaky Integrate-and-Fire (LIF) layer: one Triton kernel for the forward, one for the backward.

Semantics (those of :func:`snn.lif.lif_reference`, which is what the tests prove this against).
``x`` has shape ``[B, T, ...]``; every neuron ``(b, n)`` runs the recurrence below over ``t``,
with ``v`` starting at 0 and all arithmetic in fp32 whatever the input dtype::

    h_t = v_{t-1} * tau + x_t          # pre-reset potential: product rounded, then sum (no FMA)
    s_t = (h_t - thresh > 0)           # strict Heaviside, returned in the input dtype
    v_t = h_t * (1 - s_t)              # hard reset as a product, so h = +inf spikes and leaves NaN

Backward. Write ``sg(h) = max(0, gamma - |h - thresh|) / gamma**2`` for the triangular surrogate of
``ds/dh`` and ``g_s`` for the incoming gradient of the spikes. ``v_t`` feeds the next step only
through ``h_{t+1} = v_t * tau + x_{t+1}``, so the gradient reaching ``v_t`` is
``c_t = tau * g_h[t+1]`` (``c_{T-1} = 0``: the last potential is unused). ``h_t`` reaches the loss
by three paths, the spike output, the reset product ``v_t = h_t * (1 - s_t)`` through its first
factor, and the same product through ``s_t`` in its second factor::

    dL/ds_t = g_s[t] + c_t * d(h_t * (1 - s_t))/ds_t = g_s[t] - c_t * h_t
    g_h[t]  = c_t * (1 - s_t)  +  dL/ds_t * sg(h_t)
            = c_t * (1 - s_t)  +  (g_s[t] - c_t * h_t) * sg(h_t)

The reset is not detached, so the surrogate also carries the gradient of the reset: a neuron
near threshold that spikes loses ``h_t`` of potential, and ``-c_t * h_t * sg(h_t)`` is what that
loss costs according to the surrogate. Because ``h_t = v_{t-1} * tau + x_t``, ``g_x[t] = g_h[t]``
and ``c_{t-1} = tau * g_h[t]``: a reverse-time scan that needs ``h_t`` and ``s_t`` only. The kernel
evaluates the expression in the grouping written above because that is the order reference
autograd rounds in (``g_s - c*h`` is accumulated on the spike, multiplied by the surrogate, then
added to ``c * (1 - s)``), which keeps fp32 gradients equal to the reference to the last bit on
the interpreter. The last step is peeled: there ``g_h = g_s * sg(h)`` with no ``c`` term at all
(reference autograd never visits the unused last reset, so ``0 * h`` never makes a NaN when h is
infinite).

Saved state (counted by a test with ``torch.autograd.graph.saved_tensors_hooks``). The reference
saves 16 bytes per fp32 neuron-step (``h - thresh`` and ``s`` for the surrogate, ``1 - s`` and ``h``
for the reset product). This kernel saves only ``h``:

* fp32 input: ``h`` in fp32, 4 bytes per neuron-step. The backward recomputes ``s`` exactly.
* fp16 / bf16 input: ``h`` rounded to the input dtype, 2 bytes per neuron-step, with
  threshold-consistent rounding: when the round-to-nearest value ``q`` lands on the other side of
  ``thresh`` than the fp32 ``h`` did (``(q - thresh > 0) != s``), the neighbouring representable
  value on the correct side is stored instead (a one-ulp nudge on the bit pattern). The backward
  therefore recovers the forward's spikes exactly; only ``c * h`` and ``sg(h)`` see the rounding.
  A finite ``h`` past the 16-bit range (fp16 above 65504) is saved as the largest finite value,
  not inf, so the backward does not turn ``c * h`` into inf or NaN where fp32 would not.

Neither ``x`` nor the spikes are saved. Under ``torch.no_grad`` (or when ``x`` does not require
grad) ``h`` is not written at all.

Memory traffic per neuron-step, the minimum for this op (the kernel moves exactly this):
forward reads ``x`` and writes ``s`` and ``h`` (12 B fp32, 6 B fp16/bf16; 8 B / 4 B without grad),
backward reads ``g_s`` and ``h`` and writes ``g_x`` (12 B fp32, 6 B fp16/bf16). The eager reference
runs about eight elementwise kernels per step, each reading and writing whole ``[B, N]`` tensors.

Floating-point contraction. On the GPU the compiler may fuse ``v * tau + x`` into one FMA, which
rounds once instead of twice and flips a spike whenever the unfused sum lands exactly on
``thresh``. We choose exactness: both kernels are launched with ``enable_fp_fusion=False`` (a
Triton compile option: no LLVM contraction, ``ptxas --fmad=false``), so every product and sum is
rounded like eager PyTorch. The interpreter ignores the option and evaluates each op separately
in numpy, which is unfused too. A test constructs inputs where the two roundings disagree.

Layout. ``x`` is viewed as ``[B, T, N]`` (no copy when the trailing dims collapse; a copy only when
they do not) and read through its strides, so transposed views and a stride-0 time dimension
(``h.unsqueeze(1).expand(B, T, N)``) are read in place. Outputs are contiguous. A 1-D grid
enumerates ``[BLOCK_B, BLOCK_N]`` tiles of the ``(B, N)`` neuron plane, N fastest; each program
owns its tile for all T steps (``T`` is a runtime loop bound and not specialised on, so long
sequences do not recompile). Offsets are int64, so tensors past 2**31 elements are addressed
correctly.

Interpreter. When no CUDA device is present and the user has not chosen (``TRITON_INTERPRET`` unset
and ``triton.knobs.runtime.interpret`` not set explicitly), importing this module sets
``TRITON_INTERPRET=1`` before the kernels are decorated (Triton 3.x reads it through
``triton.knobs.runtime.interpret`` at decoration time, so this works even when ``triton`` was
imported earlier), and the first launch logs one line saying the kernel runs in the interpreter.
Only builtins of ``triton.language`` are used inside the kernels (no ``tl.cdiv``/``tl.zeros``,
which are themselves ``@triton.jit`` functions and were decorated for the GPU if ``triton`` had been
imported before the interpreter was chosen). The interpreter truncates fp32 -> bf16 casts, so
bf16 is converted by hand with the bit-exact round-to-nearest-even that PyTorch and
``cvt.rn.bf16.f32`` use.

Compiled code (checked without a GPU by ``tests/test_static_sm90.py``, report in
``benchmarks/RESULTS.md``): each step's loads are issued before the previous step's stores (both
kernels), a stride-0 time input is loaded once per tile (``X_BCAST``, decided by the launcher), and
compiled launches convert with the hardware's ``cvt.rn`` (``HW_CVT``; the interpreter keeps the
hand-written exact path). Contiguous, 16-byte-aligned tensors with N % 16 == 0 get 128-bit accesses;
other N or an offset view fall back to scalar accesses on that tensor (about 2x the instructions).

Limits: float16, bfloat16 and float32 inputs (float64 is rejected: the kernel computes in fp32);
``tau``, ``thresh`` and ``gamma`` are Python numbers (no gradient to them); no double backward.
"""

from __future__ import annotations

import logging
import math
import numbers
import os

import torch

from snn.neuron import LIFSpec, make_lif_function


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
from torch.autograd.function import once_differentiable  # noqa: E402

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
def _lif_step(v, x, tau, thresh):
    """One forward step from ``v_{t-1}`` and ``x_t``: (pre-reset h_t, spike s_t as fp32 0/1, v_t)."""
    h = v * tau + x  # two roundings, as eager PyTorch (launched with enable_fp_fusion=False)
    spike = ((h - thresh) > 0).to(tl.float32)
    v = h * (1.0 - spike)  # a product, not a select: h = +inf gives NaN exactly as the reference
    return h, spike, v


@triton.jit
def _lif_store(s_ptrs, h_ptrs, h, spike, mask, bounds, SAVE_H: tl.constexpr, HW_CVT: tl.constexpr):
    """Store one step's spikes and, when SAVE_H, its saved potential (16-bit: side-consistent)."""
    tl.store(s_ptrs, _from_fp32(spike, s_ptrs.dtype.element_ty, HW_CVT), mask=mask)
    if SAVE_H:
        if h_ptrs.dtype.element_ty == tl.float32:
            tl.store(h_ptrs, h, mask=mask)
        else:
            tl.store(h_ptrs, _round_to_side(h, spike, bounds, h_ptrs.dtype.element_ty, HW_CVT), mask=mask)


@triton.jit(do_not_specialize=["T"])
def _lif_fwd_kernel(
    x_ptr,  # *{fp16,bf16,fp32} input current, viewed as [B, T, N] with arbitrary strides
    s_ptr,  # *x.dtype output spikes [B, T, N]
    h_ptr,  # *{fp32 (fp32 input), x.dtype (16-bit input)} saved pre-reset potential [B, T, N]
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
    tau,  # fp32 leak factor
    thresh,  # fp32 firing threshold
    lo_fire,  # fp32 clamp bounds of the 16-bit saved h: after a spike (see _round_to_side)
    hi_fire,
    lo_rest,  # ... and without a spike
    hi_rest,
    SAVE_H: tl.constexpr,  # write h for the backward (False under no_grad)
    X_BCAST: tl.constexpr,  # stride_xt == 0: load x once per tile, not once per step
    HW_CVT: tl.constexpr,  # round with the hardware's cvt.rn (compiled GPU code, not the interpreter)
    BLOCK_B: tl.constexpr,  # tile rows (batch direction)
    BLOCK_N: tl.constexpr,  # tile columns (neuron direction, contiguous)
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

    # Step 0, then for each later step: load x_t, store step t-1, compute step t. The load is
    # issued before the previous step's stores (the compiler cannot move a load above a store: it
    # must assume they alias), so a warp keeps it in flight while it stores; and no register copy
    # is needed, as there would be for a prefetch of x_{t+1}. Loads in the loop need no ``other``:
    # masked-off lanes are never stored, and zero-filling them costs an instruction per register.
    x = _to_fp32(tl.load(x_ptrs, mask=mask))  # when X_BCAST, the one load of x for all steps
    h, spike, v = _lif_step(tl.full([BLOCK_B, BLOCK_N], 0.0, tl.float32), x, tau, thresh)
    for _ in range(1, T):
        if not X_BCAST:
            x_ptrs += stride_xt
            x = _to_fp32(tl.load(x_ptrs, mask=mask))
        _lif_store(s_ptrs, h_ptrs, h, spike, mask, (lo_fire, hi_fire, lo_rest, hi_rest), SAVE_H, HW_CVT)
        s_ptrs += stride_st
        h_ptrs += stride_ht
        h, spike, v = _lif_step(v, x, tau, thresh)
    _lif_store(s_ptrs, h_ptrs, h, spike, mask, (lo_fire, hi_fire, lo_rest, hi_rest), SAVE_H, HW_CVT)


@triton.jit
def _surrogate(h, thresh, gamma, inv_gamma2):
    """max(0, gamma - |h - thresh|) * (1 / gamma**2), rounded as the reference; NaN propagates."""
    sg = gamma - tl.abs(h - thresh)
    sg = tl.where(sg < 0, 0.0, sg)  # clamp(min=0) that keeps NaN, as torch.clamp does
    return sg * inv_gamma2


@triton.jit(do_not_specialize=["T"])
def _lif_bwd_kernel(
    gs_ptr,  # *{fp16,bf16,fp32} incoming gradient of the spikes [B, T, N], arbitrary strides
    h_ptr,  # *{fp32, fp16, bf16} saved pre-reset potential [B, T, N] (from the forward)
    gx_ptr,  # *h.dtype output gradient of the input [B, T, N]
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
    tau,  # fp32 leak factor
    thresh,  # fp32 firing threshold
    gamma,  # fp32 surrogate half-width
    inv_gamma2,  # fp32 1 / gamma / gamma, rounded once on the host as the reference does
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

    # Start at the last step and walk back.
    last = (T - 1).to(tl.int64)
    gs_ptrs = gs_ptr + offs_b[:, None] * stride_gsb + offs_n[None, :] * stride_gsn + last * stride_gst
    h_ptrs = h_ptr + offs_b[:, None] * stride_hb + offs_n[None, :] * stride_hn + last * stride_ht
    gx_ptrs = gx_ptr + offs_b[:, None] * stride_gxb + offs_n[None, :] * stride_gxn + last * stride_gxt

    # t = T - 1: the last potential is unused, so only the spike path contributes.
    g_s = _to_fp32(tl.load(gs_ptrs, mask=mask, other=0.0))
    h = _to_fp32(tl.load(h_ptrs, mask=mask, other=0.0))
    g_h = g_s * _surrogate(h, thresh, gamma, inv_gamma2)
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
        spike = ((h - thresh) > 0).to(tl.float32)  # the forward's spike, exactly (see _round_to_side)
        g_h = c * (1.0 - spike) + (g_s - c * h) * _surrogate(h, thresh, gamma, inv_gamma2)
        c = g_h * tau
    tl.store(gx_ptrs, _from_fp32(g_h, gx_ptr.dtype.element_ty, HW_CVT), mask=mask)


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


def _check_params(tau, thresh, gamma) -> tuple[float, float, float]:
    for name, value in (("tau", tau), ("thresh", thresh), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _fail(TypeError, f"{name} must be a Python number, got {type(value).__name__}")
    if gamma == 0:
        raise _fail(ValueError, "gamma must be non-zero (the surrogate is max(0, gamma - |h - thresh|) / gamma**2)")
    return float(tau), float(thresh), float(gamma)


def _as_3d(t: torch.Tensor, B: int, T: int, N: int) -> torch.Tensor:
    """[B, T, ...] -> [B, T, N]: a view when the trailing dims collapse, else a contiguous copy."""
    try:
        return t.view(B, T, N)
    except RuntimeError:
        return t.reshape(B, T, N)


def _empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
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
        _log.warning("kernels.lif: the Triton LIF kernel runs in the Triton interpreter on CPU (TRITON_INTERPRET=1): correct but slow.")


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


def _side_bounds(thresh: float, dtype: torch.dtype) -> tuple[float, float, float, float]:
    """``(lo_fire, hi_fire, lo_rest, hi_rest)``: the clamp intervals of :func:`_round_to_side`.

    ``thresh`` is first rounded to fp32 (the kernel compares in fp32). ``lo_fire`` is the smallest
    ``dtype`` value > thresh, ``hi_rest`` the largest <= thresh; ``hi_fire`` = max(lo_fire, big)
    (inf when thresh >= big: the nudge past big is inf) and ``lo_rest`` = min(hi_rest, -big), with
    ``hi_rest`` capped at big (thresh = inf). A zero ``lo_fire`` / ``hi_rest`` becomes the fp32
    subnormal of the nudge's sign (-2**-149 / +2**-149): it rounds to the zero the nudge makes
    (-0 above, +0 below) and, unlike a signed zero, never ties with an ``h`` of +-0 in the
    kernel's max/min (whose choice between +0 and -0 is not pinned down). A NaN thresh (nothing
    spikes) leaves only the saturation. For float32 nothing is rounded: all four are thresh.
    """
    t = torch.tensor(thresh, dtype=torch.float32)
    if dtype == torch.float32:
        return (t.item(),) * 4
    big = torch.finfo(dtype).max
    if t.isnan():
        return big, big, -big, big
    q = t.to(dtype)  # round to nearest (inf passes through)
    inf = torch.tensor(math.inf, dtype=dtype)
    below = torch.where(q.float() > t, torch.nextafter(q, -inf), q).float().item()
    above = torch.where(q.float() <= t, torch.nextafter(q, inf), q).float().item()
    below = 2.0**-149 if below == 0 else min(below, big)
    above = -(2.0**-149) if above == 0 else above
    return above, max(above, big), min(below, -big), below


def _fwd_launch(x3, s3, h3, B: int, T: int, N: int, tau: float, thresh: float, save_h: bool):
    """(kernel, positional args, constexprs) of the forward launch for [B, T, N] views."""
    args = (x3, s3, h3, B, T, N, *x3.stride(), *s3.stride(), *h3.stride(), tau, thresh, *_side_bounds(thresh, h3.dtype))
    constexprs = dict(SAVE_H=save_h, X_BCAST=x3.stride(1) == 0, HW_CVT=not INTERPRETED)
    return _lif_fwd_kernel, args, constexprs


def _bwd_launch(gs3, h3, gx3, B: int, T: int, N: int, tau: float, thresh: float, gamma: float):
    """(kernel, positional args, constexprs) of the backward launch for [B, T, N] views."""
    args = (gs3, h3, gx3, B, T, N, *gs3.stride(), *h3.stride(), *gx3.stride(), tau, thresh, gamma, 1.0 / gamma / gamma)
    return _lif_bwd_kernel, args, dict(HW_CVT=not INTERPRETED)


def _launch(kernel, B: int, N: int, args, constexprs: dict) -> None:
    """Launch ``kernel`` over the tiles of a ``[B, N]`` neuron plane (see :func:`_block_config`)."""
    _log_interpreter_notice()
    grid, kwargs = _launch_config(B, N, constexprs)
    kernel[grid](*args, **kwargs)


def lif_forward(
    x: torch.Tensor,
    tau: float,
    thresh: float,
    gamma: float,
    *,
    save_h: bool = True,
    out: torch.Tensor | None = None,
    h_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Spikes of the LIF layer for ``x`` of shape ``[B, T, ...]`` and the state the backward needs.

    Returns ``(spikes, h)``: spikes in ``x.dtype`` and shape, and the pre-reset potential ``h``
    (fp32 for fp32 input, threshold-consistently rounded ``x.dtype`` otherwise), or ``None`` when
    ``save_h`` is False. ``out`` / ``h_out`` may supply the output buffers (any strides that view
    as ``[B, T, N]``).
    """
    _check_input(x)
    tau, thresh, gamma = _check_params(tau, thresh, gamma)
    B, T = x.shape[0], x.shape[1]
    N = math.prod(x.shape[2:])
    h_dtype = torch.float32 if x.dtype == torch.float32 else x.dtype

    spikes = _empty(x.shape, x.dtype, x.device) if out is None else out
    s3 = _check_out(spikes, "out", x.shape, x.dtype, x.device, B, T, N)
    h = None
    if save_h:
        h = _empty(x.shape, h_dtype, x.device) if h_out is None else h_out
        h3 = _check_out(h, "h_out", x.shape, h_dtype, x.device, B, T, N)
    if x.numel() == 0:
        return spikes, h
    if not save_h:
        h3 = s3  # placeholder pointer, never written (SAVE_H=False)

    x3 = _as_3d(x, B, T, N)
    kernel, args, constexprs = _fwd_launch(x3, s3, h3, B, T, N, tau, thresh, save_h)
    _launch(kernel, B, N, args, constexprs)
    return spikes, h


def lif_backward(
    grad_spikes: torch.Tensor,
    h: torch.Tensor,
    tau: float,
    thresh: float,
    gamma: float,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient of the input given the spikes' gradient and the ``h`` saved by :func:`lif_forward`.

    Returns a new tensor of ``h``'s shape and the input dtype (``h.dtype``); reads but never
    writes ``h``, so a retained graph can run the backward again.
    """
    _check_input(grad_spikes, "grad_spikes")
    _check_input(h, "h")
    tau, thresh, gamma = _check_params(tau, thresh, gamma)
    if grad_spikes.shape != h.shape or grad_spikes.device != h.device:
        raise _fail(
            ValueError,
            f"grad_spikes {tuple(grad_spikes.shape)} on {grad_spikes.device} does not match "
            f"the saved potential {tuple(h.shape)} on {h.device}",
        )
    B, T = h.shape[0], h.shape[1]
    N = math.prod(h.shape[2:])
    grad_x = _empty(h.shape, h.dtype, h.device) if out is None else out
    gx3 = _check_out(grad_x, "out", h.shape, h.dtype, h.device, B, T, N)
    if h.numel() == 0:
        return grad_x

    gs3 = _as_3d(grad_spikes, B, T, N)
    h3 = _as_3d(h, B, T, N)
    kernel, args, constexprs = _bwd_launch(gs3, h3, gx3, B, T, N, tau, thresh, gamma)
    _launch(kernel, B, N, args, constexprs)
    return grad_x


# ----------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------


class LIFSpikeFunction(torch.autograd.Function):
    """Fused LIF: forward kernel saves only ``h``; backward kernel runs the reverse-time scan."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, tau: float, thresh: float, gamma: float, save_h: bool = True) -> torch.Tensor:
        spikes, h = lif_forward(x, tau, thresh, gamma, save_h=save_h and ctx.needs_input_grad[0])
        if h is not None:
            ctx.save_for_backward(h)
        ctx.params = (float(tau), float(thresh), float(gamma))
        return spikes

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes: torch.Tensor):
        (h,) = ctx.saved_tensors
        return lif_backward(grad_spikes, h, *ctx.params), None, None, None, None


def _triton_core(x, tau, thresh, spec: LIFSpec, v0, return_v, return_h, time_major):
    """The shared signature (:func:`snn.neuron.make_lif_function`) around :class:`LIFSpikeFunction`."""
    if not spec.is_seed or v0 is not None or return_v or return_h or time_major or isinstance(tau, torch.Tensor) \
            or isinstance(thresh, torch.Tensor):
        raise _fail(ValueError, "the Triton kernel implements the seed's neuron only (hard reset to 0, triangle "
                                "surrogate, number tau/thresh, [B, T, ...], no state); use backend 'torch'")
    # Grad mode is off inside Function.forward, so whether a backward can follow is decided here.
    save_h = torch.is_grad_enabled() and x.requires_grad
    return LIFSpikeFunction.apply(x, tau, thresh, spec.surrogate_alpha, save_h), None, None


# Spikes of a LIF layer (the neuron of snn.neuron), fused into one kernel per direction.
lif_spike = make_lif_function(_triton_core, "lif_spike")
