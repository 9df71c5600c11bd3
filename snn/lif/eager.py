"""The ``eager`` backend: the LIF layer in plain PyTorch with a hand-written backward (what the
``torch`` backend runs off the CPU, for fp64, and where the C kernel cannot be built).

Same function as :func:`snn.lif.reference.lif_reference` (the seed's loop, differentiated by autograd) and
the same recurrences as the Triton kernel; both are derived once, in :mod:`snn.lif.spec`.

Why not just autograd of the loop: eager autograd records ~7 ops per step forward and ~14
backward, saves 16 bytes per fp32 neuron-step and pays per-op dispatch on small ``[B, N]`` slices.
Here the forward runs 4-5 ops per step without recording anything and saves only ``h`` (4 bytes
fp32, 2 bytes fp16/bf16, exact: ``h`` is stored in the dtype it was computed in); the backward
computes everything that does not depend on the carry (``1 - s`` and ``sg(z)``) in one pass over
``[B, T, N]``, runs 4-6 ops per step, and reduces the gradients of tensor ``tau``/``thresh`` in one
pass after the scan (benchmarks/RESULTS.md times it against autograd of the loop, contender
`ours-eager` against `seed-index`, shape by shape). Each product and sum is rounded as in the reference (no fused multiply-add, same grouping),
so spikes are identical and, for the seed's neuron, fp32 input gradients equal reference
autograd's to the last bit (tests/test_lif_contract.py). Arithmetic is in the input dtype, as in
the reference. The optional ``h`` output gets its gradient from snn.lif.spec.membrane_with_gradient.
"""

from __future__ import annotations

import torch

from snn.lif.signature import make_lif_function
from snn.lif.spec import LIFSpec, empty_like_input, membrane_with_gradient, surrogate_gradient
from snn.lif.ops import _plain_eager, register_lif_ops
from snn.spikebits import pack_bits


def _param(value, x: torch.Tensor):
    """A tensor ``tau``/``thresh`` in the potential's dtype (the reference casts it the same way)."""
    return value.detach().to(x.dtype) if isinstance(value, torch.Tensor) else value


def _reset(h: torch.Tensor, s: torch.Tensor, thresh, spec: LIFSpec) -> torch.Tensor:
    """``v = R(h, s)``, rounded as the reference's reset."""
    if spec.reset == "subtract_next":
        return h  # the reset is subtracted from the next step's h
    if spec.reset == "soft":
        return h - s * thresh
    v = h * (1 - s)  # the reference's reset product (h = +inf spikes and leaves NaN)
    if spec.v_reset != 0.0:
        v.add_(s * spec.v_reset)
    return v


def lif_torch_forward(x: torch.Tensor, tau, thresh, spec: LIFSpec = LIFSpec(), v0=None, time_major: bool = False,
                      bits: torch.Tensor | None = None):
    """Spikes ``s``, pre-reset potentials ``h`` (both ``[B, T, ...]`` in ``x.dtype``) and the final ``v``.

    ``bits``: an optional uint8 ``[B, T, ceil(N/8)]`` tensor filled step by step with the spikes
    bit-packed (:mod:`snn.spikebits`, for :mod:`snn.memory`).

    Every op writes a float tensor: comparisons into a bool tensor and products with bools are
    several times slower on the CPU than the same op with a float output.
    """
    spikes = empty_like_input(x, time_major)
    h_all = empty_like_input(x, time_major)
    if v0 is None:
        v = torch.zeros_like(x[:, 0], memory_format=torch.contiguous_format)
    else:
        v = v0.detach().to(x.dtype).clone(memory_format=torch.contiguous_format)
    delayed = spec.reset == "subtract_next"
    previous = (v > thresh).to(x.dtype) if delayed else None  # s_{-1}, from v0 (0 when not given)
    for t, x_t in enumerate(x.unbind(1)):
        h, s = h_all[:, t], spikes[:, t]
        if delayed:  # v is h_{t-1} (a view of h_all): not multiplied in place
            torch.add(torch.mul(v, tau), x_t, out=h)
            h.sub_(previous * thresh)
            previous = s
        else:
            torch.add(v.mul_(tau), x_t, out=h)  # v * tau rounded, then + x rounded: as the reference
        torch.gt(h, thresh, out=s)  # for floats, h - thresh > 0 exactly when h > thresh
        v = _reset(h, s, thresh, spec)
        if bits is not None:
            pack_bits(s, out=bits[:, t])
    return spikes, h_all, (v.clone() if delayed else v)


