"""Reference Leaky Integrate-and-Fire neuron in plain PyTorch.

This is the seed's ``LIFSpike`` kept literally (one Python step per time step, eager autograd),
because it is the definition every faster implementation is proven against. Per step ``t``::

    v    = v * tau + x[:, t]          # leaky integration, v starts at 0
    s    = H(v - thresh)              # H(z) = 1 if z > 0 else 0 (strict)
    v    = v * (1 - s)                # hard reset to 0, NOT detached: gradient flows through it

Backward replaces the Heaviside derivative by the triangular surrogate::

    dS/dV = max(0, gamma - |v - thresh|) / gamma**2

Autograd of this graph saves 16 bytes per fp32 neuron-step (the surrogate's input and output,
``1 - s`` and ``v`` for the reset product); the Triton kernel in ``kernels/lif.py`` must match it
bit for bit in the forward and to rounding in the backward while saving at most 4.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_TAU = 0.5
DEFAULT_THRESH = 1.0
DEFAULT_GAMMA = 1.0


class TriangleSurrogateSpike(torch.autograd.Function):
    """Heaviside step ``(z > 0)`` forward, triangular surrogate ``max(0, g - |z|) / g**2`` backward.

    ``z`` is the potential minus the threshold. This is the seed's ``ZIF`` function; it saves
    its input and its output as the seed did, so the reference's memory footprint is the seed's.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, gamma: float) -> torch.Tensor:
        spike = (z > 0).to(z.dtype)
        ctx.save_for_backward(z, spike)
        ctx.gamma = gamma
        return spike

    @staticmethod
    def backward(ctx, grad_spike: torch.Tensor):
        z, _spike = ctx.saved_tensors
        gamma = ctx.gamma
        surrogate = (gamma - z.abs()).clamp(min=0) * (1.0 / gamma / gamma)
        return grad_spike * surrogate, None


def _reference_loop(x: torch.Tensor, steps, tau: float, thresh: float, gamma: float, name: str) -> torch.Tensor:
    """The seed's loop over the per-step inputs ``steps`` (views of ``x`` along dim 1)."""
    if x.dim() < 2:
        raise ValueError(f"{name}: expected a tensor of shape [B, T, ...], got shape {tuple(x.shape)}")
    mem = torch.zeros_like(x[:, 0])
    spikes = []
    for x_t in steps:
        mem = mem * tau + x_t
        spike = TriangleSurrogateSpike.apply(mem - thresh, gamma)
        mem = (1 - spike) * mem
        spikes.append(spike)
    return torch.stack(spikes, dim=1)


def lif_reference(
    x: torch.Tensor,
    tau: float = DEFAULT_TAU,
    thresh: float = DEFAULT_THRESH,
    gamma: float = DEFAULT_GAMMA,
) -> torch.Tensor:
    """Spikes of a LIF layer driven by ``x`` of shape ``[B, T, ...]`` (time on dim 1).

    Indexes ``x[:, t]`` per step exactly as the seed does, so it accepts any layout, including a
    time dimension of stride 0 (a broadcast input; its gradient is then summed over T by autograd).
    Spikes have the dtype of ``x``; the potential is kept in that dtype too, as in the seed.
    """
    steps = (x[:, t] for t in range(x.shape[1])) if x.dim() >= 2 else ()
    return _reference_loop(x, steps, tau, thresh, gamma, "lif_reference")


def lif_reference_unbind(
    x: torch.Tensor,
    tau: float = DEFAULT_TAU,
    thresh: float = DEFAULT_THRESH,
    gamma: float = DEFAULT_GAMMA,
) -> torch.Tensor:
    """Same function as :func:`lif_reference`, iterating ``x.unbind(1)`` instead of ``x[:, t]``.

    Eager backward of ``x[:, t]`` materialises a full ``[B, T, ...]`` zero tensor per step (cost
    grows with T**2); ``unbind`` has one fused backward. This is the fair eager baseline.
    """
    steps = x.unbind(1) if x.dim() >= 2 else ()
    return _reference_loop(x, steps, tau, thresh, gamma, "lif_reference_unbind")


class LIFSpike(nn.Module):
    """LIF layer over ``[B, T, ...]``; ``backend`` picks the implementation (see ``snn.backends``)."""

    def __init__(
        self,
        tau: float = DEFAULT_TAU,
        thresh: float = DEFAULT_THRESH,
        gamma: float = DEFAULT_GAMMA,
        backend: str = "torch",
    ):
        super().__init__()
        from snn.backends import get_lif_function  # local: backends imports this module

        self.tau, self.thresh, self.gamma = float(tau), float(thresh), float(gamma)
        self.backend = backend
        self._lif = get_lif_function(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._lif(x, self.tau, self.thresh, self.gamma)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, thresh={self.thresh}, gamma={self.gamma}, backend={self.backend!r}"
