"""Property test: for any small input, the fused LIF kernel agrees with the reference.

Hypothesis draws the shape (including B = 0 and T = 1), the dtype, the parameters and the values,
mixing values right at / one fp32 step either side of the threshold, signed zeros, inf and NaN with
ordinary ones. Kept to a few dozen examples of a few hundred neurons: the CPU runs the interpreter.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snn.kernels.lif.triton_launch as L  # noqa: F401  (first: it picks the interpreter)
from lif_helpers import assert_grad_close, time_major_storage
from snn.kernels import lif_triton
from snn.lif.reference import lif_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def values_strategy(thresh: float, gamma: float):
    t32 = torch.tensor(thresh, dtype=torch.float32)
    up = torch.nextafter(t32, torch.tensor(math.inf)).item()
    down = torch.nextafter(t32, torch.tensor(-math.inf)).item()
    special = st.sampled_from([thresh, up, down, thresh + gamma, thresh - gamma, 0.0, -0.0, math.inf, -math.inf, math.nan])
    ordinary = st.floats(min_value=-4.0, max_value=4.0, width=32)
    return st.one_of(special, ordinary, ordinary, ordinary)


@st.composite
def cases(draw):
    B = draw(st.integers(0, 3))
    T = draw(st.integers(1, 5))
    trail = draw(st.sampled_from([(1,), (7,), (40,), (2, 3), (3, 1, 5)]))
    dtype = draw(st.sampled_from(DTYPES))
    tau = draw(st.floats(min_value=0.0625, max_value=1.0, width=32))
    thresh = draw(st.floats(min_value=-1.0, max_value=2.0, width=32))
    gamma = draw(st.floats(min_value=0.0625, max_value=2.0, width=32))
    n = B * T * math.prod(trail)
    values = draw(st.lists(values_strategy(thresh, gamma), min_size=n, max_size=n))
    grads = draw(st.lists(st.floats(-2, 2, width=32), min_size=n, max_size=n))
    transpose = draw(st.booleans())
    return B, T, trail, dtype, tau, thresh, gamma, values, grads, transpose


# tiles of 16 neurons (the drawn shapes have up to 40), outputs poisoned: the small_tiles
# fixture of tests/conftest.py
pytestmark = [pytest.mark.small_tiles(16), pytest.mark.usefixtures("small_tiles")]


# The examples are derandomized (the same 100 every run), so whether a change lands is not decided
# by which examples a fresh random seed draws. SNN_HYPOTHESIS_EXPLORE=1 explores new ones (and
# replays what it found from .hypothesis/); a counterexample found that way becomes a regression
# test below.
DERANDOMIZE = not os.environ.get("SNN_HYPOTHESIS_EXPLORE")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy inf/NaN arithmetic in the interpreter
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=DERANDOMIZE, database=None if DERANDOMIZE else settings.default.database)
@given(case=cases())
def test_kernel_agrees_with_reference(device, case):
    check_agreement(device, case)


# Found by the random exploration on 2026-11-29: fp16, a steep triangle (gamma=0.22, slope
# 1/gamma**2 = 21), inputs exactly at the threshold. The kernel's gradient is 0.0175 off the fp32
# reference where the fp16 reference is 0.0038 off (the bound is 2x that + 2 eps x scale = 0.0165).
# Not yet explained (the saved 16-bit h amplified by the slope is the suspect); kept as a strict xfail
# so the day it is fixed, or the bound is derived for steep surrogates, this test says so.
STEEP_FP16_CASE = (2, 4, (1,), torch.float16, 0.53515625, 0.8498671650886536, 0.21875,
                   [0.6311171650886536, 0.0] + [0.8498671650886536] * 6, [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], False)


@pytest.mark.xfail(strict=True, reason="known: fp16 gradient beyond 2x the fp16 reference's error with a steep surrogate at the threshold")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_known_fp16_steep_surrogate_case(device):
    check_agreement(device, STEEP_FP16_CASE)


def check_agreement(device, case):
    B, T, trail, dtype, tau, thresh, gamma, values, grads, transpose = case
    shape = (B, T, *trail)
    x = torch.tensor(values, dtype=torch.float32).reshape(shape).to(dtype)
    if transpose:  # time-major storage
        x = time_major_storage(x)
    x = x.to(device)
    g = torch.tensor(grads, dtype=torch.float32).reshape(shape).to(dtype).to(device)

    xt = x.detach().requires_grad_()
    s = lif_triton(xt, tau, thresh, gamma)
    s.backward(g)
    xr = x.detach().float().requires_grad_()
    sr = lif_reference(xr, tau, thresh, gamma)
    sr.backward(g.float())

    assert torch.equal(s.float(), sr), "spikes differ from the fp32 reference"
    xl = None
    if dtype != torch.float32:  # the 16-bit reference, for the three-way check
        xl = x.detach().requires_grad_()
        lif_reference(xl, tau, thresh, gamma).backward(g)
    assert_grad_close(xt.grad, xr.grad, None if xl is None else xl.grad, dtype, "gradient")
