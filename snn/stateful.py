"""One step at a time: a LIF layer that keeps its potential between calls (online and streaming use).

:class:`LIFStep` wraps a :class:`~snn.lif.layers.LIFSpike` (any backend, any option, learnable
parameters shared with it): each call takes one step's input ``[B, ...]``, returns that step's
spikes ``[B, ...]`` and keeps the final potential for the next call, so ``T`` calls equal one
multi-step call over ``[B, T, ...]`` (spikes and gradients: tests/test_outputs.py). ``reset()``
forgets the state (a new sequence); ``detach()`` keeps its value and cuts its graph (truncated
backpropagation through time). Each call is a ``T = 1`` launch, so a whole sequence is faster as
one multi-step call; use this where the input arrives step by step.
"""

from __future__ import annotations

import torch
from torch import nn

from snn.lif.layers import LIFSpike


class LIFStep(nn.Module):
    """Single-step form of ``layer`` (a :class:`LIFSpike`, or its keyword arguments).

    ``forward(x)`` with ``x [B, ...]`` returns the spikes of that step; ``forward(x, return_h=True)``
    returns ``(spikes, h)`` with the step's (differentiable) pre-reset potential. ``v`` holds the
    potential after the last step (None before the first call and after :meth:`reset`).
    """

    def __init__(self, layer: LIFSpike | None = None, **kwargs):
        super().__init__()
        if layer is None:
            layer = LIFSpike(**kwargs)
        elif kwargs:
            raise ValueError("LIFStep: give a LIFSpike or its keyword arguments, not both")
        if not isinstance(layer, LIFSpike):
            raise TypeError(f"LIFStep: expected a LIFSpike, got {type(layer).__name__}")
        self.layer = layer
        self.v: torch.Tensor | None = None

    def reset(self) -> None:
        """Start a new sequence: the next call starts from the potential 0."""
        self.v = None

    def detach(self) -> None:
        """Keep the potential, drop its graph (truncated BPTT)."""
        if self.v is not None:
            self.v = self.v.detach()

    def forward(self, x: torch.Tensor, return_h: bool = False):
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            raise ValueError(f"LIFStep: expected one step's tensor [B, ...], got {getattr(x, 'shape', type(x))}")
        if self.v is not None and self.v.shape != x.shape:
            raise ValueError(f"LIFStep: this step's shape {tuple(x.shape)} differs from the kept potential's "
                             f"{tuple(self.v.shape)}; call reset() to start a new sequence")
        time_dim = self.layer.time_dim
        out = self.layer(x.unsqueeze(time_dim), v0=self.v, return_v=True, return_h=return_h)
        self.v = out.v
        spikes = out.spikes.squeeze(time_dim)
        return (spikes, out.h.squeeze(time_dim)) if return_h else spikes
