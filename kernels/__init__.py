"""Fused Triton kernels, imported as ``snn.kernels`` (see snn/__init__.py). Importing this package
picks the Triton interpreter when there is no GPU (see :mod:`snn.kernels.lif`)."""

from .lif import INTERPRETED, lif_backward, lif_forward, lif_spike

__all__ = ["INTERPRETED", "lif_backward", "lif_forward", "lif_spike"]
