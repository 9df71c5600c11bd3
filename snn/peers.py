"""The peers' neurons as :class:`~snn.lif.layers.LIFSpike` layers: snnTorch's ``Leaky``, SpikingJelly's ``LIFNode`` and ``IFNode``.

Each constructor takes the peer's own arguments (names, defaults and units) and returns a
multi-step ``LIFSpike`` over ``[B, T, ...]`` (``time_dim=0`` for the peers' ``[T, B, ...]``) that
computes the peer's neuron; ``from_snntorch`` / ``from_spikingjelly`` convert an existing peer module.
``tests/test_peers.py`` proves each one spike for spike and gradient for gradient against the peer,
and checks the README's mapping table (:data:`MAPPING`) row by row.

snnTorch ``Leaky(beta, threshold, spike_grad, reset_mechanism, reset_delay, learn_beta, learn_threshold)``:

* ``reset_mechanism="subtract"``, ``reset_delay=True`` (its defaults): ``reset="subtract_next"``
  (``U_t = beta U_{t-1} + I_t - thresh S_{t-1}``, the reset detached as snnTorch detaches it);
  the final potential (``return_v``) is snnTorch's ``mem``. Bit for bit.
* ``reset_mechanism="zero"``, ``reset_delay=True``: ``reset="hard", detach_reset=True``; snnTorch's
  ``mem`` is our pre-reset ``h`` (``return_h``). Bit for bit.
* ``reset_delay=False``: ``reset="soft"`` / ``"hard"`` with the reset *not* detached (snnTorch's
  ``do_reset = spk - reset`` carries the spike's gradient). Equal except where a potential is still
  above the threshold after its reset (``h > 2 * threshold`` for "subtract", or an initial ``mem``
  above it): snnTorch then holds it above the threshold without firing (each later step subtracts
  the threshold for its spike test and adds it back), where we fire again.
* ``beta`` is our ``tau`` (decay per step); ``learn_beta`` is ``learn_tau`` with ``tau_param="clamp"``
  (snnTorch clamps ``beta`` to [0, 1] in its forward, as we do). ``spike_grad=None`` is its ATan
  (alpha 2) = our ``"atan"``; ``surrogate.fast_sigmoid(slope)`` = our ``"fast_sigmoid"``
  (alpha = slope); any other ``spike_grad`` is passed as a custom spike function (the eager and
  reference backends run it). Refused: ``reset_mechanism="none"``, ``graded_spikes_factor != 1``,
  ``inhibition``, ``state_quant``.

SpikingJelly ``LIFNode(tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset)``
(``step_mode="m"``): its ``tau`` is a time constant, so our ``tau = 1 - 1/tau_sj``; with
``decay_input=True`` (its default) the input is scaled by ``1/tau_sj`` (``input_scale``).
``v_reset=None`` is our soft reset, a number our hard reset to it. ``IFNode`` is ``tau = 1``.
``Sigmoid(alpha)``/``ATan(alpha)`` are ours; any other surrogate module is passed as a custom
spike function. SpikingJelly fires at ``v >= v_threshold`` and we at ``>``: a potential exactly on
the threshold spikes there and not here. Its charge is rounded in its own grouping
(``v + (x - v) / tau``), ours as ``v * tau + x``: spikes are equal except where ``h`` lies within
rounding of the threshold, gradients agree to fp32 rounding (tests: 1e-5 relative).
"""

from __future__ import annotations

import math

import torch

from snn.lif.layers import LIFSpike

# The README's "in SpikingJelly / snnTorch" table, as (peer construction, our LIFSpike arguments).
# tests/test_peers.py builds both sides of every row and compares them.
MAPPING = (
    ("snnTorch `Leaky(beta)` (reset_mechanism=\"subtract\", reset_delay=True)",
     "`LIFSpike(tau=beta, reset=\"subtract_next\", detach_reset=True, surrogate=\"atan\")`"),
    ("snnTorch `Leaky(beta, reset_mechanism=\"zero\")`",
     "`LIFSpike(tau=beta, reset=\"hard\", detach_reset=True, surrogate=\"atan\")`; its `mem` is our `h`"),
    ("snnTorch `Leaky(beta, reset_mechanism=\"zero\", reset_delay=False)`",
     "`LIFSpike(tau=beta, reset=\"hard\", surrogate=\"atan\")`"),
    ("snnTorch `Leaky(beta, reset_delay=False)`",
     "`LIFSpike(tau=beta, reset=\"soft\", surrogate=\"atan\")` while no potential exceeds 2x threshold"),
    ("snnTorch `Leaky(..., learn_beta=True, learn_threshold=True)`",
     "`LIFSpike(..., learn_tau=True, learn_thresh=True)` (tau clamped to [0, 1] as beta is)"),
    ("snnTorch `spike_grad=surrogate.fast_sigmoid(slope=k)`", "`surrogate=\"fast_sigmoid\", alpha=k`"),
    ("SpikingJelly `LIFNode(tau=t)` (decay_input=True, v_reset=0)",
     "`LIFSpike(tau=1 - 1/t, input_scale=1/t, surrogate=\"sigmoid\", time_dim=0)`"),
    ("SpikingJelly `LIFNode(tau=t, decay_input=False, v_reset=None)`",
     "`LIFSpike(tau=1 - 1/t, reset=\"soft\", surrogate=\"sigmoid\", time_dim=0)`"),
    ("SpikingJelly `IFNode()`", "`LIFSpike(tau=1.0, surrogate=\"sigmoid\", time_dim=0)`"),
)


