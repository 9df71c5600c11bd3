"""Spiking neural networks with LIF neurons: reference layers, the MNIST MLP, data and checkpoints."""

from snn.backends import BACKENDS, get_lif_function
from snn.lif import LIFSpike, lif_reference

__all__ = ["BACKENDS", "LIFSpike", "get_lif_function", "lif_reference"]
