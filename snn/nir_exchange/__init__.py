"""NIR interchange: networks made of our layers to a ``nir.NIRGraph`` and NIR graphs back to our layers.

NIR (the Neuromorphic Intermediate Representation, package ``nir``) describes a network as a graph
of continuous-time nodes that every consumer simulates with its own time step ``dt``. Our LIF is the
discrete neuron of :mod:`snn.lif.spec` (``h = v*tau + x``; ``tau`` there is the per-step *decay*).
Forward-Euler of NIR's ``LIF`` (``tau_m dv/dt = (v_leak - v) + r*I``) over one step ``dt`` is
``v <- (1 - dt/tau_m) * v + (r*dt/tau_m) * I + (dt/tau_m) * v_leak``, so our neuron is exactly::

    nir.LIF(tau = dt / (1 - decay), r = tau / dt  (so r*dt/tau == 1), v_leak = 0,
            v_threshold = thresh, v_reset = v_reset)          for 0 <= decay < 1
    nir.IF(r = 1 / dt, v_threshold = thresh, v_reset = v_reset)   for decay == 1 (no leak)

the mapping snnTorch (``beta = 1 - dt/tau``) and SpikingJelly (``tau_sj = tau / dt``) use, at their
``dt = 1e-4`` (:data:`DEFAULT_DT`). NIR's threshold is strict (``v > v_threshold``), like ours.

What NIR cannot say is refused, in one sentence naming the layer or node (:class:`NIRExchangeError`):
a soft (subtract) reset (NIR's neurons reset to ``v_reset``), decays outside ``[0, 1]``, max pooling
(NIR 1.0 has no such node), other layers; on import, nodes without a counterpart in our layers, a
``v_leak`` other than 0, ``r*dt/tau != 1``, a per-neuron ``v_reset``, graphs that are not a chain.
Training-only options are dropped, because they do not change the forward: the surrogate and its
``alpha``, ``detach_reset``, ``learn_tau``/``learn_thresh`` (the values are exported), the backend
and ``time_dim``. BatchNorm (no NIR node) is folded into the preceding Linear/Conv2d with its running
statistics, i.e. as it computes in eval mode.

A NIR graph computes per time step: the imported :class:`NIRNetwork` maps ``[B, T, ...]`` to
``[B, T, ...]``. :class:`snn.model.SpikingMLP` is exported as ``Affine -> LIF -> Affine -> LIF ->
Affine``; its output, the mean over T of ``fc3`` (equal to ``fc3`` of the mean spikes: ``fc3`` is
affine), is the mean over T of the graph's per-step output, and its direct encoding presents the
image at every step. The graph's metadata says so (``time_steps``, ``encoding``, ``readout``), and
:meth:`NIRNetwork.classify` computes that readout the way ``SpikingMLP`` does, to the same bits.
"""

from snn.nir_exchange.export import export_checkpoint, export_nir, write_nir
from snn.nir_exchange.import_graph import NIRNetwork, import_nir
from snn.nir_exchange.neuron import DEFAULT_DT, NIRExchangeError, lif_from_nir, lif_to_nir

__all__ = ["DEFAULT_DT", "NIRExchangeError", "NIRNetwork", "export_checkpoint", "export_nir", "import_nir",
           "lif_from_nir", "lif_to_nir", "write_nir"]
