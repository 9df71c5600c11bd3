"""The eager backend (plain PyTorch, hand-written backward) is bit-identical to autograd of the reference."""

import pytest
import torch

from lif_helpers import make_layout, saved_bytes_per_element
from snn.lif.reference import lif_reference
from snn.lif.eager import lif_eager

LAYOUTS = ("contiguous", "transposed", "stride0", "trailing")
# (lif_helpers.make_layout kind, neuron dims): "stride0" is the first layer's broadcast input,
# "transposed" every dim stored in reverse ([9, T, 37], no dimension contiguous)
KINDS = {"contiguous": ("contiguous", (37,)), "transposed": ("reversed", (37,)), "stride0": ("stride0", (37,)),
         "trailing": ("contiguous", (3, 5))}


def make_input(layout, dtype, steps, generator):
    kind, trail = KINDS[layout]
    shape, build, _ = make_layout(kind, 9, steps, trail)
    base = (1.0 + 0.6 * torch.randn(*shape, generator=generator)).to(dtype).requires_grad_()
    return base, build(base)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("steps", [1, 2, 6, 17])
def test_bit_identical_to_reference_autograd(dtype, layout, steps):
    generator = torch.Generator().manual_seed(steps * 31 + LAYOUTS.index(layout))
    tau, thresh, gamma = (float(v) for v in torch.rand(3, generator=generator) * torch.tensor([0.9, 1.0, 1.0]) + torch.tensor([0.1, 0.5, 0.3]))
    results = []
    for fn in (lif_reference, lif_eager):
        base, x = make_input(layout, dtype, steps, torch.Generator().manual_seed(7))
        spikes = fn(x, tau, thresh, gamma)
        grad_out = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(8)).to(dtype)
        (grad,) = torch.autograd.grad(spikes, base, grad_out)
        results.append((spikes, grad))
    (ref_spikes, ref_grad), (spikes, grad) = results
    assert ref_spikes.float().mean() > 0.05, "the case must actually spike"
    assert torch.equal(spikes, ref_spikes) and spikes.dtype == dtype
    assert torch.equal(grad, ref_grad), f"max diff {(grad.float() - ref_grad.float()).abs().max()}"


def test_nan_and_inf_like_the_reference():
    x = torch.tensor([float("inf"), 1.0, float("nan"), -float("inf"), 1.5]).repeat(2, 3, 1).requires_grad_()
    out = [fn(x) for fn in (lif_reference, lif_eager)]
    grads = [torch.autograd.grad(o, x, torch.ones_like(o))[0] for o in out]
    assert torch.equal(out[0], out[1])
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0, equal_nan=True)


def saved_bytes_per_neuron_step(fn, x):
    return saved_bytes_per_element(fn, x)[0]


def test_saves_only_h():
    for dtype, limit in ((torch.float32, 4), (torch.bfloat16, 2), (torch.float16, 2)):
        x = torch.randn(8, 6, 50, dtype=dtype, requires_grad=True)
        assert saved_bytes_per_neuron_step(lif_eager, x) == limit
    assert saved_bytes_per_neuron_step(lif_reference, torch.randn(8, 6, 50, requires_grad=True)) == 16
    assert saved_bytes_per_neuron_step(lif_eager, torch.randn(8, 6, 50)) == 0, "nothing saved without grad"


def test_retain_graph_backward_twice_gives_the_same_gradient():
    x = (1.0 + 0.5 * torch.randn(4, 6, 33)).requires_grad_()
    spikes = lif_eager(x)
    g = torch.randn_like(spikes)
    (first,) = torch.autograd.grad(spikes, x, g, retain_graph=True)
    (second,) = torch.autograd.grad(spikes, x, g)
    assert torch.equal(first, second)


def test_bad_input_is_one_sentence():
    with pytest.raises(ValueError, match=r"lif_eager: expected a tensor of shape \[B, T, \.\.\.\]"):
        lif_eager(torch.ones(3))
    with pytest.raises(TypeError, match="expected a floating-point tensor"):
        lif_eager(torch.ones(2, 3, dtype=torch.int64))
    assert lif_eager(torch.empty(0, 4, 5)).shape == (0, 4, 5)