def _sum_to_param(total: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Reduce a ``[B, T, ...]`` product over batch and time, then to ``param``'s (broadcast) shape."""
    return total.sum(dim=(0, 1)).sum_to_size(param.shape).to(param.dtype)


def lif_torch_backward(grad_spikes, h_all, tau, thresh, spec: LIFSpec = LIFSpec(), grad_v=None, v0=None,
                       need_tau: bool = False, need_thresh: bool = False, need_v0: bool = False, grad_h=None):
    """``(g_x, g_tau, g_thresh, g_v0)`` by the reverse-time scan of :mod:`snn.lif.spec` (None where not needed).

    ``grad_h``: a gradient on the returned pre-reset potentials (a membrane loss), added to ``g_h[t]``.

    ``grad_spikes`` may be None (only the final potential is used). The two ``[B, T, N]`` terms are
    built in place in two buffers: each fresh tensor of that size costs page faults in glibc's
    allocator, far more than the arithmetic on it.
    """
    tau_p, thresh_p = _param(tau, h_all), _param(thresh, h_all)
    if grad_spikes is None:
        grad_spikes = torch.zeros_like(h_all)
    z = torch.sub(h_all, thresh_p)
    s = torch.gt(z, 0, out=torch.empty_like(z))
    hard = spec.reset == "hard"
    keep = torch.neg(s).add_(1) if hard else None  # 1 - s, exact for s in {0, 1}
    if spec.surrogate == "triangle":
        # alpha - |z| as (-|z|) + alpha (the same rounding), clamped at 0, times 1/alpha**2: in place in z
        alpha = spec.surrogate_alpha
        surrogate = z.abs_().neg_().add_(alpha).clamp_(min=0).mul_(1.0 / alpha / alpha)
    else:
        surrogate = surrogate_gradient(z, spec)
    grad_x = torch.empty_like(h_all)
    carry = None if grad_v is None else grad_v.to(h_all.dtype)
    for t in range(h_all.shape[1] - 1, -1, -1):
        g_h = grad_x[:, t]
        if carry is None:  # nothing reaches the last potential: only the spike path (never 0 * inf)
            torch.mul(grad_spikes[:, t], surrogate[:, t], out=g_h)
        else:
            if spec.detach_reset:
                d_spike = grad_spikes[:, t]
            elif not hard:
                d_spike = grad_spikes[:, t] - carry * thresh_p
            else:
                d_spike = grad_spikes[:, t] - carry * h_all[:, t]
                if spec.v_reset != 0.0:
                    d_spike = d_spike + carry * spec.v_reset
            if hard:
                torch.mul(carry, keep[:, t], out=g_h)
            else:
                g_h.copy_(carry)  # dR/dh = 1
            g_h.add_(d_spike * surrogate[:, t])
        if grad_h is not None:
            g_h.add_(grad_h[:, t])
        carry = g_h * tau_p
    grad_tau = grad_thresh = grad_v0 = None
    if need_v0:
        grad_v0 = carry.to(v0.dtype)
    if need_tau or need_thresh:
        # The sums over batch and time run in fp32 whatever the input dtype (16-bit sums of
        # thousands of terms would lose the gradient); the per-element terms are rounded as above.
        f32 = torch.float32
        g_h, h32, s32, tau32 = grad_x.to(f32), h_all.to(f32), s.to(f32), _param(tau, grad_x.to(f32))
        thresh32 = _param(thresh, h32)
        carries = torch.empty_like(h32)  # c_t for every step: tau * g_h[t+1], then the final potential's gradient
        torch.mul(g_h[:, 1:], tau32, out=carries[:, :-1])
        carries[:, -1] = 0 if grad_v is None else grad_v.to(f32)
    delayed = spec.reset == "subtract_next"
    if need_tau:
        v_prev = torch.empty_like(h32)
        v_prev[:, 0] = 0 if v0 is None else v0.detach().to(h_all.dtype).to(f32)
        v_prev[:, 1:] = _reset(h32[:, :-1], s32[:, :-1], thresh32, spec)
        grad_tau = _sum_to_param(g_h * v_prev, tau)
    if need_thresh:
        g_s32 = grad_spikes.to(f32)
        if spec.detach_reset:
            d_spike = g_s32
        elif hard:
            d_spike = g_s32 - carries * (h32 - spec.v_reset)
        else:
            d_spike = g_s32 - carries * thresh32
        total = -(d_spike * surrogate.to(f32))
        if delayed:  # h_t holds - thresh * s_{t-1}
            s_prev = torch.empty_like(s32)
            s_prev[:, 1:] = s32[:, :-1]
            v_first = torch.zeros_like(h_all[:, 0]) if v0 is None else v0.detach().to(h_all.dtype)
            s_prev[:, 0] = (v_first > thresh_p).to(f32)  # s_{-1} exactly as the forward compared it
            total = total - g_h * s_prev
        elif not hard:
            total = total - carries * s32
        grad_thresh = _sum_to_param(total, thresh)
    return grad_x, grad_tau, grad_thresh, grad_v0


def _forward(x, tau, thresh, spec, v0, save_h, return_v, time_major):
    spikes, h_all, v = lif_torch_forward(x, _param(tau, x), _param(thresh, x), spec, v0, time_major)
    return spikes, h_all, v


def _backward(grad_spikes, h_all, tau, thresh, spec, grad_v, v0, need_tau, need_thresh, need_v0, grad_dtype, time_major):
    return lif_torch_backward(grad_spikes, h_all, tau, thresh, spec, grad_v, v0, need_tau, need_thresh, need_v0)


# The registered operators snn::lif_fwd_eager / snn::lif_bwd_eager (snn/lif/ops.py) around the two functions
# above: the `eager` backend, and what the `torch` backend runs off the CPU and under torch.export,
# make_fx and torch.func (kernels/lif/cpu_launch.py; under torch.compile on the CPU it runs the fused C op).
eager_core = register_lif_ops("eager", _forward, _backward)


class _CustomSurrogateLIF(torch.autograd.Function):
    """The same two functions for a user's spike function (which an op schema cannot carry): plain
    autograd, so no torch.compile/export/func support for a custom surrogate."""

    @staticmethod
    def forward(ctx, x, tau, thresh, v0, spec, time_major):
        spikes, h_all, v = lif_torch_forward(x, _param(tau, x), _param(thresh, x), spec, v0, time_major)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(h_all, *(t for t in (tau, thresh, v0) if isinstance(t, torch.Tensor)))
        ctx.kinds = tuple(isinstance(t, torch.Tensor) for t in (tau, thresh, v0))
        ctx.scalars, ctx.spec = (tau, thresh), spec
        ctx.mark_non_differentiable(h_all)
        return spikes, v, h_all

    @staticmethod
    def backward(ctx, grad_spikes, grad_v, _grad_h):
        h_all, *saved = ctx.saved_tensors
        it = iter(saved)
        tau, thresh, v0 = (next(it) if kind else scalar for kind, scalar in zip(ctx.kinds, (*ctx.scalars, None)))
        if grad_spikes is None and grad_v is None:
            return (None,) * 6
        needs = ctx.needs_input_grad
        grads = lif_torch_backward(grad_spikes, h_all, tau, thresh, ctx.spec, grad_v, v0, needs[1], needs[2], needs[3])
        return (*grads, None, None)


def _eager_or_custom_core(x, tau, thresh, spec, v0, return_v, return_h, time_major):
    if not spec.custom:
        return eager_core(x, tau, thresh, spec, v0, return_v, return_h, time_major)
    spikes, v, h = _CustomSurrogateLIF.apply(x, tau, thresh, v0, spec, time_major)
    return spikes, (v if return_v else None), (h if return_h else None)


class MembraneGradient(torch.autograd.Function):
    """``h`` (a fused backend's pre-reset potentials) as a differentiable output: its backward is the
    reverse scan above with the gradient injected at ``h`` (and none on the spikes); the spikes' and
    the final potential's gradients come from the backend's own backward. Used by
    :func:`differentiable_h` for every backend that returns ``h`` without a gradient."""

    @staticmethod
    def forward(ctx, h, x, tau, thresh, v0, spec):
        ctx.save_for_backward(h, *(t for t in (tau, thresh, v0) if isinstance(t, torch.Tensor)))
        ctx.kinds = tuple(isinstance(t, torch.Tensor) for t in (tau, thresh, v0))
        ctx.scalars, ctx.spec = (tau, thresh), spec
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad_h):
        h, *saved = ctx.saved_tensors
        it = iter(saved)
        tau, thresh, v0 = (next(it) if kind else scalar for kind, scalar in zip(ctx.kinds, (*ctx.scalars, None)))
        needs = ctx.needs_input_grad
        g_x, g_tau, g_thresh, g_v0 = lif_torch_backward(None, h, tau, thresh, ctx.spec, None, v0, needs[2], needs[3],
                                                        needs[4], grad_h=grad_h.to(h.dtype))
        return None, g_x, g_tau, g_thresh, g_v0, None


def differentiable_h(h, x, tau, thresh, spec: LIFSpec, v0, spikes):
    """A backend's ``h`` with the gradient of :func:`snn.lif.spec.membrane_with_gradient`: by this
    backend's reverse scan (:class:`MembraneGradient`) in plain eager mode, by the autograd scan under
    compilers and transforms. Every backend whose core returns ``h`` without a gradient uses it."""
    if _plain_eager(x, *(t for t in (tau, thresh) if isinstance(t, torch.Tensor)), v0):
        return MembraneGradient.apply(h.detach().to(x.dtype), x, tau, thresh, v0, spec).to(h.dtype)
    scan = membrane_with_gradient(x, tau, thresh, spec, v0, spikes)  # the kernel's values, the scan's gradient
    return h.detach() + (scan - scan.detach()).to(h.dtype)


lif_eager = make_lif_function(_eager_or_custom_core, "lif_eager", accepts_custom_surrogate=True, h_gradient=differentiable_h)
