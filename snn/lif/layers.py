"""The LIF layer for your own networks, and time-distributed helpers for ``[B, T, ...]`` tensors.

Three thin layers, one job each: the implementations (``snn.lif.reference`` reference, ``snn.lif.eager``,
``kernels.lif.triton_launch``) compute; :func:`lif_spike` is the functional form that picks one by ``backend=``;
:class:`LIFSpike` is the ``nn.Module`` that holds the options and (optionally learnable) parameters.
The neuron and every option are specified in :mod:`snn.lif.spec`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from snn.lif.backends import check_supported, features_used, get_lif_function
from snn.lif.spec import DEFAULT_TAU, DEFAULT_THRESH, LIFSpec, check_tau_values, resolve_spec, takes_options
from snn.time_distributed import TimeDistributed, apply_per_step, direct_encode  # noqa: F401  (re-exported)

TAU_PARAMS = ("clamp", "sigmoid")  # how a learnable tau is kept in [0, 1] (LIFSpike's tau_param)


class _Sigmoid(nn.Module):
    """``tau = sigmoid(logit)``: a learnable tau that cannot leave (0, 1) (SpikingJelly's PLIF keeps
    its decay the same way); ``right_inverse`` stores an assigned tau as its logit."""

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logit)

    def right_inverse(self, tau: torch.Tensor) -> torch.Tensor:
        if not ((tau > 0) & (tau < 1)).all():
            raise ValueError("a sigmoid-parametrised tau lies strictly inside (0, 1) (tau = 1 is the IF neuron: use "
                             "tau_param='clamp' to learn from there)")
        return torch.logit(tau)


@takes_options
def lif_spike(x: torch.Tensor, tau=DEFAULT_TAU, thresh=DEFAULT_THRESH, gamma: float | None = None, *, backend: str = "torch",
              spec: LIFSpec | None = None, time_dim: int = 1, v0: torch.Tensor | None = None,
              return_v: bool = False, return_h: bool = False, **options):
    """Functional LIF layer: spikes of ``x`` (``[B, T, ...]``; ``[T, B, ...]`` with ``time_dim=0``).

    ``backend`` is one of :data:`snn.lif.backends.BACKENDS`; the other arguments are those of every
    implementation (:func:`snn.lif.signature.make_lif_function`): the options
    (:class:`snn.lif.spec.LIFOptions`) as keywords or as ``spec=LIFSpec(...)``. A backend that
    lacks an option says so in one sentence.
    """
    try:
        spec = resolve_spec(spec, gamma, **options)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"lif_spike: {exc}") from None
    tensor_params = isinstance(tau, torch.Tensor) or isinstance(thresh, torch.Tensor)
    check_supported(backend, features_used(spec, tensor_params=tensor_params, v0=v0 is not None,
                                           return_v=return_v, return_h=return_h, time_dim=time_dim),
                    dtype=getattr(x, "dtype", None), device=getattr(x, "device", None))
    return get_lif_function(backend)(x, tau, thresh, spec=spec, time_dim=time_dim, v0=v0,
                                     return_v=return_v, return_h=return_h)


class LIFSpike(nn.Module):
    """LIF layer over ``[B, T, ...]`` (or ``[T, B, ...]`` with ``time_dim=0``); ``backend`` picks the implementation.

    ``tau`` is the decay factor per step (``h = v * tau + x``, :mod:`snn.lif.spec`), in ``[0, 1]``
    (1: no leak, the IF neuron); a time constant converts as ``tau = 1 - 1/tau_sj`` (SpikingJelly's
    ``tau``) or ``exp(-dt/tau_m)``, and a value outside ``[0, 1]`` is refused. ``tau`` and ``thresh``
    are numbers or tensors broadcastable over the neuron dims (e.g. ``[N]`` or ``[C, 1, 1]``);
    ``learn_tau`` / ``learn_thresh`` make them ``nn.Parameter``s (initialised from the given value,
    shape ``param_shape`` when the value is a number; ``()`` = one value shared by the layer).
    A learnable tau stays in ``[0, 1]`` by construction: ``tau_param="clamp"`` (default; snnTorch's
    ``learn_beta``) uses ``tau.clamp(0, 1)``, whose gradient is exact inside and zero outside, and
    keeps the parameter ``tau`` (checkpoints of earlier versions load unchanged);
    ``tau_param="sigmoid"`` stores its logit (``parametrizations.tau.original``) and uses
    ``sigmoid(logit)``, which never leaves ``(0, 1)`` and never stops learning. A learnable thresh
    is used as ``thresh.clamp(min=0)``. ``layer.tau`` / ``layer.thresh`` read the stored values;
    :meth:`effective_params` gives what the neuron uses. ``input_scale`` multiplies the input
    first (SpikingJelly's ``decay_input=True`` is ``1/tau_sj``). ``gamma`` is the seed's name for
    the triangle surrogate's ``alpha``. The neuron's options (:class:`snn.lif.spec.LIFOptions`: ``reset``,
    ``v_reset``, ``detach_reset``, ``surrogate``, ``alpha``) are keywords, or ``spec=LIFSpec(...)``;
    ``surrogate`` may be a spike function on the eager and reference backends
    (:func:`snn.lif.spec.custom_surrogate_gradient`).
    ``forward(x, v0=None, return_v=False, return_h=False)``: pass the final potential of one chunk
    as ``v0`` of the next to process a long sequence in pieces (identical to one call).
    """

    @takes_options
    def __init__(
        self,
        tau=DEFAULT_TAU,
        thresh=DEFAULT_THRESH,
        gamma: float | None = None,
        *,
        spec: LIFSpec | None = None,
        learn_tau: bool = False,
        learn_thresh: bool = False,
        param_shape: tuple[int, ...] = (),
        tau_param: str = "clamp",
        input_scale: float = 1.0,
        time_dim: int = 1,
        backend: str = "torch",
        **options,
    ):
        super().__init__()
        try:
            self.spec = resolve_spec(spec, gamma, **options)
            check_tau_values(tau)
            if tau_param not in TAU_PARAMS:
                raise ValueError(f"tau_param must be one of {', '.join(map(repr, TAU_PARAMS))}, got {tau_param!r}")
            if isinstance(input_scale, bool) or not isinstance(input_scale, (int, float)):
                raise TypeError(f"input_scale must be a number, got {type(input_scale).__name__}")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"LIFSpike: {exc}") from None
        self.time_dim = time_dim
        self.tau_param = tau_param if learn_tau else None
        self.input_scale = float(input_scale)
        for name, value, learn in (("tau", tau, learn_tau), ("thresh", thresh, learn_thresh)):
            if learn:
                init = value.detach().clone() if isinstance(value, torch.Tensor) else torch.full(param_shape, float(value))
                setattr(self, name, nn.Parameter(init.float() if not init.is_floating_point() else init))
            elif isinstance(value, torch.Tensor):
                self.register_buffer(name, value.detach().clone())
            else:
                setattr(self, name, float(value))
        self.learn_thresh = learn_thresh
        if self.tau_param == "sigmoid":
            try:
                parametrize.register_parametrization(self, "tau", _Sigmoid())
            except ValueError as exc:
                raise ValueError(f"LIFSpike: {exc}") from None
        self.backend = backend
        tensor_params = isinstance(self.tau, torch.Tensor) or isinstance(self.thresh, torch.Tensor)
        check_supported(backend, features_used(self.spec, tensor_params=tensor_params, time_dim=time_dim))
        self._lif = get_lif_function(backend)

    @property
    def gamma(self) -> float:
        """The surrogate's alpha (the seed's name for the triangle's)."""
        return self.spec.surrogate_alpha

    def effective_params(self):
        """``(tau, thresh)`` as the neuron uses them: a learnable tau through its constraint
        (``tau_param``), a learnable thresh clamped at 0; the stored values otherwise."""
        tau, thresh = self.tau, self.thresh  # a sigmoid-parametrised tau is already sigmoid(logit)
        if self.tau_param == "clamp":
            tau = tau.clamp(0.0, 1.0)
        if self.learn_thresh:
            thresh = thresh.clamp(min=0.0)
        return tau, thresh

    def forward(self, x: torch.Tensor, v0: torch.Tensor | None = None, return_v: bool = False, return_h: bool = False):
        features = features_used(self.spec, v0=v0 is not None, return_v=return_v, return_h=return_h) if (
            v0 is not None or return_v or return_h) else ()
        check_supported(self.backend, features, dtype=getattr(x, "dtype", None), device=getattr(x, "device", None))
        if self.input_scale != 1.0:
            x = x * self.input_scale
        tau, thresh = self.effective_params()
        return self._lif(x, tau, thresh, spec=self.spec, time_dim=self.time_dim, v0=v0,
                         return_v=return_v, return_h=return_h)

    def extra_repr(self) -> str:
        def show(value):
            return f"tensor{tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"{value}"

        options = [f"tau={show(self.tau)}", f"thresh={show(self.thresh)}"]
        defaults = LIFSpec()
        for name in ("reset", "v_reset", "detach_reset"):
            if getattr(self.spec, name) != getattr(defaults, name):
                options.append(f"{name}={getattr(self.spec, name)!r}")
        if self.spec.surrogate != defaults.surrogate:
            options.append(f"surrogate={self.spec.surrogate_name!r}")
        if not self.spec.custom:
            options.append(f"alpha={self.spec.surrogate_alpha}")
        if self.tau_param is not None:
            options.append(f"tau_param={self.tau_param!r}")
        if self.input_scale != 1.0:
            options.append(f"input_scale={self.input_scale}")
        if self.time_dim != 1:
            options.append(f"time_dim={self.time_dim}")
        options.append(f"backend={self.backend!r}")
        return ", ".join(options)


class LeakyReadout(nn.Module):
    """Leaky-integrator readout over ``[B, T, ...]``: ``v_t = v_{t-1} * tau + x_t``, no spikes, no reset.

    Returns every step's potential ``[B, T, ...]`` (or only the last with ``last_only=True``), a
    differentiable output for membrane-potential losses (snnTorch tutorial 5's output layer reads
    its ``mem``; SpikingJelly's ``NonSpikingLIFNode`` with ``decay_input=False`` is
    ``tau = 1 - 1/tau_sj``). ``tau`` as in :class:`LIFSpike` (in [0, 1]; ``learn_tau`` clamps it).
    Plain PyTorch under autograd: one multiply-add per step.
    """

    def __init__(self, tau=DEFAULT_TAU, *, learn_tau: bool = False, param_shape: tuple[int, ...] = (),
                 time_dim: int = 1, last_only: bool = False):
        super().__init__()
        try:
            check_tau_values(tau)
        except ValueError as exc:
            raise ValueError(f"LeakyReadout: {exc}") from None
        if time_dim not in (0, 1):
            raise ValueError(f"LeakyReadout: time_dim must be 1 ([B, T, ...]) or 0 ([T, B, ...]), got {time_dim!r}")
        self.learn_tau, self.time_dim, self.last_only = learn_tau, time_dim, last_only
        if learn_tau:
            init = tau.detach().clone().float() if isinstance(tau, torch.Tensor) else torch.full(param_shape, float(tau))
            self.tau = nn.Parameter(init)
        elif isinstance(tau, torch.Tensor):
            self.register_buffer("tau", tau.detach().clone())
        else:
            self.tau = float(tau)

    def forward(self, x: torch.Tensor, v0: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError(f"LeakyReadout: expected a tensor of shape [B, T, ...], got {getattr(x, 'shape', type(x))}")
        tau = self.tau.clamp(0.0, 1.0) if self.learn_tau else self.tau
        steps = x.unbind(self.time_dim)
        v = torch.zeros_like(steps[0]) if v0 is None else v0
        out = []
        for x_t in steps:
            v = v * tau + x_t
            out.append(v)
        return v if self.last_only else torch.stack(out, dim=self.time_dim)

    def extra_repr(self) -> str:
        tau = f"tensor{tuple(self.tau.shape)}" if isinstance(self.tau, torch.Tensor) else f"{self.tau}"
        return f"tau={tau}" + (f", time_dim={self.time_dim}" if self.time_dim != 1 else "") + (
            ", last_only=True" if self.last_only else "")
