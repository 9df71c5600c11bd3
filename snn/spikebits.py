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

from snn.kernels.lif import cpu_build

_SHIFTS = torch.arange(8, dtype=torch.uint8)
# Eight 0/1 bytes read as one little-endian 64-bit word w = sum_i b_i 256**i: w * _GATHER puts
# sum_i b_i 2**i into the top byte (no carries: each b_i lands on its own bit), read by >> 56.
_GATHER = 0x0102040810204080
_TABLES: dict = {}  # (dtype, device) -> [256, 8] table of each byte's 8 spikes


def _table(dtype: torch.dtype, device) -> torch.Tensor:
    key = (dtype, str(device))
    if key not in _TABLES:
        byte = torch.arange(256, dtype=torch.int64).unsqueeze(1)
        _TABLES[key] = ((byte >> torch.arange(8)) & 1).to(dtype=dtype, device=device)
    return _TABLES[key]


def _fused(t: torch.Tensor) -> bool:
    """The C loops of kernels/lif/lif_cpu.c apply (a plain eager CPU tensor, library built)."""
    if t.device.type != "cpu" or torch.compiler.is_compiling() or t.numel() == 0:
        return False
    return (t.dtype == torch.uint8 or t.dtype in cpu_build.DTYPES) and cpu_build.available()


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
    if _fused(flat) and (out is None or out.is_contiguous()):
        packed = torch.empty((*lead, (n + 7) // 8), dtype=torch.uint8) if out is None else out
        rows = flat.contiguous().view(-1, n)
        cpu_build.load().lif_pack_bits(cpu_build.DTYPES[rows.dtype], rows.data_ptr(), rows.shape[0], n,
                                       packed.data_ptr(), torch.get_num_threads())
        return packed
    pad = (-n) % 8
    on = flat != 0
    if pad:
        on = torch.nn.functional.pad(on, (0, pad))
    words = on.view(torch.uint8).view(*lead, (n + pad) // 8, 8).view(torch.int64).squeeze(-1)
    packed = words.mul_(_GATHER).bitwise_right_shift_(56).to(torch.uint8)
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
    if _fused(bits) and dtype in (torch.float32, torch.bfloat16, torch.float16):
        out = torch.empty(shape, dtype=dtype)
        cpu_build.load().lif_unpack_bits(cpu_build.DTYPES[dtype], bits.contiguous().data_ptr(), B * T, count,
                                         out.data_ptr(), torch.get_num_threads())
        return out
    spikes = torch.nn.functional.embedding(bits.to(torch.int64), _table(dtype, bits.device)).view(B, T, nbytes * 8)
    return (spikes if count == nbytes * 8 else spikes[..., :count].contiguous()).view(shape)
