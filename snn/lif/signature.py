"""The public call signature every LIF backend shares (:func:`make_lif_function`): argument checks,
the options as keywords or ``spec=``, ``time_dim``, ``v0``, and the ``LIFOutput`` it returns.

It imports the spec only: each backend wraps its own core with it, so no implementation imports another
through this module.
"""

from __future__ import annotations

import math

import torch

from snn.lif.spec import (DEFAULT_TAU, DEFAULT_THRESH, TIME_DIMS, LIFOutput, LIFSpec, neuron_shape_param, resolve_spec,
                          takes_options)


def make_lif_function(core, name: str, accepts_custom_surrogate: bool = False, h_has_gradient: bool = False,
                      h_gradient=None):
    """The public signature every backend shares, around ``core``.

    ``h_has_gradient``: ``core`` returns ``h`` with its gradient (the reference); for the others a
    requested ``h`` gets it from ``h_gradient(h, x, tau, thresh, spec, v0, spikes)`` (the eager
    backend's :func:`snn.lif.eager.differentiable_h`, which follows
    :func:`snn.lif.spec.membrane_with_gradient`; passed in so that this module imports no implementation).

    ``accepts_custom_surrogate``: whether ``core`` takes a spec whose surrogate is a spike function
    (the eager and reference backends); the others refuse it in one sentence.

    ``core(x, tau, thresh, spec, v0, return_v, return_h, time_major) -> (spikes, v, h)`` sees ``x``
    as ``[B, T, ...]`` (time on dim 1, any strides), ``tau``/``thresh`` as floats or tensors
    broadcastable over ``x.shape[2:]``, and ``v0`` as None or a tensor of one step's shape
    ``[B, ...]`` (possibly a broadcast view). It returns None for what was not asked.
    """

    if not h_has_gradient and h_gradient is None:
        raise TypeError("make_lif_function: give h_gradient unless core returns h with its gradient")

    @takes_options
    def lif(
        x: torch.Tensor,
        tau=DEFAULT_TAU,
        thresh=DEFAULT_THRESH,
        gamma: float | None = None,
        *,
        spec: LIFSpec | None = None,
        time_dim: int = 1,
        v0: torch.Tensor | None = None,
        return_v: bool = False,
        return_h: bool = False,
        **options,
    ):
        if torch.jit.is_tracing():
            raise RuntimeError(
                f"{name}: torch.jit.trace (and torch.onnx.export(dynamo=False), which is built on it) would record "
                "this call's spikes as a constant; export with torch.export.export or compile with torch.compile instead"
            )
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected x to be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(f"{name}: expected a tensor of shape [B, T, ...], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor of shape [B, T, ...], got {str(x.dtype).replace('torch.', '')}")
        if time_dim not in TIME_DIMS:
            raise ValueError(f"{name}: time_dim must be 1 ([B, T, ...]) or 0 ([T, B, ...]), got {time_dim!r}")
        try:
            spec = resolve_spec(spec, gamma, **options)
            x_bt = x.transpose(0, 1) if time_dim == 0 else x
            # A number already in range is what neuron_shape_param returns (tested here in eager; a number
            # Dynamo traces symbolically cannot be tested, neuron_shape_param knows that).
            compiling = torch.compiler.is_compiling()
            if compiling or not (type(tau) is float and 0.0 <= tau <= 1.0):
                tau = neuron_shape_param(tau, "tau", x_bt)
            if compiling or not (type(thresh) is float and math.isfinite(thresh)):
                thresh = neuron_shape_param(thresh, "thresh", x_bt)
            if v0 is not None:
                step_shape = (x_bt.shape[0], *x_bt.shape[2:])
                if not isinstance(v0, torch.Tensor) or not v0.is_floating_point():
                    raise TypeError(f"v0 must be a float tensor of one step's shape {step_shape}")
                try:
                    v0 = v0.expand(step_shape)
                except RuntimeError:
                    raise ValueError(f"v0 of shape {tuple(v0.shape)} does not broadcast to one step's shape {step_shape}") from None
                if v0.device != x.device:
                    raise ValueError(f"v0 is on {v0.device} but the input is on {x.device}")
            if spec.custom and not accepts_custom_surrogate:
                raise ValueError("a custom surrogate (a spike function) runs on the eager and reference backends only")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from None
        if x_bt.shape[1] == 0:  # no time steps: nothing fires, the state is the initial one (every backend alike)
            spikes = x_bt * 0
            v = (x_bt.new_zeros((x_bt.shape[0], *x_bt.shape[2:])) if v0 is None else v0.to(x.dtype)) if return_v else None
            h = spikes.detach() if return_h else None
        else:
            spikes, v, h = core(x_bt, tau, thresh, spec, v0, bool(return_v), bool(return_h), time_dim == 0)
            if return_h and not h_has_gradient and torch.is_grad_enabled() and any(
                    isinstance(t, torch.Tensor) and t.requires_grad for t in (x_bt, tau, thresh, v0)):
                h = h_gradient(h, x_bt, tau, thresh, spec, v0, spikes)
        if time_dim == 0:
            spikes = spikes.transpose(0, 1)
            h = None if h is None else h.transpose(0, 1)
        if return_v or return_h:
            return LIFOutput(spikes, v, h)
        return spikes

    lif.__name__ = lif.__qualname__ = name
    lif.__doc__ = (
        f"""Spikes of a LIF layer driven by ``x`` (``[B, T, ...]``, or ``[T, B, ...]`` with ``time_dim=0``).

        ``{name}`` implements the neuron specified in :mod:`snn.lif.spec` (read it for the math).
        ``tau``/``thresh``: numbers, or tensors broadcastable over the neuron dims (learnable when they
        require grad). ``gamma`` is the seed's name for the triangle surrogate's ``alpha``. The neuron's
        options (:class:`snn.lif.spec.LIFOptions`) as keywords, or all of them as ``spec=LIFSpec(...)``;
        ``surrogate`` may be a spike function on the eager and reference backends.
        ``v0``: initial potential (one step's shape). Returns the spikes, or ``LIFOutput(spikes, v, h)``
        when ``return_v`` (final potential) or ``return_h`` (pre-reset potentials) is set; both are
        differentiable (a membrane-potential loss on ``h`` works on every backend).
        """
    )
    return lif
