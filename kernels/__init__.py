"""Fused Triton kernels. Importing this package picks the Triton interpreter when there is no GPU
(see :mod:`kernels.lif`)."""

from kernels.lif import INTERPRETED, lif_backward, lif_forward, lif_spike

__all__ = ["INTERPRETED", "lif_backward", "lif_forward", "lif_spike"]
