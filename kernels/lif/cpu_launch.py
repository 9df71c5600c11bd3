"""The fused CPU LIF: the whole time loop in one pass forward and one reverse pass backward, in C.

The neuron, its options and both recurrences are specified once, in :mod:`snn.lif.spec`; the kernels
are in ``kernels/lif/lif_cpu.c`` (read its header for the layout, the tiling and the rounding rules).
The source is built with the system C compiler at first use and called through :mod:`ctypes`.

Why C and not ``torch.compile``: the fused loop keeps ``v`` in a per-tile buffer, reads ``x`` and
writes the spikes once, and saves only the input ``x`` (which the caller holds anyway; the backward
recomputes ``h``); benchmarks/RESULTS.md compares it with Inductor's code shape by shape. It is built
once per machine (the build time is logged and kept in :data:`BUILD_INFO`; Inductor compiles per shape
and dtype, and again when the last batch of an epoch is smaller) and has no first-call tracing cost.

Build and cache: :mod:`snn.kernels.lif.cpu_build`; the allocator of large outputs: :mod:`snn.kernels.lif.cpu_alloc`.
This module launches the kernels (ctypes structs filled from the tensors' pointers and strides),
wraps them in an autograd Function and the registered op, and dispatches. Where no compiler is found
or the build fails, the ``torch`` backend falls back to the eager implementation (:mod:`snn.lif.eager`).

Exactness: each operation is rounded as PyTorch rounds it (fp32, or fp32 then the 16-bit dtype,
round to nearest even; no fused multiply-add: ``-ffp-contract=off``), so spikes equal the
reference's in every dtype and, for the triangle surrogate, fp32 input gradients equal reference
autograd's bit for bit. Gradients of tensor ``tau``/``thresh`` are fp32 sums over time per
(batch row, neuron), then over the batch in a fixed order: deterministic, independent of the thread
count, and within 1e-6 relative of the eager backend's (which sums in another order).
"""

from __future__ import annotations

import ctypes
import functools
import math
import threading

import torch

from snn.lif import ops as lif_ops
from snn.lif.eager import differentiable_h, eager_core
from snn.lif.ops import _plain_eager, register_lif_ops
from snn.lif.signature import make_lif_function
from snn.lif.spec import LIFSpec, empty_like_input, surrogate_constants
from snn.kernels.lif import cpu_build
from snn.kernels.lif.cpu_alloc import LARGE_OUTPUT_BYTES, OutputCache, output_cache_limit_from_environment  # noqa: F401
from snn.kernels.lif.cpu_build import BUILD_INFO, DTYPES, PARAM_ROWS, _BwdArgs, _FwdArgs, _Surrogate, _reset_for_tests  # noqa: F401


def load():
    """The compiled library (:func:`snn.kernels.lif.cpu_build.load`); None where it cannot be built."""
    OUTPUT_CACHE.limit_bytes  # a bad $SNN_OUTPUT_CACHE_MB is refused at the first call, whatever its size
    return cpu_build.load()


def available() -> bool:
    return load() is not None


def supports(x: torch.Tensor, *others) -> bool:
    """Whether the fused path runs this call (a CPU float32/bfloat16/float16 input, library built)."""
    return _cpu_tensors(x, *others) and available()


OUTPUT_CACHE = OutputCache()


def empty_output_cache() -> None:
    """Free the cached output storages that no tensor uses (:class:`OutputCache`)."""
    OUTPUT_CACHE.empty()


def _fresh_output(x: torch.Tensor, time_major: bool) -> torch.Tensor:
    """An uninitialised output laid out as :func:`snn.lif.spec.empty_like_input` lays it out; a large
    one over a storage from :data:`OUTPUT_CACHE`."""
    nbytes = x.numel() * x.element_size()
    if nbytes < LARGE_OUTPUT_BYTES:
        shape = x.shape
        return torch.empty_strided(shape, _output_strides(shape, time_major), dtype=x.dtype)
    return empty_like_input(x, time_major, storage=OUTPUT_CACHE.storage(nbytes))


