"""Whether Triton runs the LIF kernels in its CPU interpreter: chosen here, on import, before
:mod:`kernels.lif.triton_kernels` decorates them.

When no CUDA device is present and the user has not chosen (``TRITON_INTERPRET`` unset and
``triton.knobs.runtime.interpret`` not set explicitly), importing this module sets
``TRITON_INTERPRET=1`` before the kernels are decorated (Triton 3.x reads it at decoration time, so
this works even when ``triton`` was imported earlier); the first launch logs one line saying the
kernel runs in the interpreter (:mod:`kernels.lif.triton_launch`). Only builtins of
``triton.language`` are used inside the kernels (no ``tl.cdiv``/``tl.zeros``/``tl.sum``/``tl.sigmoid``,
which are themselves ``@triton.jit`` functions and were decorated for the GPU if ``triton`` had
been imported before the interpreter was chosen). The interpreter truncates fp32 -> bf16 casts, so
bf16 is converted by hand with the bit-exact round-to-nearest-even that PyTorch and
``cvt.rn.bf16.f32`` use.
"""

from __future__ import annotations

import os

import torch


def _choose_interpreter() -> None:
    """Run Triton in its CPU interpreter when there is no CUDA device and the user has not chosen."""
    if "TRITON_INTERPRET" in os.environ:
        return
    try:  # an explicit ``triton.knobs.runtime.interpret = ...`` is a choice too
        from triton import knobs

        if "interpret" in vars(knobs.runtime):
            return
    except ImportError:  # older Triton without knobs: the environment variable is all there is
        pass
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


_choose_interpreter()
