"""The one neuron mapping of the NIR exchange: our LIF <-> NIR's ``LIF``/``IF`` node (the derivation is
the package docstring, :mod:`snn.nir_exchange`), the error every refusal raises, and ``nir`` itself."""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_DT = 1e-4  # seconds per step: the dt snnTorch's importer hard-codes and SpikingJelly's defaults to
RTOL = 1e-6  # how close r*dt/tau must be to 1 (NIR stores float64 arrays, written by float32 models)


class NIRExchangeError(ValueError):
    """A layer, option or NIR node the exchange cannot map (the message names it and says why)."""


def require_nir():
    """The ``nir`` package, or one sentence saying how to install it (it is optional)."""
    try:
        import nir
    except ImportError as exc:  # nir is an optional dependency of the project
        raise ImportError("NIR interchange needs the package `nir` (pip install nir)") from exc
    return nir


def lif_to_nir(decay, thresh, v_reset: float, shape: tuple[int, ...], dt: float = DEFAULT_DT, where: str = "LIF"):
    """The NIR node of our LIF with per-step decay ``decay`` and threshold ``thresh`` (numbers or
    tensors broadcastable to the neuron ``shape``) and hard reset to ``v_reset``, at step ``dt``."""
    nir = require_nir()
    decay = _full(decay, shape)
    thresh = _full(thresh, shape)
    if not np.isfinite(decay).all() or ((decay < 0) | (decay > 1)).any():
        raise NIRExchangeError(f"{where}: a decay tau outside [0, 1] has no NIR time constant "
                               f"(got values in [{decay.min()}, {decay.max()}]).")
    if not np.isfinite(thresh).all():
        raise NIRExchangeError(f"{where}: the threshold must be finite to be exported.")
    v_reset = np.full(shape, float(v_reset))
    if (decay == 1).all():
        return nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=thresh, v_reset=v_reset)
    if (decay == 1).any():
        raise NIRExchangeError(f"{where}: some neurons have decay 1 (no leak, NIR's IF) and others leak (NIR's LIF); "
                               "one NIR node cannot hold both.")
    tau = dt / (1.0 - decay)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(shape), v_threshold=thresh, v_reset=v_reset)


def lif_from_nir(node, dt: float, where: str) -> dict:
    """``LIFSpike`` arguments (``tau``, ``thresh``, ``v_reset``) of a NIR ``LIF``/``IF`` node at step ``dt``."""
    nir = require_nir()
    v_reset = np.asarray(node.v_reset, dtype=np.float64)
    if np.unique(v_reset).size != 1:
        raise NIRExchangeError(f"{where}: a per-neuron v_reset has no counterpart (our v_reset is one number per layer).")
    if isinstance(node, nir.IF):
        scale = np.asarray(node.r, dtype=np.float64) * dt
        decay = np.ones_like(scale)
    else:
        tau = np.asarray(node.tau, dtype=np.float64)
        if not (np.asarray(node.v_leak) == 0).all():
            raise NIRExchangeError(f"{where}: v_leak != 0 (a leak toward v_leak) has no counterpart: our LIF leaks toward 0.")
        if not (np.isfinite(tau).all() and (tau >= dt).all()):
            raise NIRExchangeError(f"{where}: tau must be finite and at least dt = {dt} (a decay 1 - dt/tau in [0, 1)).")
        scale = np.asarray(node.r, dtype=np.float64) * dt / tau
        decay = 1.0 - dt / tau
    if not np.allclose(scale, 1.0, rtol=RTOL, atol=0):
        raise NIRExchangeError(
            f"{where}: r*dt/tau is {float(np.min(scale)):g} to {float(np.max(scale)):g} at dt = {dt}, not 1: this neuron "
            "scales its input, ours adds it (h = v*tau + x); pass the dt the graph was made for.")
    return {"tau": _compact(decay), "thresh": _compact(np.asarray(node.v_threshold, dtype=np.float64)),
            "v_reset": float(v_reset.flat[0])}


def _full(value, shape) -> np.ndarray:
    """``value`` (number or tensor) as a float64 array of the neuron ``shape``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()


def _compact(values: np.ndarray):
    """One float where every neuron has the same value, else a float32 tensor of the neuron shape."""
    values = values.astype(np.float32)
    unique = np.unique(values)
    return float(unique[0]) if unique.size == 1 else torch.from_numpy(values.copy())