def fresh_contiguous(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous tensor; a large one over a storage from :data:`OUTPUT_CACHE` (as
    :func:`_fresh_output`: no page faults of a fresh allocation per call)."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < LARGE_OUTPUT_BYTES:
        return torch.empty(shape, dtype=dtype)
    return torch.empty(0, dtype=dtype).set_(OUTPUT_CACHE.storage(nbytes), 0, shape)


_STRIDES: dict = {}  # (shape, time_major) -> the strides of empty_like_input's buffer


def _output_strides(shape, time_major: bool) -> tuple:
    """The strides :func:`snn.lif.spec.empty_like_input` gives (cached: ``torch.empty_strided`` costs half of
    ``torch.empty``'s argument parsing on the per-call path)."""
    key = (shape, time_major)
    strides = _STRIDES.get(key)
    if strides is None:
        if len(_STRIDES) > 1024:
            _STRIDES.clear()
        strides = _STRIDES[key] = lif_ops._strides(tuple(shape), time_major)
    return strides


def _library():
    """:func:`load` without its checks once the library is loaded and the cache's limit read."""
    lib = cpu_build._lib
    if lib is None or not cpu_build._tried or OUTPUT_CACHE._limit_bytes is None:
        return load()
    return lib


# ------------------------------------------------------------------------------------------------
# launchers
# ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _round(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` (as PyTorch rounds a Python number in a sum or a comparison)."""
    return torch.tensor(value, dtype=torch.float64).to(dtype).item()


@functools.lru_cache(maxsize=256)
def _f32(value: float) -> float:
    return torch.tensor(value, dtype=torch.float64).to(torch.float32).item()


def _as_btn(t: torch.Tensor, B: int, T: int, N: int) -> torch.Tensor:
    """``t [B, T, ...]`` as ``[B, T, N]``: a view where the neuron dims collapse, else a copy."""
    try:
        return t.view(B, T, N)
    except RuntimeError:
        return t.reshape(B, T, N).contiguous()


def _as_bn(t: torch.Tensor, B: int, N: int) -> torch.Tensor:
    try:
        return t.view(B, N)
    except RuntimeError:
        return t.reshape(B, N).contiguous()


def _params(tau, thresh, dtype: torch.dtype, neuron_shape, N: int) -> torch.Tensor:
    """The ``[PARAM_ROWS, n]`` fp32 table of tau/thresh as each use rounds them (lif_cpu.c header)."""
    per_neuron = isinstance(tau, torch.Tensor) or isinstance(thresh, torch.Tensor)
    if not per_neuron:
        return _scalar_params(tau, thresh, dtype)
    return _build_params(tau, thresh, dtype, neuron_shape, N, per_neuron)


@functools.lru_cache(maxsize=64)
def _scalar_params(tau: float, thresh: float, dtype: torch.dtype) -> torch.Tensor:
    """The table for number tau/thresh (cached: the kernels only read it)."""
    return _build_params(tau, thresh, dtype, (1,), 1, False)


def _build_params(tau, thresh, dtype, neuron_shape, N, per_neuron) -> torch.Tensor:
    table = torch.empty(PARAM_ROWS, N if per_neuron else 1, dtype=torch.float32)

    def put(row, value):
        if isinstance(value, torch.Tensor):
            table[row].view(neuron_shape).copy_(value.detach().expand(neuron_shape))
        else:
            table[row].fill_(value)

    if isinstance(tau, torch.Tensor):
        put(0, tau.to(dtype))
        put(1, tau.to(torch.float32))
    else:
        put(0, _f32(tau))  # a product uses the Python number in fp32, whatever the dtype
        put(1, _f32(tau))
    if isinstance(thresh, torch.Tensor):
        put(2, thresh.to(dtype))
        put(3, thresh.to(dtype))
        put(4, thresh.to(torch.float32))
    else:
        put(2, _round(thresh, dtype))  # a difference or comparison rounds it to the dtype first
        put(3, _f32(thresh))
        put(4, _f32(thresh))
    return table


@functools.lru_cache(maxsize=64)
def _surrogate_consts(spec: LIFSpec, dtype: torch.dtype) -> _Surrogate:
    """The C backward's layout of :func:`snn.lif.spec.surrogate_constants`, rounded as torch rounds them."""
    alpha, (a, b) = spec.surrogate_alpha, surrogate_constants(spec)
    if spec.surrogate == "triangle":
        return _Surrogate(_round(a, dtype), _f32(alpha), _f32(b), 0.0)
    if spec.surrogate == "atan":
        return _Surrogate(0.0, _f32(alpha), _f32(b), _f32(a))
    if spec.surrogate == "rectangle":
        return _Surrogate(0.0, _f32(alpha), _round(b, dtype), 0.0)
    return _Surrogate(0.0, _f32(alpha), 0.0, 0.0)  # sigmoid, fast_sigmoid: alpha only


_RESET_CODES = {"hard": 0, "soft": 1, "subtract_next": 2}  # RS_* of the C backward


def lif_cpu_forward(x, tau, thresh, spec: LIFSpec, v0, time_major: bool, save_h: bool, bits=None, need_v: bool = True):
    """``(spikes, h or None, v_final or None)`` for ``x [B, T, ...]`` (any strides), by the C forward.

    ``need_v=False``: the final potential is neither allocated nor written (None in its place).

    ``bits``: an optional uint8 ``[B, T, ceil(N/8)]`` tensor (``N`` = the neurons of one step; byte
    strides, last one 1) that the same pass fills with the spikes bit-packed (:mod:`snn.memory`)."""
    lib = _library()
    shape = x.shape
    B, T = shape[0], shape[1]
    three_d = len(shape) == 3
    neuron_shape = (shape[2],) if three_d else tuple(shape[2:])
    N = shape[2] if three_d else math.prod(neuron_shape)
    spikes = _fresh_output(x, time_major)
    h = _fresh_output(x, time_major) if save_h else None
    v = torch.empty_strided((B, *neuron_shape), _output_strides((B, *neuron_shape), False), dtype=x.dtype) if need_v else None
    if B * T * N == 0:
        if T == 0 and v is not None:
            v.copy_(torch.zeros_like(v) if v0 is None else v0.to(x.dtype))
        return spikes, h, v
    # A [B, T, N] input and its outputs are their own [B, T, N] views.
    x3, s3 = (x, spikes) if three_d else (_as_btn(x, B, T, N), spikes.view(B, T, N))
    table = _params(tau, thresh, x.dtype, neuron_shape, N)
    v0_2 = None if v0 is None else _as_bn(v0.detach().to(x.dtype), B, N)
    mode, v_reset = _forward_consts(spec, x.dtype)
    args = _forward_args(B, T, N, x3, s3, table, v0_2, v_reset, bits)
    args.x, args.s, args.h, args.params = x3.data_ptr(), s3.data_ptr(), 0 if h is None else h.data_ptr(), table.data_ptr()
    args.v0, args.vT = 0 if v0_2 is None else v0_2.data_ptr(), 0 if v is None else v.data_ptr()
    args.bits = 0 if bits is None else bits.data_ptr()
    if lib.lif_forward(DTYPES[x.dtype], mode, ctypes.byref(args), torch.get_num_threads()) != 0:
        raise RuntimeError(f"lif_cpu: the C forward refused dtype {x.dtype}")
    return spikes, h, v


_THREAD = threading.local()  # .forward_args: this thread's _FwdArgs by layout


def _forward_args(B, T, N, x3, s3, table, v0_2, v_reset, bits) -> _FwdArgs:
    """The C forward's argument struct for this layout, sizes and strides filled in (kept per thread and
    layout: a call sets only the pointers, which the kernel reads during that call and nothing after)."""
    key = (B, T, N, x3.stride(), s3.stride(), table.shape[1], None if v0_2 is None else v0_2.stride(), v_reset,
           None if bits is None else _bit_strides(bits, B, T, N))
    cache = getattr(_THREAD, "forward_args", None)
    if cache is None:
        cache = _THREAD.forward_args = {}
    args = cache.get(key)
    if args is None:
        if len(cache) >= 64:
            cache.clear()
        args = cache[key] = _FwdArgs(
            B, T, N, 0, *x3.stride(), 0, 0, *s3.stride(), 0, table.shape[1],
            0, *(v0_2.stride() if v0_2 is not None else (0, 0)), 0, v_reset,
            0, *((0, 0) if bits is None else _bit_strides(bits, B, T, N)),
        )
    return args


@functools.lru_cache(maxsize=256)
def _forward_consts(spec: LIFSpec, dtype: torch.dtype) -> tuple[int, float]:
    """The C forward's reset mode and ``v_reset`` rounded to ``dtype`` (per spec and dtype, cached)."""
    mode = {"soft": 2, "subtract_next": 3}.get(spec.reset, 1 if spec.v_reset != 0.0 else 0)
    return mode, _round(spec.v_reset, dtype)


def _bit_strides(bits: torch.Tensor, B: int, T: int, N: int) -> tuple[int, int]:
    if bits.dtype != torch.uint8 or tuple(bits.shape) != (B, T, (N + 7) // 8) or bits.stride(2) != 1:
        raise ValueError(f"lif_cpu: bits must be a uint8 tensor of shape {(B, T, (N + 7) // 8)} with a unit last "
                         f"stride, got {bits.dtype} {tuple(bits.shape)} strides {bits.stride()}")
    return bits.stride(0), bits.stride(1)


def lif_cpu_backward(grad_spikes, x, tau, thresh, spec: LIFSpec, grad_v=None, v0=None, time_major=False,
                     need_tau=False, need_thresh=False, need_v0=False):
    """``(g_x, g_tau, g_thresh, g_v0)`` by the C reverse scan (None where not needed).

    The kernel recomputes ``h`` from the saved input ``x`` tile by tile (kept in a per-thread
    buffer), then runs the reverse recurrence: the forward saves no tensor of its own.
    """
    lib = load()
    B, T, neuron_shape = x.shape[0], x.shape[1], tuple(x.shape[2:])
    N = math.prod(neuron_shape)
    dtype = x.dtype
    grad_x = _fresh_output(x, time_major)
    grad_v0 = torch.empty((B, *neuron_shape), dtype=dtype) if need_v0 else None
    need_tau = need_tau and isinstance(tau, torch.Tensor)
    need_thresh = need_thresh and isinstance(thresh, torch.Tensor)
    g_tau = torch.empty(N, dtype=torch.float32) if need_tau else None
    g_th = torch.empty(N, dtype=torch.float32) if need_thresh else None
    if B * T * N == 0:
        grad_x.zero_()
        if grad_v0 is not None:
            grad_v0.copy_(torch.zeros_like(grad_v0) if grad_v is None or T > 0 else grad_v)
        g_tau = None if g_tau is None else g_tau.zero_()
        g_th = None if g_th is None else g_th.zero_()
    else:
        if grad_spikes is None:
            grad_spikes = torch.zeros((), dtype=dtype).expand(x.shape)
        gs3 = _as_btn(grad_spikes.to(dtype), B, T, N)
        x3, gx3 = _as_btn(x, B, T, N), grad_x.view(B, T, N)
        gv2 = None if grad_v is None else _as_bn(grad_v.to(dtype), B, N)
        v02 = None if v0 is None else _as_bn(v0.detach().to(dtype), B, N)
        table = _params(tau, thresh, dtype, neuron_shape, N)
        work = torch.empty(2, B, N, dtype=torch.float32) if (need_tau or need_thresh) else None
        args = _BwdArgs(
            B, T, N, gs3.data_ptr(), *gs3.stride(), x3.data_ptr(), *x3.stride(), gx3.data_ptr(), *gx3.stride(),
            table.data_ptr(), table.shape[1],
            0 if gv2 is None else gv2.data_ptr(), *(gv2.stride() if gv2 is not None else (0, 0)),
            0 if v02 is None else v02.data_ptr(), *(v02.stride() if v02 is not None else (0, 0)),
            0 if grad_v0 is None else grad_v0.data_ptr(),
            0 if g_tau is None else g_tau.data_ptr(), 0 if g_th is None else g_th.data_ptr(),
            0 if work is None else work.data_ptr(),
            _f32(spec.v_reset), _round(spec.v_reset, dtype), int(spec.detach_reset), _surrogate_consts(spec, dtype),
            spec.surrogate_id, _RESET_CODES[spec.reset],
        )
        rc = lib.lif_backward(DTYPES[dtype], spec.surrogate_id, _RESET_CODES[spec.reset], ctypes.byref(args),
                              torch.get_num_threads())
        if rc != 0:
            raise (MemoryError if rc == -2 else RuntimeError)(f"lif_cpu: the C backward failed ({rc})")
    if g_tau is not None:
        g_tau = g_tau.view(neuron_shape).sum_to_size(tau.shape).to(tau.dtype)
    if g_th is not None:
        g_th = g_th.view(neuron_shape).sum_to_size(thresh.shape).to(thresh.dtype)
    if grad_v0 is not None:
        grad_v0 = grad_v0.to(v0.dtype)
    return grad_x, g_tau, g_th, grad_v0


class LIFCpuFunction(torch.autograd.Function):
    """Saves the input ``x`` (which the caller or its producer holds anyway: no new bytes per
    neuron-step) and, where they are tensors, tau / thresh / v0; the backward recomputes ``h``."""

    @staticmethod
    def forward(ctx, x, tau, thresh, v0, spec: LIFSpec, return_h: bool, time_major: bool):
        needs_grad = any(ctx.needs_input_grad[:4])
        spikes, h, v = lif_cpu_forward(x, tau, thresh, spec, v0, time_major, save_h=return_h)
        ctx.set_materialize_grads(False)  # an unused final potential must not become a 0 * inf carry
        if needs_grad:
            ctx.save_for_backward(x, *(t for t in (tau, thresh, v0) if isinstance(t, torch.Tensor)))
        ctx.tensor_params = tuple(isinstance(t, torch.Tensor) for t in (tau, thresh, v0))
        ctx.scalars = (tau, thresh)
        ctx.spec = spec
        ctx.time_major = time_major
        if not return_h:
            return spikes, v, None
        ctx.mark_non_differentiable(h)
        return spikes, v, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spikes, grad_v, _grad_h):
        x, *saved = ctx.saved_tensors
        tau, thresh = ctx.scalars
        it = iter(saved)
        tau = next(it) if ctx.tensor_params[0] else tau
        thresh = next(it) if ctx.tensor_params[1] else thresh
        v0 = next(it) if ctx.tensor_params[2] else None
        if grad_spikes is None and grad_v is None:
            return None, None, None, None, None, None, None
        needs = ctx.needs_input_grad
        grads = lif_cpu_backward(grad_spikes, x, tau, thresh, ctx.spec, grad_v, v0, ctx.time_major,
                                 need_tau=needs[1], need_thresh=needs[2], need_v0=needs[3])
        return (*grads, None, None, None)


def lif_cpu_core(x, tau, thresh, spec, v0, return_v, return_h, time_major):
    """The core of :func:`snn.lif.spec.make_lif_function` for the fused path (call :func:`supports` first)."""
    spikes, v, h = LIFCpuFunction.apply(x, tau, thresh, v0, spec, return_h, time_major)
    return spikes, (v if return_v else None), h


def _op_forward(x, tau, thresh, spec, v0, save_h, return_v, time_major):
    return lif_cpu_forward(x, tau, thresh, spec, v0, time_major, save_h, need_v=return_v)


def _op_backward(grad_spikes, x, tau, thresh, spec, grad_v, v0, need_tau, need_thresh, need_v0, grad_dtype, time_major):
    return lif_cpu_backward(grad_spikes, x, tau, thresh, spec, grad_v, v0, time_major, need_tau, need_thresh, need_v0)


# The registered operators snn::lif_fwd_torch / snn::lif_bwd_torch (snn/lif/ops.py) around the C launchers:
# what torch.compile sees on the CPU. Opaque to Dynamo (only their fake implementations are traced),
# so Inductor calls the fused kernel forward and backward; autograd saves the input, as LIFCpuFunction.
fused_op_core = register_lif_ops("torch", _op_forward, _op_backward, saves_input=True)


@torch.compiler.assume_constant_result
def _library_available() -> bool:
    """:func:`available`, which Dynamo evaluates once while tracing instead of tracing load()'s lock."""
    return available()


def _cpu_tensors(x, *others) -> bool:
    return x.device.type == "cpu" and x.dtype in DTYPES and all(
        not isinstance(t, torch.Tensor) or t.device.type == "cpu" for t in others)


def _dispatch_core(x, tau, thresh, spec, v0, return_v, return_h, time_major):
    """Where the ``torch`` backend computes a call.

    * Plain eager calls on CPU float32/bfloat16/float16 tensors: the fused C kernel through
      :class:`LIFCpuFunction` (no dispatcher; with ``snn.lif.ops.EAGER_FAST_PATH = False``, through the
      registered op ``snn::lif_fwd_torch`` instead, which computes the same bits).
    * ``torch.compile`` of such tensors: the same kernel as that registered op, which Inductor calls
      as an opaque kernel forward and backward (:func:`snn.lif.ops.register_lif_ops`).
    * Everything else: the registered eager op (``snn::lif_fwd_eager``, snn.lif.eager): other devices
      and dtypes, a missing C compiler, and torch.export, make_fx and torch.func, whose programs
      keep the portable pure-PyTorch op.
    """
    tau_t = tau if isinstance(tau, torch.Tensor) else None
    thresh_t = thresh if isinstance(thresh, torch.Tensor) else None
    # _plain_eager first: under torch.compile it is False, so Dynamo never reaches load()'s lock.
    if _plain_eager(x, tau_t, thresh_t, v0):
        if _cpu_tensors(x, tau_t, thresh_t, v0) and _library() is not None:
            if lif_ops.EAGER_FAST_PATH:  # read per call: tests and users switch it
                if lif_ops.backward_can_follow(x, tau_t, thresh_t, v0):
                    return lif_cpu_core(x, tau, thresh, spec, v0, return_v, return_h, time_major)
                # No backward can follow (no_grad, inference, or nothing requires grad): the kernel alone, as
                # LIFCpuFunction's forward would run it, without an autograd.Function around it.
                spikes, h, v = lif_cpu_forward(x, tau, thresh, spec, v0, time_major, save_h=return_h, need_v=return_v)
                return spikes, v, h
            return fused_op_core(x, tau, thresh, spec, v0, return_v, return_h, time_major)
    elif (torch.compiler.is_compiling() and not torch.compiler.is_exporting()
          and _cpu_tensors(x, tau_t, thresh_t, v0) and _library_available()):
        return fused_op_core(x, tau, thresh, spec, v0, return_v, return_h, time_major)
    return eager_core(x, tau, thresh, spec, v0, return_v, return_h, time_major)


# What the ``torch`` backend runs: this file's C kernel on the CPU, snn.lif.eager's eager code elsewhere.
lif_torch = make_lif_function(_dispatch_core, "lif_torch", h_gradient=differentiable_h)
