"""Reference Leaky Integrate-and-Fire neuron in plain PyTorch: the definition the others are proven against.

This is the seed's ``LIFSpike`` loop kept literally (one Python step per time step, eager
autograd), extended with the options specified in :mod:`snn.lif.spec` (read it for the math). For
the defaults each step is exactly the seed's::

    mem   = mem * tau + x[:, t]
    spike = ZIF(mem - thresh)          # (z > 0) forward, surrogate backward
    mem   = (1 - spike) * mem          # hard reset to 0, NOT detached

Autograd of this graph saves 16 bytes per fp32 neuron-step (the surrogate's input and output,
``1 - s`` and ``v`` for the reset product); the fused implementations must match it bit for bit in
the forward and to rounding in the backward while saving at most 4. The potential is kept in the
dtype of ``x``, as in the seed (tensor ``tau``/``thresh``/``v0`` are cast to it).

The layer module is :class:`snn.lif.layers.LIFSpike`.
"""

from __future__ import annotations

import torch

from snn.lif.spec import (  # noqa: F401  (DEFAULT_* re-exported for existing imports)
    DEFAULT_GAMMA,
    DEFAULT_TAU,
    DEFAULT_THRESH,
    LIFSpec,
    reset_potential,
)
from snn.lif.ops import surrogate_spike
from snn.lif.signature import make_lif_function


def _as_potential(value, x: torch.Tensor):
    return value.to(x.dtype) if isinstance(value, torch.Tensor) else value


def _reference_core(x, steps, tau, thresh, spec: LIFSpec, v0, return_v, return_h):
    tau, thresh = _as_potential(tau, x), _as_potential(thresh, x)
    mem = torch.zeros_like(x[:, 0]) if v0 is None else v0.to(x.dtype)
    spikes, potentials = [], []
    # subtract_next: the spike of the step before (s_{-1} from v0), detached, subtracted undecayed
    previous = (mem - thresh > 0).to(x.dtype)
    for x_t in steps:
        mem = mem * tau + x_t
        if spec.reset == "subtract_next":
            mem = mem - previous * thresh
        if return_h:
            potentials.append(mem)
        # the seed's ZIF: (z > 0), surrogate backward; or the user's own spike function
        spike = spec.surrogate(mem - thresh) if spec.custom else surrogate_spike(mem - thresh, spec)
        reset_spike = spike.detach() if spec.detach_reset else spike
        if spec.reset == "subtract_next":
            previous = reset_spike  # v_t = h_t: the reset happens at the next step
        else:
            mem = reset_potential(mem, reset_spike, thresh, spec)
        spikes.append(spike)
    h = torch.stack(potentials, dim=1) if return_h else None
    return torch.stack(spikes, dim=1), (mem if return_v else None), h


def _indexing_core(x, tau, thresh, spec, v0, return_v, return_h, time_major):
    steps = (x[:, t] for t in range(x.shape[1]))
    return _reference_core(x, steps, tau, thresh, spec, v0, return_v, return_h)


def _unbind_core(x, tau, thresh, spec, v0, return_v, return_h, time_major):
    return _reference_core(x, x.unbind(1), tau, thresh, spec, v0, return_v, return_h)


# Indexes x[:, t] per step exactly as the seed does, so any layout works, including a stride-0 time
# dimension (a broadcast input; autograd then sums its gradient over T).
lif_reference = make_lif_function(_indexing_core, "lif_reference", accepts_custom_surrogate=True, h_has_gradient=True)

# Same function iterating x.unbind(1): eager backward of x[:, t] materialises a full [B, T, ...]
# zero tensor per step (cost grows with T**2); unbind has one fused backward. The fair eager baseline.
lif_reference_unbind = make_lif_function(_unbind_core, "lif_reference_unbind", accepts_custom_surrogate=True,
                                         h_has_gradient=True)

