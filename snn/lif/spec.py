"""The LIF neuron's specification: its options, their defaults, and the one derivation of its math.

Every implementation (the reference in :mod:`snn.lif.reference`, the eager backend in :mod:`snn.lif.eager`,
the fused C kernel of the torch backend in :mod:`kernels.lif.cpu_launch`, the Triton kernels in
:mod:`kernels.lif.triton_kernels` and their launcher :mod:`kernels.lif.triton_launch`) imports :class:`LIFSpec`
from here and implements the recurrences below; the README and the other modules link here instead of
restating them. This module imports nothing of the project (it is the leaf every implementation depends on).

Forward
-------
Per neuron, over steps ``t = 0 .. T-1``, with ``v_{-1} = v0`` (zero unless given)::

    h_t = v_{t-1} * tau + x_t                 leaky integration: product rounded, then sum (no FMA)
    z_t = h_t - thresh
    s_t = (z_t > 0)                           strict Heaviside, in the dtype of x
    v_t = h_t * (1 - s_t) [+ v_reset * s_t]   reset="hard" (the ``+`` term only when v_reset != 0)
    v_t = h_t - thresh * s_t                  reset="soft" (subtract the threshold)

and, for ``reset="subtract_next"`` (snnTorch's ``Leaky(reset_mechanism="subtract")``, whose reset
uses the previous step's spike and is not decayed)::

    h_t = (v_{t-1} * tau + x_t) - thresh * s_{t-1}     s_{-1} = (v_{-1} - thresh > 0), v_{-1} = v0 or 0
    v_t = h_t                                          the state is the pre-reset potential

The reset of ``subtract_next`` is always detached (``detach_reset=True`` is required: snnTorch
detaches it and the kernels implement that case only). The returned final potential is then
snnTorch's ``mem``, and a chunk continued from it recomputes ``s_{T-1}`` from it exactly.

The outputs are the spikes ``s``, optionally the final potential ``v_{T-1}`` (to continue a
sequence in the next call: chunked calls equal one call over the whole sequence) and optionally
the pre-reset potentials ``h`` (for analysis). ``tau`` and ``thresh`` are Python numbers or tensors
broadcastable over the neuron dimensions (``x.shape[2:]``), e.g. ``[N]`` or ``[C, 1, 1]``.

Backward
--------
The step has no useful derivative; ``ds/dh`` is replaced by a surrogate ``sg(z)`` (``SURROGATES``)::

    triangle   max(0, alpha - |z|) / alpha**2          (alpha is the seed's gamma; default 1)
    sigmoid    alpha * sig(alpha z) * (1 - sig(alpha z))            (default alpha 4)
    atan       (alpha / 2) / (1 + (pi/2 * alpha * z)**2)            (default alpha 2)
    rectangle  alpha if |z| < 0.5 / alpha else 0                    (default alpha 1)
    fast_sigmoid  1 / (alpha * |z| + 1)**2                           (default alpha 25)

The first four are SpikingJelly's definitions (``PiecewiseQuadratic``, ``Sigmoid``, ``ATan``, and
the rectangular window; snnTorch's ``atan`` is the same formula), ``fast_sigmoid`` is snnTorch's
(``surrogate.fast_sigmoid(slope=alpha)``), so models move between the libraries. ``surrogate`` may
also be a *spike function* of your own (:func:`custom_surrogate_gradient`), on the backends that accept it.

``v_t`` reaches the loss through the next step only (``h_{t+1} = v_t * tau + x_{t+1}``) and, for
the last step, through the returned final potential. Write ``c_t`` for the gradient arriving at
``v_t``: ``c_t = tau * g_h[t+1]`` for ``t < T-1`` and ``c_{T-1} = g_v`` (the final potential's
gradient; zero when it is not returned or not used). The reset ``v_t = R(h_t, s_t)`` has partial
derivatives ``dR/dh`` (hard: ``1 - s_t``; soft: ``1``) and ``dR/ds`` (hard: ``v_reset - h_t``;
soft: ``-thresh``; **zero when detach_reset**: the reset then treats ``s_t`` as a constant). So::

    dL/ds_t = g_s[t] + c_t * dR/ds                      spike output + the reset's use of s_t
    g_h[t]  = c_t * dR/dh + dL/ds_t * sg(z_t)
    g_x[t]  = g_h[t]                     c_{t-1} = tau * g_h[t]          g_v0 = tau * g_h[0]
    g_tau   = sum_{b,t} g_h[t] * v_{t-1}                               (v_{-1} = v0)
    g_thresh= sum_{b,t} -dL/ds_t * sg(z_t)  [- c_t * s_t  for reset="soft"]

For ``reset="subtract_next"`` (detached) the state is ``v_t = h_t``, so ``dR/dh = 1``, ``dR/ds = 0``
and the scan for ``g_x`` is the soft reset's detached one: ``g_h[t] = c_t + g_s[t] * sg(z_t)``. Its
parameter gradients differ: ``g_tau = sum g_h[t] * h_{t-1}`` (``v0`` at t=0) and ``g_thresh = sum
-g_s[t] * sg(z_t) - g_h[t] * s_{t-1}`` (the threshold subtracted at step t, undecayed).

For the defaults (hard reset to 0, not detached) this is
``g_h[t] = c_t * (1 - s_t) + (g_s[t] - c_t * h_t) * sg(z_t)``: the ``-c_t * h_t * sg`` term is the
gradient through the reset (a neuron that spikes loses ``h_t`` of potential). The backward needs
``h_t`` only: ``s_t`` and ``v_t`` are recomputed from it exactly, so an implementation needs to save
``h`` and nothing else (the eager backend and the Triton kernel save it, in the input's dtype where that
keeps ``s_t`` and ``sg(z_t)`` exact; the fused C kernel saves nothing of its own: it recomputes ``h`` from
the input ``x``, which the caller holds anyway; the bytes each saves are counted by the tests). The sums for ``tau`` and
``thresh`` run over batch and time (and over the neuron dimensions the parameter is broadcast
along); an implementation computes them inside its backward, deterministically.

Implementations evaluate each expression in the grouping written here, because that is the order
reference autograd rounds in; for the defaults the fp32 gradients are then equal to the last bit.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import torch

DEFAULT_TAU = 0.5
DEFAULT_THRESH = 1.0
DEFAULT_GAMMA = 1.0  # the triangle surrogate's alpha, called gamma in the seed

RESETS = ("hard", "soft", "subtract_next")
# name -> (default alpha, integer id used by the kernels' switch)
SURROGATES = {"triangle": (1.0, 0), "sigmoid": (4.0, 1), "atan": (2.0, 2), "rectangle": (1.0, 3),
              "fast_sigmoid": (25.0, 4)}
CUSTOM_SURROGATE = "custom surrogate"  # the feature name of a callable surrogate (snn/lif/backends.py)
TIME_DIMS = (0, 1)


def _option(default, help: str, **rules):
    """A neuron option: its default, one line of help, and the rules every place that takes it derives
    its checks from (``choices``; ``range`` for the command line; ``positive``; ``default_help``: the
    default in words where the value ``None`` stands for one)."""
    return field(default=default, metadata={"help": help, **rules})


@dataclass(frozen=True)
class LIFOptions:
    """The neuron's options, defined once: :class:`LIFSpec` validates them, a model config inherits them
    (``MLPConfig(LIFOptions)``: stored flat in checkpoints, its ``.spec`` is the layer's spec), and the
    command-line flags (``snn.cli.train_args``), the checkpoint checks (``snn.config_checks``), the keyword
    arguments of :func:`snn.lif.layers.lif_spike` / ``LIFSpike`` and the op schema (``snn.lif.ops``) are
    generated from ``dataclasses.fields(LIFOptions)``. Adding an option is one field here."""

    reset: str = _option("hard", "hard: v = h(1-s) + v_reset s; soft: v = h - thresh s; subtract_next: snnTorch's "
                                 "subtract reset (with --detach-reset)", choices=RESETS)
    v_reset: float = _option(0.0, "potential after a hard reset", range=(-1e3, 1e3))
    detach_reset: bool = _option(False, "no gradient through the reset's use of the spike")
    surrogate: str = _option("triangle", "surrogate of ds/dh", choices=tuple(SURROGATES))
    alpha: float | None = _option(None, "the surrogate's parameter", range=(1e-3, 1e3), positive=True,
                                  default_help=", ".join(f"{name} {default:g}" for name, (default, _) in SURROGATES.items())
                                  )  # positive: the triangle divides by alpha**2

    @property
    def spec(self) -> "LIFSpec":
        """These options as the (validated) :class:`LIFSpec` of a layer."""
        return LIFSpec(**options_of(self))


OPTION_FIELDS = fields(LIFOptions)
OPTION_NAMES = tuple(option.name for option in OPTION_FIELDS)


def options_of(source) -> dict:
    """``{name: value}`` of the neuron options of ``source`` (a spec, a model config, parsed flags)."""
    return {name: getattr(source, name) for name in OPTION_NAMES}


@dataclass(frozen=True)
class LIFSpec(LIFOptions):
    """The static options of a LIF layer (hashable: one compiled kernel variant per spec), validated.

    ``tau`` and ``thresh`` are not here: they may be tensors (per-neuron, learnable) and are passed
    beside the spec. ``alpha=None`` means the surrogate's default (``SURROGATES``). ``surrogate`` is
    a name of ``SURROGATES`` or a spike function (:func:`custom_surrogate_gradient`).
    """

    @property
    def spec(self) -> "LIFSpec":
        return self

    def __post_init__(self):
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {', '.join(map(repr, RESETS))}, got {self.reset!r}")
        if isinstance(self.surrogate, type) and issubclass(self.surrogate, torch.autograd.Function):
            object.__setattr__(self, "surrogate", self.surrogate.apply)
        if not callable(self.surrogate) and self.surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {', '.join(map(repr, SURROGATES))} or a spike function "
                             f"(z -> spikes, with its own backward), got {self.surrogate!r}")
        _check_finite("v_reset", self.v_reset)
        if self.reset != "hard" and self.v_reset != 0.0:
            raise ValueError(f"v_reset applies to reset='hard' only; reset={self.reset!r} subtracts the threshold")
        if not isinstance(self.detach_reset, bool):
            raise TypeError(f"detach_reset must be a bool, got {type(self.detach_reset).__name__}")
        if self.reset == "subtract_next" and not self.detach_reset:
            raise ValueError("reset='subtract_next' (snnTorch's subtract reset) is implemented with the reset detached, "
                             "as snnTorch detaches it: pass detach_reset=True")
        if self.custom and self.alpha is not None:
            raise ValueError("alpha applies to the named surrogates; a custom spike function carries its own parameters")
        if self.alpha is not None:
            _check_finite("alpha", self.alpha)
            if self.alpha <= 0:
                raise ValueError(f"alpha must be > 0 (the surrogate's width/sharpness), got {self.alpha}")
        object.__setattr__(self, "v_reset", float(self.v_reset))
        object.__setattr__(self, "alpha", None if self.alpha is None else float(self.alpha))

    @property
    def custom(self) -> bool:
        """True when ``surrogate`` is a spike function of the user's (:func:`custom_surrogate_gradient`)."""
        return callable(self.surrogate)

    @property
    def surrogate_alpha(self) -> float | None:
        """``alpha`` with the surrogate's default filled in (None for a custom spike function)."""
        if self.custom:
            return None
        return SURROGATES[self.surrogate][0] if self.alpha is None else self.alpha

    @property
    def surrogate_id(self) -> int:
        return SURROGATES[self.surrogate][1]

    @property
    def surrogate_name(self) -> str:
        """The surrogate's name, or the spike function's qualified name."""
        if not self.custom:
            return self.surrogate
        fn = getattr(self.surrogate, "__self__", self.surrogate)  # Function.apply -> the Function
        return getattr(fn, "__qualname__", type(fn).__qualname__)

    @property
    def is_seed(self) -> bool:
        """True for the seed's neuron (hard reset to 0, not detached, triangle surrogate)."""
        return self.reset == "hard" and self.v_reset == 0.0 and not self.detach_reset and self.surrogate == "triangle"


TAU_MEANING = ("tau is the decay factor per step here (h = v * tau + x), in [0, 1] (1 = no leak, the IF neuron); "
               "from a time constant use tau = 1 - 1/tau_sj (SpikingJelly's tau) or exp(-dt/tau_m)")


def check_tau_values(tau) -> None:
    """Refuse a ``tau`` (number, or tensor values when not compiling) outside ``[0, 1]`` in one sentence."""
    if isinstance(tau, torch.Tensor):
        if torch.compiler.is_compiling() or tau.device.type == "meta" or tau.numel() == 0:
            return
        low, high = tau.detach().min().item(), tau.detach().max().item()
        bad = low if not low >= 0.0 else (high if not high <= 1.0 else None)
    else:
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or torch.compiler.is_compiling():
            return  # (its type is checked where it is used; a traced SymFloat cannot be tested)
        bad = None if 0.0 <= tau <= 1.0 else tau
    if bad is not None:
        raise ValueError(f"{TAU_MEANING}; got tau={bad}")


def _check_finite(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python number, got {type(value).__name__}")
    # Under torch.compile(dynamic=True) a Python float may be traced symbolically and cannot be tested.
    if not torch.compiler.is_compiling() and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


def surrogate_gradient(z: torch.Tensor, spec: LIFSpec) -> torch.Tensor:
    """``sg(z)``, the surrogate of ``ds/dh`` at ``z = h - thresh``, in ``z``'s dtype.

    Written once, in the operation order of SpikingJelly's surrogates and of the seed (triangle:
    ``clamp(alpha - |z|, min=0) * (1 / alpha / alpha)``); the reference and the eager backend both
    call it, so their surrogates round identically. The Triton kernel mirrors it op for op.
    """
    if spec.custom:
        return custom_surrogate_gradient(z, spec.surrogate)
    alpha = spec.surrogate_alpha
    if spec.surrogate == "triangle":
        return (alpha - z.abs()).clamp(min=0) * (1.0 / alpha / alpha)
    if spec.surrogate == "sigmoid":
        sig = torch.sigmoid(z * alpha)
        return (1.0 - sig) * sig * alpha
    if spec.surrogate == "atan":
        return (alpha / 2) / (1 + (z * (math.pi / 2 * alpha)).square())
    if spec.surrogate == "fast_sigmoid":
        return 1.0 / (z.abs() * alpha + 1.0).square()
    # rectangle
    return (z.abs() < 0.5 / alpha).to(z.dtype) * alpha


def surrogate_constants(spec: LIFSpec) -> tuple[float, float]:
    """``(a, b)``: the Python-number constants of :func:`surrogate_gradient` for a named surrogate,
    computed as it computes them, for the fused kernels to pass as arguments (each rounds them as
    its arithmetic needs). Triangle: ``(alpha, 1 / alpha / alpha)``; sigmoid: ``(alpha, 0)``; atan:
    ``(alpha / 2, pi / 2 * alpha)``; fast_sigmoid: ``(alpha, 0)``; rectangle: ``(alpha, 0.5 / alpha)``."""
    alpha = spec.surrogate_alpha
    if spec.surrogate == "triangle":
        return alpha, 1.0 / alpha / alpha
    if spec.surrogate == "sigmoid":
        return alpha, 0.0
    if spec.surrogate == "atan":
        return alpha / 2, math.pi / 2 * alpha
    if spec.surrogate == "fast_sigmoid":
        return alpha, 0.0
    return alpha, 0.5 / alpha  # rectangle


def custom_surrogate_gradient(z: torch.Tensor, spike_fn) -> torch.Tensor:
    """``sg(z)`` of a user's spike function: the derivative its backward gives, element by element.

    ``spike_fn(z)`` must be elementwise, return the Heaviside ``(z > 0)`` forward and carry the
    surrogate in its backward (snnTorch's ``spike_grad`` convention: ``snntorch.surrogate.atan()``,
    ``MyFunction.apply``, or any such callable). Checked here: a forward that is not the Heaviside
    is refused, because the spikes every backend emits are ``(z > 0)``.
    """
    with torch.enable_grad():
        leaf = z.detach().requires_grad_()
        spikes = spike_fn(leaf)
        if not isinstance(spikes, torch.Tensor) or spikes.shape != z.shape:
            raise ValueError("a custom surrogate must map z to spikes of z's shape")
        off_tie = z != 0  # SpikingJelly's spike functions fire at z >= 0: a tie is not a contradiction
        if not torch.equal(spikes.detach().to(z.dtype)[off_tie], (z > 0).to(z.dtype)[off_tie]):
            raise ValueError("a custom surrogate's forward must be the Heaviside (z > 0): the backward is what it defines")
        if not spikes.requires_grad:
            raise ValueError("a custom surrogate must carry a gradient (a backward of its own), got a constant")
        (grad,) = torch.autograd.grad(spikes, leaf, torch.ones_like(spikes))
    return grad.to(z.dtype)


class LIFOutput(NamedTuple):
    """What a LIF call returns when ``return_v`` or ``return_h`` is set (unrequested fields are None)."""

    spikes: torch.Tensor
    v: torch.Tensor | None  # final potential v_{T-1}, shape of one step
    h: torch.Tensor | None  # pre-reset potentials, shape and layout of the input


def neuron_shape_param(value, name: str, x: torch.Tensor):
    """``tau``/``thresh`` as a float, or as a tensor broadcastable over ``x``'s neuron dims.

    A tensor is returned as is (its gradient is the implementation's business); the check is that
    ``value.expand(x.shape[2:])`` works, so ``[N]``, ``[C, 1, 1]`` and scalars all do.
    """
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {value.dtype}")
        neuron_dims = tuple(x.shape[2:])
        try:
            fits = value.dim() <= len(neuron_dims) and torch.broadcast_shapes(value.shape, neuron_dims) == neuron_dims
        except RuntimeError:  # torch's own broadcast error names positions, not our argument
            fits = False
        if not fits:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not broadcast over the neuron dimensions {neuron_dims} "
                "(it is per neuron: shared over batch and time)"
            )
        if value.device != x.device:
            raise ValueError(f"{name} is on {value.device} but the input is on {x.device}")
        return value
    _check_finite(name, value)
    if name == "tau":
        check_tau_values(value)
    return value if isinstance(value, (float, torch.SymFloat)) else float(value)


def empty_like_input(x: torch.Tensor, time_major: bool, dtype: torch.dtype | None = None,
                     storage: torch.UntypedStorage | None = None) -> torch.Tensor:
    """An output buffer for ``x [B, T, ...]``: contiguous, or ``[T, B, ...]`` storage seen as ``[B, T, ...]``.

    For ``time_dim=0`` callers the outputs are then contiguous in the caller's own layout.
    ``storage``: lay the buffer over this (large enough) storage instead of allocating one.
    """
    dtype = x.dtype if dtype is None else dtype
    shape = (x.shape[1], x.shape[0], *x.shape[2:]) if time_major else x.shape
    if storage is None:
        out = torch.empty(shape, dtype=dtype, device=x.device)
    else:
        out = torch.empty(0, dtype=dtype, device=x.device).set_(storage, 0, shape)
    return out.transpose(0, 1) if time_major else out


def resolve_spec(spec: LIFSpec | None, gamma: float | None = None, **options) -> LIFSpec:
    """The spec of a call that takes the options as ``spec=`` or as keywords (``gamma``: the seed's
    name for ``alpha``), refusing a call that gives both, gives the surrogate's parameter twice, or
    names an option that does not exist. A call that names none gets ``spec`` or the shared default
    spec without building one (the common call: nothing to check per call)."""
    if gamma is None and not options:
        return DEFAULT_SPEC if spec is None else spec
    unknown = [name for name in options if name not in OPTION_NAMES]
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r} (the neuron's options are "
                        f"{', '.join(OPTION_NAMES)}, or spec=)")
    if gamma is not None:
        if options.get("alpha") is not None:
            raise ValueError("give the surrogate's parameter once: gamma is the seed's name for alpha")
        options["alpha"] = gamma
    if spec is None:
        return LIFSpec(**options)
    defaults = LIFSpec()
    if any(value != getattr(defaults, name) for name, value in options.items()):
        raise ValueError("pass the options either as spec= or as keywords, not both")
    return spec


