"""The LIF layer for your own networks, and time-distributed helpers for ``[B, T, ...]`` tensors.

Three thin layers, one job each: the implementations (``snn.lif`` reference, ``snn.lif_torch``,
``kernels.lif``) compute; :func:`lif_spike` is the functional form that picks one by ``backend=``;
:class:`LIFSpike` is the ``nn.Module`` that holds the options and (optionally learnable) parameters.
The neuron and every option are specified in :mod:`snn.neuron`.
"""

from __future__ import annotations

import torch
from torch import nn

from snn.backends import check_supported, features_used, get_lif_function
from snn.neuron import DEFAULT_TAU, DEFAULT_THRESH, LIFSpec, resolve_spec
from snn.time_distributed import TimeDistributed, apply_per_step, direct_encode  # noqa: F401  (re-exported)


def lif_spike(x: torch.Tensor, tau=DEFAULT_TAU, thresh=DEFAULT_THRESH, gamma: float | None = None, *, backend: str = "torch",
        reset: str = "hard", v_reset: float = 0.0, detach_reset: bool = False, surrogate: str = "triangle",
        alpha: float | None = None, spec: LIFSpec | None = None, time_dim: int = 1, v0: torch.Tensor | None = None,
        return_v: bool = False, return_h: bool = False):
    """Functional LIF layer: spikes of ``x`` (``[B, T, ...]``; ``[T, B, ...]`` with ``time_dim=0``).

    ``backend`` is one of :data:`snn.backends.BACKENDS`; the other arguments are those of every
    implementation (:func:`snn.neuron.make_lif_function`): the options as keywords or as
    ``spec=LIFSpec(...)``. A backend that lacks an option says so in one sentence.
    """
    try:
        spec = resolve_spec(spec, gamma, reset=reset, v_reset=v_reset, detach_reset=detach_reset,
                            surrogate=surrogate, alpha=alpha)
    except ValueError as exc:
        raise ValueError(f"lif_spike: {exc}") from None
    tensor_params = isinstance(tau, torch.Tensor) or isinstance(thresh, torch.Tensor)
    check_supported(backend, features_used(spec, tensor_params=tensor_params, v0=v0 is not None,
                                           return_v=return_v, return_h=return_h, time_dim=time_dim),
                    dtype=getattr(x, "dtype", None), device=getattr(x, "device", None))
    return get_lif_function(backend)(x, tau, thresh, spec=spec, time_dim=time_dim, v0=v0,
                                     return_v=return_v, return_h=return_h)


class LIFSpike(nn.Module):
    """LIF layer over ``[B, T, ...]`` (or ``[T, B, ...]`` with ``time_dim=0``); ``backend`` picks the implementation.

    ``tau`` and ``thresh`` are numbers or tensors broadcastable over the neuron dims (e.g. ``[N]``
    or ``[C, 1, 1]``); ``learn_tau`` / ``learn_thresh`` make them ``nn.Parameter``s (initialised
    from the given value, shape ``param_shape`` when the value is a number; ``()`` = one value
    shared by the layer). ``gamma`` is the seed's name for the triangle surrogate's ``alpha``.
    ``forward(x, v0=None, return_v=False, return_h=False)``: pass the final potential of one chunk
    as ``v0`` of the next to process a long sequence in pieces (identical to one call).
    """

    def __init__(
        self,
        tau=DEFAULT_TAU,
        thresh=DEFAULT_THRESH,
        gamma: float | None = None,
        *,
        reset: str = "hard",
        v_reset: float = 0.0,
        detach_reset: bool = False,
        surrogate: str = "triangle",
        alpha: float | None = None,
        learn_tau: bool = False,
        learn_thresh: bool = False,
        param_shape: tuple[int, ...] = (),
        time_dim: int = 1,
        backend: str = "torch",
    ):
        super().__init__()
        try:
            self.spec = resolve_spec(None, gamma, reset=reset, v_reset=v_reset, detach_reset=detach_reset,
                                     surrogate=surrogate, alpha=alpha)
        except ValueError as exc:
            raise ValueError(f"LIFSpike: {exc}") from None
        self.time_dim = time_dim
        for name, value, learn in (("tau", tau, learn_tau), ("thresh", thresh, learn_thresh)):
            if learn:
                init = value.detach().clone() if isinstance(value, torch.Tensor) else torch.full(param_shape, float(value))
                setattr(self, name, nn.Parameter(init.float() if not init.is_floating_point() else init))
            elif isinstance(value, torch.Tensor):
                self.register_buffer(name, value.detach().clone())
            else:
                setattr(self, name, float(value))
        self.backend = backend
        tensor_params = isinstance(self.tau, torch.Tensor) or isinstance(self.thresh, torch.Tensor)
        check_supported(backend, features_used(self.spec, tensor_params=tensor_params, time_dim=time_dim))
        self._lif = get_lif_function(backend)

    @property
    def gamma(self) -> float:
        """The surrogate's alpha (the seed's name for the triangle's)."""
        return self.spec.surrogate_alpha

    def forward(self, x: torch.Tensor, v0: torch.Tensor | None = None, return_v: bool = False, return_h: bool = False):
        features = features_used(self.spec, v0=v0 is not None, return_v=return_v, return_h=return_h) if (
            v0 is not None or return_v or return_h) else ()
        check_supported(self.backend, features, dtype=getattr(x, "dtype", None), device=getattr(x, "device", None))
        return self._lif(x, self.tau, self.thresh, spec=self.spec, time_dim=self.time_dim, v0=v0,
                         return_v=return_v, return_h=return_h)

    def extra_repr(self) -> str:
        def show(value):
            return f"tensor{tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"{value}"

        options = [f"tau={show(self.tau)}", f"thresh={show(self.thresh)}"]
        defaults = LIFSpec()
        for name in ("reset", "v_reset", "detach_reset", "surrogate"):
            if getattr(self.spec, name) != getattr(defaults, name):
                options.append(f"{name}={getattr(self.spec, name)!r}")
        options.append(f"alpha={self.spec.surrogate_alpha}")
        if self.time_dim != 1:
            options.append(f"time_dim={self.time_dim}")
        options.append(f"backend={self.backend!r}")
        return ", ".join(options)
