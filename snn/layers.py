"""Time-distributed helpers for tensors laid out ``[B, T, ...]`` (time on dim 1)."""

from __future__ import annotations

import torch
from torch import nn


def direct_encode(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Present the static input ``x`` of shape ``[B, ...]`` at every step: ``[B, T, ...]``.

    Returns a broadcast view (stride 0 on the time dimension): no copy, and the caller's tensor
    is neither modified nor reallocated. Autograd sums the gradient over T.
    """
    if time_steps < 1:
        raise ValueError(f"direct_encode: time_steps must be >= 1, got {time_steps}")
    return x.unsqueeze(1).expand(x.shape[0], time_steps, *x.shape[1:])


def apply_per_step(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample ``module`` to every step of ``x [B, T, ...]`` by folding T into the batch."""
    batch, steps = x.shape[:2]
    y = module(x.reshape(batch * steps, *x.shape[2:]))
    return y.reshape(batch, steps, *y.shape[1:])


class TimeDistributed(nn.Module):
    """Module form of :func:`apply_per_step` (the seed's ``tdLayer`` / ``SeqToANNContainer``)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_per_step(self.module, x)