DEFAULT_SPEC = LIFSpec()  # frozen: one instance serves every call that names no option


def takes_options(fn):
    """Give ``fn(..., **options)`` the neuron's options as keyword-only parameters in its signature
    (what ``help``, ``inspect`` and the README's API reference show), from :class:`LIFOptions`; the
    body passes ``**options`` to :func:`resolve_spec`, which refuses a name that is not an option."""
    signature = inspect.signature(fn)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    at = next((i for i, p in enumerate(params) if p.name == "spec"), len(params))
    options = [inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=option.default,
                                 annotation=option.type) for option in OPTION_FIELDS]
    fn.__signature__ = signature.replace(parameters=params[:at] + options + params[at:])
    return fn


def membrane_with_gradient(x: torch.Tensor, tau, thresh, spec: LIFSpec, v0, spikes: torch.Tensor) -> torch.Tensor:
    """The pre-reset potentials ``h`` of ``x [B, T, ...]`` as a differentiable function of ``x``,
    ``tau``, ``thresh`` and ``v0``, given the spikes the forward emitted.

    The forward recurrence again under autograd, with each spike a constant of the forward's value
    whose derivative is the surrogate (``s + sg(z) * (z - z.detach())``, where the reset uses it):
    the graph of the reference loop, so ``dL/dh`` reaches every input as in the reference. The fused
    kernels take no gradient on ``h``; :func:`make_lif_function` adds the eager backend's reverse scan
    (``snn.lif.eager.MembraneGradient``) beside them when ``return_h`` is asked for with a gradient,
    and this autograd scan where that cannot run (torch.compile, torch.func).
    """
    tau = tau.to(x.dtype) if isinstance(tau, torch.Tensor) else tau
    thresh = thresh.to(x.dtype) if isinstance(thresh, torch.Tensor) else thresh
    spikes = spikes.detach()
    v = torch.zeros_like(x[:, 0]) if v0 is None else v0.to(x.dtype)
    previous = (v.detach() - thresh > 0).to(x.dtype)
    potentials = []
    for t, x_t in enumerate(x.unbind(1)):
        h = v * tau + x_t
        if spec.reset == "subtract_next":
            h = h - previous * thresh
        potentials.append(h)
        s = spikes[:, t].to(x.dtype)
        if spec.reset == "subtract_next":
            previous, v = s, h
            continue
        if not spec.detach_reset:
            z = h - thresh
            s = s + surrogate_gradient(z.detach(), spec) * (z - z.detach())
        v = reset_potential(h, s, thresh, spec)
    return torch.stack(potentials, dim=1)


def reset_potential(h: torch.Tensor, s: torch.Tensor, thresh, spec: LIFSpec) -> torch.Tensor:
    """``v_t = R(h_t, s_t)`` of the hard and soft resets (module docstring), in the grouping written
    there; the reference loop and :func:`membrane_with_gradient` both call it."""
    if spec.reset == "soft":
        return h - s * thresh
    v = (1 - s) * h
    return v + s * spec.v_reset if spec.v_reset != 0.0 else v
