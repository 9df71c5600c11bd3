"""The one place that maps a backend name to a LIF implementation.

Every LIF implementation has the signature ``lif(x, tau, thresh, gamma) -> spikes`` for ``x`` of
shape ``[B, T, ...]``. ``train.py``, ``infer.py`` and the model only pass the name through.
"""

from __future__ import annotations

from typing import Callable

import torch

from snn.errors import UserError
from snn.lif_torch import lif_torch

LIFFunction = Callable[[torch.Tensor, float, float, float], torch.Tensor]

BACKENDS = ("torch", "triton")


def _load_triton() -> LIFFunction:
    try:
        import triton  # noqa: F401  (only to tell a missing package from a broken kernel module)
    except ImportError as exc:
        raise UserError(
            f"backend 'triton' needs the 'triton' package, which could not be imported ({exc}); "
            "install it (pip install -e .) or use --backend torch."
        ) from exc
    from kernels import lif_spike  # a failure here is a bug in kernels/: let its traceback show

    return lif_spike


def get_lif_function(name: str) -> LIFFunction:
    """Return the LIF implementation registered under ``name`` (one of :data:`BACKENDS`)."""
    if name == "torch":
        # Plain PyTorch with a hand-written backward: bit-identical to autograd of the seed's loop
        # (snn.lif.lif_reference, tests/test_lif_torch.py), at a fraction of its ops and memory.
        return lif_torch
    if name == "triton":
        return _load_triton()
    raise UserError(f"unknown backend {name!r}; supported backends are: {', '.join(BACKENDS)}.")
