"""The fused LIF's Triton kernels, ``_lif_fwd_kernel`` and ``_lif_bwd_kernel``, and the ``@triton.jit``
helpers they inline; nothing else (their launch is :mod:`kernels.lif.triton_launch`).

The neuron and the one derivation of its forward and backward are :mod:`snn.lif.spec`; these
kernels implement it op for op, in fp32 whatever the input dtype. Each program owns a
``[BLOCK_B, BLOCK_N]`` tile of the ``(B, N)`` neuron plane for all T steps (``T`` is a runtime loop
bound) and addresses it with int64 offsets through the tensors' strides; each step's loads are
issued before the previous step's stores. Only builtins of ``triton.language`` are used, so that
the kernels also run in Triton's interpreter, which :mod:`kernels.lif.triton_interpreter` chooses
before they are decorated (imported first below).
"""

from __future__ import annotations

from . import triton_interpreter  # noqa: F401  (first: picks the interpreter before the kernels are decorated)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

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
    :func:`kernels.lif.triton_bounds._side_bounds`: the saved value is the nearest DTYPE value to
    ``h`` clamped to ``[lo_fire, hi_fire]`` for a spike and to ``[lo_rest, hi_rest]`` otherwise. ``lo_fire`` is the
    smallest DTYPE value above thresh and ``hi_rest`` the largest at or below it: only an ``h``
    between those two can round across thresh, and there the bound on its side is the answer (the
    one-ulp nudge). The other two bounds are +-big (the largest finite DTYPE value), so a finite
    ``h`` saturates instead of rounding to inf; an infinite or NaN ``h`` passes through. A select
    of the bounds, a max, a min and a select of ``h``: bit-identical (NaN: a NaN) to the rule it
    replaced (round to nearest, saturate, then nudge one ulp toward the right side), which
    ``tests/proofs/prove_round_to_side.py`` checks over all 2**32 fp32 values.

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
    bounds_ptr,  # *fp32 [4, N] per-neuron clamp bounds of the 16-bit save (THRESH_VEC; see triton_bounds._side_bounds)
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
    num_pid_n = (N + BLOCK_N - 1) // BLOCK_N  # not tl.cdiv: see kernels/lif/triton_interpreter.py
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
    """``sg(z)`` of snn/lif/spec.py (``surrogate_gradient``), op for op; ``sg_a``/``sg_b`` from
    :func:`snn.lif.spec.surrogate_constants`."""
    if SURROGATE == 0:  # triangle: max(0, alpha - |z|) * (1 / alpha**2); a = alpha, b = 1 / alpha / alpha
        sg = sg_a - tl.abs(z)
        sg = tl.where(sg < 0, 0.0, sg)  # clamp(min=0) that keeps NaN, as torch.clamp does
        return sg * sg_b
    elif SURROGATE == 1:  # sigmoid: (1 - sig) * sig * alpha, sig = sigmoid(z * alpha); a = alpha
        sig = 1.0 / (1.0 + tl.exp(-(z * sg_a)))  # not tl.sigmoid, a @jit function (see triton_interpreter.py)
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
    # standard library (see kernels/lif/triton_interpreter.py).
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
    sg_a,  # fp32 surrogate constants (see _surrogate / snn.lif.spec.surrogate_constants), rounded once on the host
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