def _refuse(message: str):
    return ValueError(f"snn.peers: {message}")


# ---- snnTorch ----------------------------------------------------------------------------------------

def snntorch_surrogate(spike_grad) -> dict:
    """Our ``surrogate``/``alpha`` for an snnTorch ``spike_grad`` (None: its default ATan, alpha 2).

    snnTorch's factories (``surrogate.atan(alpha)``, ``surrogate.fast_sigmoid(slope)``) return
    closures; their parameter is read from the closure. Anything else is passed through as a custom
    spike function (its forward is snnTorch's ``(z > 0)``, its backward the surrogate).
    """
    if spike_grad is None:
        return {"surrogate": "atan", "alpha": 2.0}
    qualname = getattr(spike_grad, "__qualname__", "")
    module = getattr(spike_grad, "__module__", "") or ""
    if module.startswith("snntorch") and spike_grad.__closure__:
        cells = dict(zip(spike_grad.__code__.co_freevars, (c.cell_contents for c in spike_grad.__closure__)))
        if qualname.startswith("atan.") and "alpha" in cells:
            return {"surrogate": "atan", "alpha": float(cells["alpha"])}
        if qualname.startswith("fast_sigmoid.") and "slope" in cells:
            return {"surrogate": "fast_sigmoid", "alpha": float(cells["slope"])}
    return {"surrogate": spike_grad, "alpha": None}


def leaky(beta, threshold=1.0, spike_grad=None, *, reset_mechanism: str = "subtract", reset_delay: bool = True,
          learn_beta: bool = False, learn_threshold: bool = False, graded_spikes_factor=1.0,
          inhibition: bool = False, state_quant=False, surrogate_disable: bool = False,
          time_dim: int = 1, backend: str | None = None) -> LIFSpike:
    """snnTorch's ``Leaky`` with its arguments, as a multi-step :class:`LIFSpike` (see the module docstring).

    ``backend`` defaults to ``"torch"``, or ``"eager"`` when ``spike_grad`` is not one of snnTorch's
    atan/fast_sigmoid (a custom spike function runs on the eager and reference backends).
    """
    if reset_mechanism not in ("subtract", "zero", "none"):
        raise _refuse(f"reset_mechanism must be 'subtract', 'zero' or 'none' (snnTorch's), got {reset_mechanism!r}")
    if reset_mechanism == "none":
        raise _refuse("reset_mechanism='none' (no reset) has no LIFSpike equivalent yet")
    for name, on in (("graded_spikes_factor != 1", float(torch.as_tensor(graded_spikes_factor)) != 1.0),
                     ("inhibition", bool(inhibition)), ("state_quant", state_quant is not False),
                     ("surrogate_disable", bool(surrogate_disable))):
        if on:
            raise _refuse(f"snnTorch's {name} has no LIFSpike equivalent; multiply or quantise outside the layer")
    options = snntorch_surrogate(spike_grad)
    if backend is None:
        backend = "eager" if callable(options["surrogate"]) else "torch"
    if reset_delay:
        reset = {"subtract": "subtract_next", "zero": "hard"}[reset_mechanism]
        detach = True
    else:
        reset = {"subtract": "soft", "zero": "hard"}[reset_mechanism]
        detach = False
    tau = beta.detach().clone() if isinstance(beta, torch.Tensor) else float(beta)
    thresh = threshold.detach().clone() if isinstance(threshold, torch.Tensor) else float(threshold)
    if isinstance(tau, torch.Tensor) and tau.dim() == 0 and not learn_beta:
        tau = float(tau)
    if isinstance(thresh, torch.Tensor) and thresh.dim() == 0 and not learn_threshold:
        thresh = float(thresh)
    if not learn_beta and not isinstance(tau, torch.Tensor):
        tau = min(max(tau, 0.0), 1.0)  # snnTorch clamps beta in its forward
    elif not learn_beta:
        tau = tau.clamp(0.0, 1.0)
    return LIFSpike(tau=tau, thresh=thresh, reset=reset, detach_reset=detach, learn_tau=learn_beta,
                    learn_thresh=learn_threshold, tau_param="clamp", time_dim=time_dim, backend=backend, **options)


