"""Spiking neural networks with LIF neurons: the LIF layer, the MNIST MLP and CSNN, data and checkpoints.

The LIF itself is :mod:`snn.lif` (spec, reference, eager code, ops, layers); its fused kernels are
``snn.kernels`` (Triton and C). In the repository those live in the top-level ``kernels/`` folder
(the project's layout); ``pip install`` puts that folder inside this package (pyproject's
package-dir), so nothing named ``kernels`` lands on ``sys.path``, where it would clash with other
distributions of that name (Hugging Face's ``kernels``). Run from a source checkout that was not
installed, the finder below maps that one name, ``snn.kernels``, to the folder; nothing else of the
checkout (``train``, ``benchmarks``, ``tests``) becomes part of the package.

Importing ``snn`` (or a leaf such as ``snn.lif.spec``) imports no implementation and registers no
op: the names below load on first use.
"""

import importlib.util as _util
import os as _os
import sys as _sys

_KERNELS_IN_CHECKOUT = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "kernels")


class _CheckoutKernelsFinder:
    """Finds ``snn.kernels`` in the checkout's ``kernels/`` when the package was not installed."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != "snn.kernels":
            return None
        return _util.spec_from_file_location(fullname, _os.path.join(_KERNELS_IN_CHECKOUT, "__init__.py"),
                                             submodule_search_locations=[_KERNELS_IN_CHECKOUT])


if (not _os.path.isdir(_os.path.join(__path__[0], "kernels"))
        and _os.path.isfile(_os.path.join(_KERNELS_IN_CHECKOUT, "lif", "triton_launch.py"))
        and not any(isinstance(f, type) and f.__name__ == "_CheckoutKernelsFinder" for f in _sys.meta_path)):
    _sys.meta_path.insert(0, _CheckoutKernelsFinder)  # before an editable install of another checkout

_EXPORTS = {
    "BACKENDS": "snn.lif.backends", "get_lif_function": "snn.lif.backends",
    "LIFSpike": "snn.lif.layers", "lif_spike": "snn.lif.layers",
    "TimeDistributed": "snn.time_distributed", "direct_encode": "snn.time_distributed",
    "lif_reference": "snn.lif.reference", "LIFOutput": "snn.lif.spec", "LIFSpec": "snn.lif.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
