"""Per-step layers on ``[B, T, ...]`` tensors: :class:`TimeDistributed`, :func:`apply_per_step`, :func:`direct_encode`.

A per-step layer (conv, pooling, linear, flatten, ...) sees one step's batch ``[B, ...]``; over a
``[B, T, ...]`` tensor it is applied to every step. How, is chosen per call:

* **Once, when the input does not change over time.** A stride-0 time dimension (what
  :func:`direct_encode` returns: the same image at every step) holds one value per sample, so a
  layer that computes each sample on its own (:func:`time_invariant`: no batch statistics in
  training, no random masks) runs once on ``x[:, 0]`` and its output is broadcast over T, stride 0
  again. That is T times fewer FLOPs forward and backward (autograd sums the T gradients before
  the layer's backward, which is linear in them), and equal to applying it T times up to the
  rounding of that sum. :class:`snn.model.SpikingMLP` and :class:`snn.csnn.SpikingCSNN` did this
  by hand.
* **Folded into the batch**, in chunks of steps: ``fold="all"`` is one call over ``[B*T, ...]``
  (SpikingJelly's ``SeqToANNContainer``), an int ``k`` is T/k calls over ``[B*k, ...]``
  (``k=1``: snnTorch's step-by-step loop), ``"auto"`` (the default) picks by layer type from
  :data:`IMAGES_PER_CALL`, measured with ``python -m benchmarks.interleaved folding`` (benchmarks/RESULTS.md,
  "TimeDistributed folding"). On this project's 2-core CPU one call over all of T was the fastest
  or equal for every layer measured (tutorial 6's convs and linear at 800 and 6,400 images per
  call), unlike the 1.5x that issue 17 measured elsewhere for a 6,400-image conv backward, so the
  table is empty and ``"auto"`` folds all of T; a machine where chunks win gets an entry.

Layout safety: time is dim 1. A layer whose per-step rank is known (``ConvNd``, ``BatchNormNd``,
``MaxPoolNd``/``AvgPoolNd``, ``Linear``) refuses, in one sentence, an input of another rank (a
single step ``[B, C, H, W]`` given to a conv layer would otherwise be folded over channels); with
``time_steps=T`` an input whose dim 1 is not T is refused (a ``[T, B, ...]`` tensor given as
``[B, T, ...]``); without it, an input whose first two sizes are those of an earlier call swapped
is warned about once.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

# Layer type -> at most this many images (B * steps) per call under fold="auto"; a type not listed is
# folded whole. Measured with python -m benchmarks.interleaved folding (see the module docstring): empty here.
IMAGES_PER_CALL: dict[type, int] = {}
# Layers that compute each sample on its own in any mode (no batch statistics, no randomness).
_PER_SAMPLE = (
    nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.Flatten, nn.Unflatten, nn.Identity, nn.Sequential,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd, nn.LayerNorm, nn.GroupNorm,
    nn.Upsample, nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softmax,
    nn.LogSoftmax, nn.PReLU,
)
# ... and those that do only in eval mode (training: batch statistics, random masks).
_PER_SAMPLE_IN_EVAL = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.RReLU)


def time_invariant(module: nn.Module) -> bool:
    """Whether ``module`` (and every submodule) maps each sample on its own, deterministically, in its
    current mode: then a layer over T identical steps equals the layer over one, broadcast."""
    for m in module.modules():
        if isinstance(m, _PER_SAMPLE_IN_EVAL):
            if m.training:
                return False
        elif not isinstance(m, _PER_SAMPLE):
            return False
    return True


def fold_time(x: torch.Tensor) -> torch.Tensor:
    """``[B, T, ...]`` -> ``[B*T, ...]`` (a view for contiguous LIF outputs): time folded into the batch."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold_time(x: torch.Tensor, batch: int) -> torch.Tensor:
    """``[B*T, ...]`` -> ``[B, T, ...]``: the inverse of :func:`fold_time`."""
    return x.reshape(batch, x.shape[0] // batch, *x.shape[1:])


def direct_encode(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Present the static input ``x`` of shape ``[B, ...]`` at every step: ``[B, T, ...]``.

    Returns a broadcast view (stride 0 on the time dimension): no copy, and the caller's tensor
    is neither modified nor reallocated. Autograd sums the gradient over T. A
    :class:`TimeDistributed` layer runs once on such an input.
    """
    if time_steps < 1:
        raise ValueError(f"direct_encode: time_steps must be >= 1, got {time_steps}")
    return x.unsqueeze(1).expand(x.shape[0], time_steps, *x.shape[1:])


def apply_per_step(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample ``module`` to every step of ``x [B, T, ...]`` by folding T into the batch."""
    batch, steps = x.shape[:2]
    y = module(x.reshape(batch * steps, *x.shape[2:]))
    return y.reshape(batch, steps, *y.shape[1:])


def _chunked(module: nn.Module, x: torch.Tensor, steps_per_call: int) -> torch.Tensor:
    """``module`` on ``steps_per_call`` steps at a time: time-major chunks (views), outputs concatenated."""
    batch, steps = x.shape[:2]
    x_tm = x.transpose(0, 1).contiguous()  # [T, B, ...]: each chunk of steps is a view
    outs = [module(x_tm[t:t + steps_per_call].reshape(-1, *x.shape[2:])) for t in range(0, steps, steps_per_call)]
    y = torch.cat(outs)
    return y.reshape(steps, batch, *y.shape[1:]).transpose(0, 1)


def _first_layer(module: nn.Module) -> nn.Module:
    while isinstance(module, nn.Sequential) and len(module):
        module = module[0]
    return module


_SPATIAL = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
            nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.batchnorm._BatchNorm)


def _step_ranks(layer: nn.Module) -> tuple[int, ...] | None:
    """The ranks of one step's batch that ``layer`` takes (None: not known)."""
    if isinstance(layer, nn.BatchNorm1d):
        return (2, 3)
    if isinstance(layer, _SPATIAL):
        name = type(layer).__name__
        spatial = next((n for n in (1, 2, 3) if name.endswith(f"{n}d")), None)
        return None if spatial is None else (spatial + 2,)
    if isinstance(layer, nn.Linear):
        return tuple(range(2, 9))
    return None


class TimeDistributed(nn.Module):
    """A per-step ``module`` over ``[B, T, ...]`` (the seed's ``tdLayer`` / SpikingJelly's ``SeqToANNContainer``).

    ``fold``: ``"auto"`` (default; by layer type and size, see the module docstring), ``"all"``
    (one call over ``[B*T, ...]``) or an int (steps per call). ``broadcast``: run ``module`` once on
    a stride-0 (directly encoded) input and broadcast the result; ``None`` (default) does where
    :func:`time_invariant` says that is exact, ``False`` never. ``time_steps``: refuse inputs whose
    dim 1 is not this T.
    """

    def __init__(self, module: nn.Module, *, fold: str | int = "auto", broadcast: bool | None = None,
                 time_steps: int | None = None):
        super().__init__()
        if not (fold in ("auto", "all") or (isinstance(fold, int) and not isinstance(fold, bool) and fold >= 1)):
            raise ValueError(f"TimeDistributed: fold must be 'auto', 'all' or a number of steps >= 1, got {fold!r}")
        if time_steps is not None and (not isinstance(time_steps, int) or time_steps < 1):
            raise ValueError(f"TimeDistributed: time_steps must be a whole number >= 1, got {time_steps!r}")
        self.module = module
        self.fold = fold
        self.broadcast = broadcast
        self.time_steps = time_steps
        self._seen: tuple[int, int] | None = None  # (B, T) of the first eager call, for the swap warning

    def extra_repr(self) -> str:
        options = [f"fold={self.fold!r}"] if self.fold != "auto" else []
        if self.broadcast is not None:
            options.append(f"broadcast={self.broadcast}")
        if self.time_steps is not None:
            options.append(f"time_steps={self.time_steps}")
        return ", ".join(options)

    def steps_per_call(self, x: torch.Tensor) -> int:
        """How many steps of ``x`` one call of the module gets (T: fold all)."""
        batch, steps = x.shape[0], x.shape[1]
        if self.fold == "all":
            return steps
        if isinstance(self.fold, int):
            return min(self.fold, steps)
        limits = [limit for kind, limit in IMAGES_PER_CALL.items() for m in self.module.modules() if isinstance(m, kind)]
        if limits and batch * steps > min(limits):
            return max(1, min(limits) // max(batch, 1))
        return steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_layout(x)
        steps = x.shape[1]
        if steps > 1 and x.stride(1) == 0 and self.broadcast is not False and (
                self.broadcast or time_invariant(self.module)):
            y = self.module(x[:, 0])
            return y.unsqueeze(1).expand(y.shape[0], steps, *y.shape[1:])
        per_call = self.steps_per_call(x)
        if per_call >= steps:
            return apply_per_step(self.module, x)
        return _chunked(self.module, x, per_call)

    def _check_layout(self, x: torch.Tensor) -> None:
        layer = _first_layer(self.module)
        ranks = _step_ranks(layer)
        if x.dim() < 2 or (ranks is not None and x.dim() - 1 not in ranks):
            want = " or ".join(f"{r + 1}-D" for r in (ranks or (1,)))
            raise ValueError(
                f"TimeDistributed({type(layer).__name__}): expected a {want} [B, T, ...] input (time on dim 1), "
                f"got shape {tuple(x.shape)}; give one step [B, ...] as x.unsqueeze(1)."
            )
        if self.time_steps is not None and x.shape[1] != self.time_steps:
            raise ValueError(
                f"TimeDistributed({type(layer).__name__}): built for T={self.time_steps} steps on dim 1, got shape "
                f"{tuple(x.shape)}; a [T, B, ...] tensor needs x.transpose(0, 1)."
            )
        if torch.compiler.is_compiling() or self.time_steps is not None:
            return
        batch, steps = int(x.shape[0]), int(x.shape[1])
        if self._seen is None:
            self._seen = (batch, steps)
        elif (steps, batch) == self._seen and batch != steps:
            warnings.warn(
                f"TimeDistributed({type(layer).__name__}): an input of shape {tuple(x.shape)} after one of "
                f"[{self._seen[0]}, {self._seen[1]}, ...]: time is dim 1, so this looks like [T, B, ...] "
                "(x.transpose(0, 1) fixes it; time_steps=T refuses such inputs).", UserWarning, stacklevel=3)
            self._seen = (-1, -1)  # once per layer
