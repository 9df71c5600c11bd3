"""Spiking neural networks with LIF neurons: the LIF layer, the MNIST MLP, data and checkpoints."""

from snn.backends import BACKENDS, get_lif_function
from snn.layers import LIFSpike, TimeDistributed, direct_encode, lif_spike
from snn.lif import lif_reference
from snn.neuron import LIFOutput, LIFSpec

__all__ = ["BACKENDS", "LIFOutput", "LIFSpec", "LIFSpike", "TimeDistributed", "direct_encode", "get_lif_function", "lif_reference", "lif_spike"]
