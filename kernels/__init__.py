"""Fused Triton kernels. Importing this package picks the Triton interpreter when there is no GPU
(see :mod:`kernels.lif`)."""

from .lif import INTERPRETED, LIFSpikeFunction, lif_backward, lif_forward, lif_spike

__all__ = ["INTERPRETED", "LIFSpikeFunction", "lif_backward", "lif_forward", "lif_spike"]
