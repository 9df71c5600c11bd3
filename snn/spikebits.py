"""Spikes as bits: the one layout every backend writes and :mod:`snn.memory` saves for the backward.

A spike tensor ``s [B, T, ...]`` (values 0/1) is stored as ``uint8 [B, T, ceil(N/8)]`` with
``N`` the neurons of one step (``s.shape[2:]`` flattened, C order): neuron ``n`` of step ``t`` is
bit ``n % 8`` (least significant first) of byte ``n // 8``; the pad bits of the last byte are 0.
That is 1 bit per neuron-step, 32x below fp32 spikes and 16x below 16-bit ones. The C and Triton
LIF kernels write it in the pass that makes the spikes; :func:`pack_bits` is the same layout in
PyTorch (the eager backend, and spikes that come from pooling rather than from a LIF).
"""

from __future__ import annotations

import torch

_SHIFTS = torch.arange(8, dtype=torch.uint8)


def packed_shape(shape) -> tuple[int, int, int]:
    """The bits' shape for spikes of ``shape`` ``[B, T, ...]``."""
    n = 1
    for d in shape[2:]:
        n *= int(d)
    return int(shape[0]), int(shape[1]), (n + 7) // 8


def pack_bits(spikes: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``uint8 [B, T, ceil(N/8)]`` holding ``spikes != 0`` (``spikes [B, T, ...]`` or one step ``[B, ...]``
    when ``out`` is a ``[B, ceil(N/8)]`` slice to fill)."""
    lead = spikes.shape[:2] if out is None else spikes.shape[:out.dim() - 1]
    flat = spikes.reshape(*lead, -1)
    n = flat.shape[-1]
    pad = (-n) % 8
    on = flat != 0
    if pad:
        on = torch.nn.functional.pad(on, (0, pad))
    grouped = on.view(*lead, (n + pad) // 8, 8).to(torch.uint8)
    packed = grouped.bitwise_left_shift_(_SHIFTS.to(spikes.device)).sum(-1, dtype=torch.uint8)
    if out is None:
        return packed
    return out.copy_(packed)


def unpack_bits(bits: torch.Tensor, shape, dtype: torch.dtype) -> torch.Tensor:
    """The 0/1 spikes of ``shape`` ``[B, T, ...]`` in ``dtype`` (contiguous) from :func:`pack_bits`'s layout."""
    B, T, nbytes = packed_shape(shape)
    if tuple(bits.shape) != (B, T, nbytes) or bits.dtype != torch.uint8:
        raise ValueError(f"unpack_bits: expected uint8 bits of shape {(B, T, nbytes)} for spikes {tuple(shape)}, "
                         f"got {bits.dtype} {tuple(bits.shape)}")
    count = 1
    for d in shape[2:]:
        count *= int(d)
    on = bits.unsqueeze(-1).bitwise_right_shift(_SHIFTS.to(bits.device)).bitwise_and_(1)
    return on.view(B, T, nbytes * 8)[..., :count].to(dtype).reshape(shape)
