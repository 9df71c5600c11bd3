"""Spiking neural networks with LIF neurons: the LIF layer, the MNIST MLP, data and checkpoints.

The fused Triton kernels are ``snn.kernels``. In the repository they live in the top-level
``kernels/`` folder (the project's layout); ``pip install`` puts that folder inside this package
(pyproject's package-dir), so nothing named ``kernels`` lands on ``sys.path``, where it would clash
with other distributions of that name (Hugging Face's ``kernels``). In a source checkout, the
lines below let the same import name find the folder.
"""

import os as _os

_checkout_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "kernels")) and _os.path.isfile(
        _os.path.join(_checkout_root, "kernels", "lif.py")):
    __path__.append(_checkout_root)  # for snn.kernels -> <checkout>/kernels (the one name imported through it)

from snn.backends import BACKENDS, get_lif_function
from snn.layers import LIFSpike, TimeDistributed, direct_encode, lif_spike
from snn.lif import lif_reference
from snn.neuron import LIFOutput, LIFSpec

__all__ = ["BACKENDS", "LIFOutput", "LIFSpec", "LIFSpike", "TimeDistributed", "direct_encode", "get_lif_function", "lif_reference", "lif_spike"]
