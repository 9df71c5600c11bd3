"""The reference LIF against hand-computed spikes and gradients (the definition everything else meets)."""

import pytest
import torch

from snn.lif.backends import get_lif_function
from snn.errors import UserError
from snn.lif.layers import LIFSpike
from snn.lif.reference import lif_reference, lif_reference_unbind


def run(values, tau=0.5, thresh=1.0, gamma=1.0, fn=lif_reference):
    x = torch.tensor(values, dtype=torch.float32).reshape(1, len(values), 1)
    return fn(x, tau, thresh, gamma).flatten().tolist()


@pytest.mark.parametrize("fn", [lif_reference, lif_reference_unbind])
def test_hand_computed_spikes(fn):
    # v: 0.6, 0.9, 1.05 -> spike and reset to 0, then 2.0 -> spike
    assert run([0.6, 0.6, 0.6, 2.0], fn=fn) == [0, 0, 1, 1]
    # exactly at threshold does not spike (strict >): v = 1.0, then 0.5 + 0.5 = 1.0 again
    assert run([1.0, 0.5], fn=fn) == [0, 0]
    # the reset matters: without it the second step would be 0.75 + 0.9 = 1.65 and spike
    assert run([1.5, 0.9], fn=fn) == [1, 0]
    # T = 1
    assert run([1.5], fn=fn) == [1]
    assert run([0.99], fn=fn) == [0]
    # other tau / thresh: v = 0.4, 0.4*0.9 + 0.4 = 0.76 > 0.7
    assert run([0.4, 0.4], tau=0.9, thresh=0.7, fn=fn) == [0, 1]


def grad_of(values, grad_spikes, tau=0.5, thresh=1.0, gamma=1.0):
    x = torch.tensor(values, dtype=torch.float32).reshape(1, len(values), 1).requires_grad_()
    lif_reference(x, tau, thresh, gamma).backward(torch.tensor(grad_spikes).reshape(1, -1, 1))
    return x.grad.flatten().tolist()


def test_hand_computed_gradient_single_step():
    # h = 1.2: surrogate = max(0, 1 - |0.2|) = 0.8
    assert grad_of([1.2], [1.0]) == pytest.approx([0.8], rel=1e-6)
    # gamma = 0.5: max(0, 0.5 - 0.2) / 0.25 = 1.2; outside the window (|h - thresh| >= gamma) it is 0
    assert grad_of([1.2], [1.0], gamma=0.5) == pytest.approx([1.2], rel=1e-6)
    assert grad_of([1.6], [1.0], gamma=0.5) == [0.0]


def test_hand_computed_gradient_through_the_reset():
    # x = [1.2, 0.3]: h0 = 1.2 spikes (sg0 = 0.8) and resets; h1 = 0.3, sg1 = max(0, 1 - 0.7) = 0.3.
    # Only the last spike has a gradient: g_h1 = 1 * 0.3; carry c = tau * 0.3 = 0.15.
    # g_h0 = g_s0*sg0 + c*((1 - s0) - h0*sg0) = 0 + 0.15 * (0 - 1.2 * 0.8) = -0.144  (reset not detached)
    assert grad_of([1.2, 0.3], [0.0, 1.0]) == pytest.approx([-0.144, 0.3], rel=1e-5)


def recurrence_gradient(x, grad_spikes, tau, thresh, gamma):
    """The backward recurrence in plain Python floats (the formula the kernel implements)."""
    h_values, v = [], 0.0
    for x_t in x:
        h = v * tau + x_t
        s = 1.0 if h - thresh > 0 else 0.0
        h_values.append((h, s))
        v = h * (1 - s)
    grads, carry = [0.0] * len(x), 0.0
    for t in reversed(range(len(x))):
        h, s = h_values[t]
        sg = max(0.0, gamma - abs(h - thresh)) / gamma**2
        g_h = grad_spikes[t] * sg + carry * ((1 - s) - h * sg)
        grads[t], carry = g_h, tau * g_h
    return grads


def test_reference_backward_matches_the_recurrence():
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        steps = int(torch.randint(1, 12, (1,), generator=generator))
        tau, thresh, gamma = (float(v) for v in torch.rand(3, generator=generator) * torch.tensor([1.0, 1.5, 1.5]) + torch.tensor([0.0, 0.25, 0.25]))
        x = (thresh + 0.8 * torch.randn(steps, generator=generator, dtype=torch.float64)).tolist()
        g = torch.randn(steps, generator=generator, dtype=torch.float64).tolist()
        x64 = torch.tensor(x, dtype=torch.float64).reshape(1, steps, 1).requires_grad_()
        lif_reference(x64, tau, thresh, gamma).backward(torch.tensor(g, dtype=torch.float64).reshape(1, steps, 1))
        assert x64.grad.flatten().tolist() == pytest.approx(recurrence_gradient(x, g, tau, thresh, gamma), rel=1e-9, abs=1e-12)


def test_unbind_variant_equals_indexing_variant():
    x = (1.0 + 0.5 * torch.randn(7, 9, 33)).requires_grad_()
    g = torch.randn(7, 9, 33)
    a = lif_reference(x, 0.7, 1.0, 0.8)
    (ga,) = torch.autograd.grad(a, x, g)
    b = lif_reference_unbind(x, 0.7, 1.0, 0.8)
    (gb,) = torch.autograd.grad(b, x, g)
    assert torch.equal(a, b)
    torch.testing.assert_close(ga, gb, rtol=0, atol=0)


def test_stride_zero_time_dimension_equals_materialised_input():
    base = (1.0 + 0.5 * torch.randn(5, 40)).requires_grad_()
    g = torch.randn(5, 6, 40)
    broadcast = base.unsqueeze(1).expand(5, 6, 40)
    assert broadcast.stride(1) == 0
    out = lif_reference(broadcast)
    (grad_base,) = torch.autograd.grad(out, base, g)
    copy = base.detach().unsqueeze(1).repeat(1, 6, 1).requires_grad_()
    out_copy = lif_reference(copy)
    (grad_copy,) = torch.autograd.grad(out_copy, copy, g)
    assert torch.equal(out, out_copy)
    torch.testing.assert_close(grad_base, grad_copy.sum(1))


def test_spikes_keep_input_dtype_and_shape():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.randn(2, 3, 4, 5).to(dtype)
        out = lif_reference(x)
        assert out.dtype == dtype and out.shape == x.shape
        assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_rank_below_two_is_refused():
    with pytest.raises(ValueError, match=r"\[B, T, \.\.\.\]"):
        lif_reference(torch.ones(4))


def test_module_uses_registered_backend_and_unknown_backend_is_one_sentence():
    layer = LIFSpike(tau=0.25, thresh=0.5, gamma=2.0, backend="torch")
    x = torch.randn(3, 4, 5)
    assert torch.equal(layer(x), lif_reference(x, 0.25, 0.5, 2.0))
    assert "backend='torch'" in repr(layer)
    with pytest.raises(UserError, match="unknown backend 'cuda-magic'; supported backends are: torch, eager, triton, reference"):
        get_lif_function("cuda-magic")


def test_missing_triton_package_is_one_sentence(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    with pytest.raises(UserError, match="backend 'triton' needs the 'triton' package"):
        get_lif_function("triton")
