"""The LIF and the 2x2 max-pooling after it as one C pass (``lif_pool_forward`` / ``lif_pool_backward`` in
``lif_cpu.c``, whose section header says how the gradient is routed): the CSNN's conv blocks
(:mod:`snn.lif.pool` decides when this runs).

Unfused, a conv block's ``LIF -> F.max_pool2d(2)`` writes the full-resolution spikes, has the pooling
save them with int64 indices, and in the backward zero-fills and scatters a full-resolution
gradient for the LIF's reverse scan to read. Here the spikes of one tile (whole pairs of image rows)
live only in a per-thread buffer: the forward writes the pooled spikes, saves nothing but its input
(as the fused LIF does), and the backward recomputes the tile's potentials and spikes from that
input, so the same per-element arithmetic as the unfused pair gives the same bits.

Three ways in, as for the fused LIF (kernels/lif/cpu_launch.py): :class:`LIFPoolFunction` for plain
eager calls, the registered operators ``snn::lif_pool_fwd`` / ``snn::lif_pool_bwd`` for
``torch.compile`` (opaque to Dynamo: Inductor calls the kernel), and the caller's unfused code for
everything else.
"""

from __future__ import annotations

import ctypes

import torch

from snn.kernels.lif import cpu_build
from snn.kernels.lif.cpu_launch import (_RESET_CODES, _f32, _forward_consts, _library, _round, _scalar_params,
                                        _surrogate_consts, fresh_contiguous)
from snn.lif import ops as lif_ops
from snn.lif.spec import LIFSpec


def max_width() -> int:
    """The widest image row the kernel takes: a tile (lif_cpu.c's TILE neurons) must hold a pair of rows."""
    return cpu_build.BUILD_INFO["tile"] // 2