def from_snntorch(module, *, time_dim: int = 1, backend: str | None = None) -> LIFSpike:
    """An snnTorch ``Leaky`` instance as a :class:`LIFSpike` (its current beta/threshold, learnable or not)."""
    if type(module).__name__ != "Leaky":
        raise _refuse(f"from_snntorch converts snntorch.Leaky, got {type(module).__name__}")
    beta, threshold = module.beta.detach(), module.threshold.detach()
    layer = leaky(beta, threshold, module.spike_grad, reset_mechanism=module.reset_mechanism,
                  reset_delay=module.reset_delay, learn_beta=isinstance(module.beta, torch.nn.Parameter),
                  learn_threshold=isinstance(module.threshold, torch.nn.Parameter),
                  graded_spikes_factor=module.graded_spikes_factor, inhibition=module.inhibition,
                  state_quant=module.state_quant, surrogate_disable=module.surrogate_disable,
                  time_dim=time_dim, backend=backend)
    return layer


# ---- SpikingJelly --------------------------------------------------------------------------------------

def spikingjelly_surrogate(surrogate_function) -> dict:
    """Our ``surrogate``/``alpha`` for a SpikingJelly surrogate module (``Sigmoid``, ``ATan``: ours;
    anything else: passed as a custom spike function)."""
    name = type(surrogate_function).__name__
    alpha = getattr(surrogate_function, "alpha", None)
    spiking = getattr(surrogate_function, "spiking", True)
    if spiking and alpha is not None and name in ("Sigmoid", "ATan"):
        return {"surrogate": name.lower(), "alpha": float(alpha)}
    return {"surrogate": surrogate_function, "alpha": None}


def _spikingjelly_layer(tau: float, input_scale: float, v_threshold, v_reset, surrogate_function, detach_reset,
                        time_dim: int, backend: str | None) -> LIFSpike:
    options = {"surrogate": "sigmoid", "alpha": 4.0} if surrogate_function is None else spikingjelly_surrogate(surrogate_function)
    if backend is None:
        backend = "eager" if callable(options["surrogate"]) else "torch"
    reset = {"reset": "soft"} if v_reset is None else {"reset": "hard", "v_reset": float(v_reset)}
    return LIFSpike(tau=tau, thresh=float(v_threshold), detach_reset=detach_reset, input_scale=input_scale,
                    time_dim=time_dim, backend=backend, **reset, **options)


def lif_node(tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0, v_reset: float | None = 0.0,
             surrogate_function=None, detach_reset: bool = False, *, time_dim: int = 0,
             backend: str | None = None) -> LIFSpike:
    """SpikingJelly's ``LIFNode`` (its ``tau`` is a time constant > 1) as a :class:`LIFSpike`.

    ``time_dim=0`` by default: SpikingJelly's multi-step tensors are ``[T, B, ...]``.
    ``surrogate_function=None`` is its default ``Sigmoid(alpha=4)``. SpikingJelly's LIF leaks
    toward ``v_reset``; ours toward 0, so ``v_reset`` must be 0 or None (soft reset).
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 1.0:
        raise _refuse(f"SpikingJelly's tau is a time constant > 1 (a decay of 1 - 1/tau per step), got {tau!r}")
    if v_reset not in (None, 0.0):
        raise _refuse(f"SpikingJelly's LIFNode leaks toward v_reset={v_reset}, LIFSpike toward 0: use v_reset=0.0 or None")
    return _spikingjelly_layer(1.0 - 1.0 / tau, (1.0 / tau) if decay_input else 1.0, v_threshold, v_reset,
                               surrogate_function, detach_reset, time_dim, backend)


def if_node(v_threshold: float = 1.0, v_reset: float | None = 0.0, surrogate_function=None, detach_reset: bool = False,
            *, time_dim: int = 0, backend: str | None = None) -> LIFSpike:
    """SpikingJelly's ``IFNode`` as a :class:`LIFSpike` (``tau = 1``: no leak; any ``v_reset``)."""
    return _spikingjelly_layer(1.0, 1.0, v_threshold, v_reset, surrogate_function, detach_reset, time_dim, backend)


def from_spikingjelly(node, *, time_dim: int = 0, backend: str | None = None) -> LIFSpike:
    """A SpikingJelly ``LIFNode`` or ``IFNode`` instance as a :class:`LIFSpike`."""
    kind = type(node).__name__
    common = dict(v_threshold=float(node.v_threshold), v_reset=None if node.v_reset is None else float(node.v_reset),
                  surrogate_function=node.surrogate_function, detach_reset=bool(node.detach_reset),
                  time_dim=time_dim, backend=backend)
    if kind == "IFNode":
        return if_node(**common)
    if kind == "LIFNode":
        return lif_node(float(node.tau), bool(node.decay_input), **common)
    raise _refuse(f"from_spikingjelly converts LIFNode and IFNode, got {kind}")
