"""The host side of the 16-bit save's threshold-consistent rounding: the clamp bounds that
:func:`kernels.lif.triton_kernels._round_to_side` applies, computed once per launch (a number
``thresh``: four scalar arguments; a per-neuron ``thresh``: a ``[4, N]`` tensor the kernel loads
per tile). ``tests/proofs/prove_round_to_side.py`` checks the rule over all 2**32 fp32 values.
"""

from __future__ import annotations

import math

import torch


def _side_bounds(thresh, dtype: torch.dtype):
    """``(lo_fire, hi_fire, lo_rest, hi_rest)``: the clamp intervals of ``_round_to_side``.

    ``thresh`` (a number: four floats; a tensor: four tensors of its shape) is first rounded to
    fp32 (the kernel compares in fp32). ``lo_fire`` is the smallest ``dtype`` value > thresh,
    ``hi_rest`` the largest <= thresh; ``hi_fire`` = max(lo_fire, big) (inf when thresh >= big: the
    nudge past big is inf) and ``lo_rest`` = min(hi_rest, -big), with ``hi_rest`` capped at big
    (thresh = inf). A zero ``lo_fire`` / ``hi_rest`` becomes the fp32 subnormal of the nudge's sign
    (-2**-149 / +2**-149): it rounds to the zero the nudge makes (-0 above, +0 below) and, unlike a
    signed zero, never ties with an ``h`` of +-0 in the kernel's max/min (whose choice between +0
    and -0 is not pinned down). A NaN thresh (nothing spikes) leaves only the saturation. For
    float32 nothing is rounded: all four are thresh.
    """
    is_number = not isinstance(thresh, torch.Tensor)
    t = torch.tensor(thresh, dtype=torch.float32) if is_number else thresh.detach().to(torch.float32).cpu()
    if dtype == torch.float32:
        bounds = (t, t, t, t)
    else:
        big = torch.finfo(dtype).max
        q = t.to(dtype)  # round to nearest (inf passes through)
        inf = torch.full_like(q, math.inf)
        below = torch.where(q.float() > t, torch.nextafter(q, -inf), q).float()
        above = torch.where(q.float() <= t, torch.nextafter(q, inf), q).float()
        tiny = torch.tensor(2.0**-149, dtype=torch.float32)
        below = torch.where(below == 0, tiny, below.clamp(max=big))
        above = torch.where(above == 0, -tiny, above)
        nan = t.isnan()
        bounds = (
            torch.where(nan, big, above),
            torch.where(nan, big, above.clamp(min=big)),
            torch.where(nan, -big, below.clamp(max=-big)),
            torch.where(nan, big, below),
        )
    return tuple(b.item() for b in bounds) if is_number else bounds
