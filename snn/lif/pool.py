"""A LIF layer followed by 2x2 max-pooling (stride 2), as the CSNN's conv blocks use them: one fused C
pass where it runs, the two layers one after the other elsewhere; the same spikes and gradients
either way (``tests/test_lif_pool.py`` checks them bit for bit).

The fused pass (:mod:`snn.kernels.lif.cpu_pool`) runs for the ``torch`` backend on CPU float
tensors, in plain eager mode and under ``torch.compile``, when the layer uses numbers for ``tau``
and ``thresh``, a named surrogate, no input scale, time on dim 1 and no forward hooks (a hook
expects the layer's own call: :class:`snn.monitor.SpikeMonitor` sees the same spikes as ever), and the input is
``[B, T, C, H, W]`` with even H and W and each step's neurons contiguous. Everything else (other
backends and devices, learnable or per-neuron parameters, odd sizes, ``torch.export``, make_fx and
torch.func, whose programs keep portable ops) runs :func:`unfused`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from snn.lif.layers import LIFSpike
from snn.lif.ops import _plain_eager
from snn.time_distributed import fold_time, unfold_time


def unfused(layer: LIFSpike, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pooled spikes [B, T, C, H/2, W/2], spikes [B, T, C, H, W])``: the layer, then ``F.max_pool2d``."""
    spikes = layer(x)
    return unfold_time(F.max_pool2d(fold_time(spikes), 2), x.shape[0]), spikes


def fusable(layer: LIFSpike, x: torch.Tensor) -> bool:
    """Whether the fused C pass computes ``lif_max_pool2d(layer, x)`` (see the module docstring)."""
    if layer.backend != "torch" or layer.time_dim != 1 or layer.input_scale != 1.0 or layer.spec.custom:
        return False
    if isinstance(layer.tau, torch.Tensor) or isinstance(layer.thresh, torch.Tensor) or x.dim() != 5:
        return False
    if _has_forward_hooks(layer):  # a hook (snn.monitor.SpikeMonitor, a user's) expects the layer's own call
        return False
    if torch.compiler.is_compiling():
        if torch.compiler.is_exporting():
            return False
    elif not _plain_eager(x):
        return False
    from snn.kernels.lif import cpu_launch

    if not (cpu_launch._cpu_tensors(x) and cpu_launch._library_available()):
        return False
    from snn.kernels.lif import cpu_pool

    B, T, C, H, W = x.shape
    return (H % 2 == 0 and W % 2 == 0 and 2 <= W <= cpu_pool.max_width()
            and x.stride(4) == 1 and x.stride(3) == W and x.stride(2) == H * W)


def _has_forward_hooks(layer: torch.nn.Module) -> bool:
    module = torch.nn.modules.module
    return bool(layer._forward_hooks or layer._forward_pre_hooks or module._global_forward_hooks
                or module._global_forward_pre_hooks)


def lif_max_pool2d(layer: LIFSpike, x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d`` (2x2, stride 2) of ``layer(x)`` per step, ``x [B, T, C, H, W]`` -> ``[B, T, C, H/2, W/2]``,
    without storing the full-resolution spikes where the fused pass runs."""
    if fusable(layer, x):
        from snn.kernels.lif.cpu_pool import lif_pool

        return lif_pool(x, layer.tau, layer.thresh, layer.spec)
    return unfused(layer, x)[0]