def pooled_shape(x: torch.Tensor) -> tuple:
    B, T, C, H, W = x.shape
    return (B, T, C, H // 2, W // 2)


def lif_pool_forward(x: torch.Tensor, tau: float, thresh: float, spec: LIFSpec) -> torch.Tensor:
    """The spikes of the LIF over ``x [B, T, C, H, W]`` (C*H*W contiguous, H and W even), max-pooled
    2x2 with stride 2: ``[B, T, C, H/2, W/2]``, contiguous."""
    lib = _library()
    B, T, C, H, W = x.shape
    N = C * H * W
    out = fresh_contiguous(pooled_shape(x), x.dtype)
    if out.numel() == 0:
        return out
    table = _scalar_params(tau, thresh, x.dtype)
    mode, v_reset = _forward_consts(spec, x.dtype)
    # fields not named stay 0 / NULL: no h, v0, final potential or bits (lif_pool_forward refuses them)
    args = cpu_build._FwdArgs(B=B, T=T, N=N, x=x.data_ptr(), xsb=x.stride(0), xst=x.stride(1), xsn=1,
                              s=out.data_ptr(), osb=out.stride(0), ost=out.stride(1), osn=1,
                              params=table.data_ptr(), n_param=1, v_reset=v_reset)
    rc = lib.lif_pool_forward(cpu_build.DTYPES[x.dtype], mode, ctypes.byref(args), W, torch.get_num_threads())
    if rc != 0:
        raise (MemoryError if rc == -2 else RuntimeError)(f"lif_pool: the C forward failed ({rc})")
    return out


def lif_pool_backward(grad: torch.Tensor, x: torch.Tensor, tau: float, thresh: float, spec: LIFSpec) -> torch.Tensor:
    """``grad_x`` (contiguous, ``x``'s shape and dtype) of :func:`lif_pool_forward` for the gradient of its output."""
    lib = _library()
    B, T, C, H, W = x.shape
    N, dtype = C * H * W, x.dtype
    grad_x = fresh_contiguous(x.shape, dtype)
    if grad_x.numel() == 0:
        return grad_x
    grad = grad.to(dtype).contiguous()
    table = _scalar_params(tau, thresh, dtype)
    # fields not named stay 0 / NULL: no final-potential gradient, v0 or parameter gradients (refused by the kernel)
    args = cpu_build._BwdArgs(
        B=B, T=T, N=N, gs=grad.data_ptr(), gsb=grad.stride(0), gst=grad.stride(1), gsn=1,
        x=x.data_ptr(), xsb=x.stride(0), xst=x.stride(1), xsn=1,
        gx=grad_x.data_ptr(), gxsb=grad_x.stride(0), gxst=grad_x.stride(1), gxsn=1, params=table.data_ptr(), n_param=1,
        v_reset=_f32(spec.v_reset), v_reset_fwd=_round(spec.v_reset, dtype), detach=int(spec.detach_reset),
        k=_surrogate_consts(spec, dtype), sg=spec.surrogate_id, soft=_RESET_CODES[spec.reset])
    rc = lib.lif_pool_backward(cpu_build.DTYPES[dtype], spec.surrogate_id, _RESET_CODES[spec.reset], ctypes.byref(args),
                               W, torch.get_num_threads())
    if rc != 0:
        raise (MemoryError if rc == -2 else RuntimeError)(f"lif_pool: the C backward failed ({rc})")
    return grad_x


class LIFPoolFunction(torch.autograd.Function):
    """Saves the input ``x`` only (its producer holds it anyway); the backward recomputes the rest."""

    @staticmethod
    def forward(ctx, x, tau: float, thresh: float, spec: LIFSpec):
        ctx.save_for_backward(x)
        ctx.lif = (tau, thresh, spec)
        return lif_pool_forward(x, tau, thresh, spec)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return lif_pool_backward(grad, x, *ctx.lif), None, None, None


# ---- the registered operators (what torch.compile sees) ---------------------------------------------
_lib = torch.library.Library(lif_ops.NAMESPACE, "FRAGMENT")  # noqa: TOR901  (module-level: kept alive)
_PARAMS = (("tau", "float"), ("thresh", "float"), *lif_ops._SPEC_ARGS)
torch.library.define("snn::lif_pool_fwd", lif_ops.schema((("x", "Tensor"), *_PARAMS), ("pooled",)), lib=_lib)
torch.library.define("snn::lif_pool_bwd", lif_ops.schema((("grad", "Tensor"), ("x", "Tensor"), *_PARAMS), ("g_x",)),
                     lib=_lib)


def _fwd_impl(x, tau, thresh, *options):
    return lif_pool_forward(x, tau, thresh, lif_ops._spec(*options))


def _bwd_impl(grad, x, tau, thresh, *options):
    return lif_pool_backward(grad, x, tau, thresh, lif_ops._spec(*options))


torch.library.impl("snn::lif_pool_fwd", "default", _fwd_impl, lib=_lib)
torch.library.register_fake("snn::lif_pool_fwd", lambda x, *rest: x.new_empty(pooled_shape(x)), lib=_lib)
torch.library.impl("snn::lif_pool_bwd", "default", _bwd_impl, lib=_lib)
torch.library.register_fake("snn::lif_pool_bwd", lambda grad, x, *rest: x.new_empty(x.shape), lib=_lib)
_fwd_op, _bwd_op = torch.ops.snn.lif_pool_fwd.default, torch.ops.snn.lif_pool_bwd.default


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.params = inputs[1:]


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return (_bwd_op(grad, x, *ctx.params), *(None,) * len(ctx.params))


lif_ops._register_autograd(_lib, "lif_pool_fwd", _fwd_op, _setup_context, _backward)


def lif_pool(x: torch.Tensor, tau: float, thresh: float, spec: LIFSpec) -> torch.Tensor:
    """The fused LIF + 2x2 max-pooling: :class:`LIFPoolFunction` in plain eager mode, the registered op otherwise
    (the caller, :mod:`snn.lif.pool`, has checked that the kernel takes this call)."""
    if lif_ops._plain_eager(x):
        if lif_ops.backward_can_follow(x):
            return LIFPoolFunction.apply(x, tau, thresh, spec)
        return lif_pool_forward(x, tau, thresh, spec)
    return _fwd_op(x, tau, thresh, *lif_ops._options(spec))

