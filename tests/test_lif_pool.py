"""The fused LIF + 2x2 max-pooling (snn/lif/pool.py, kernels/lif/cpu_pool.py) against the unfused pair:
spikes and input gradients bit for bit, in every dtype and neuron option, on shapes whose row pairs
do not fill the kernel's tiles, with inputs on the threshold; and where it does not run, the unfused
code runs instead."""

import pytest
import torch

from snn.csnn import CSNNConfig, SpikingCSNN
from snn.kernels.lif import cpu_launch, cpu_pool
from snn.lif.layers import LIFSpike
from snn.lif.pool import fusable, lif_max_pool2d, unfused

from lif_helpers import count_calls, poison_cpu_outputs, saved_tensors

pytestmark = pytest.mark.skipif(not cpu_launch.available(), reason="no C compiler: the fused CPU kernels do not build")

OPTIONS = [
    dict(tau=1.0, surrogate="atan"),  # the CSNN's IF neuron
    dict(),  # the seed's neuron
    dict(tau=0.7, reset="soft", surrogate="sigmoid"),
    dict(tau=0.9, reset="subtract_next", detach_reset=True, surrogate="fast_sigmoid"),
    dict(tau=0.8, v_reset=-0.3, detach_reset=True, surrogate="rectangle"),
]
# (B, T, C, H, W): tiles of 51 row pairs at W=10 (N=300 is under one tile); 98 pairs of 28 in 6 tiles,
# the last partial; the smallest window; a row of the widest the kernel takes
SHAPES = [(3, 4, 5, 6, 10), (2, 3, 7, 28, 28), (2, 5, 3, 14, 14), (1, 2, 1, 2, 2), (1, 2, 1, 2, 512)]


def near_threshold(shape, dtype, thresh=1.0):
    """Inputs around the threshold, a tenth of them exactly on it."""
    x = torch.randn(shape) * 1.2 + 0.6
    return torch.where(torch.rand(shape) < 0.1, torch.tensor(thresh), x).to(dtype)


def run_both(layer, base, stride0, grad_of):
    """(pooled, grad) fused and unfused, for a fresh leaf copy of ``base`` ([B, C, H, W] shown at every
    step when ``stride0``)."""
    results = []
    for fn in (lambda x: lif_max_pool2d(layer, x), lambda x: unfused(layer, x)[0]):
        leaf = base.clone().requires_grad_()
        x = leaf.unsqueeze(1).expand(base.shape[0], grad_of.shape[1], *base.shape[1:]) if stride0 else leaf
        pooled = fn(x)
        pooled.backward(grad_of)
        results.append((pooled, leaf.grad))
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "seed")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("stride0", [False, True], ids=["per-step", "stride0"])
def test_fused_equals_unfused_bit_for_bit(monkeypatch, dtype, options, shape, stride0):
    torch.manual_seed(hash((shape, stride0)) % 1000)
    layer = LIFSpike(**options)
    B, T, C, H, W = shape
    base = near_threshold((B, C, H, W) if stride0 else shape, dtype)
    grad = torch.randn(B, T, C, H // 2, W // 2).to(dtype)
    grad[..., 0, 0] = -0.0  # F.max_pool2d's backward turns -0 into +0 (0 + g): so must the kernel
    x = base.unsqueeze(1).expand(shape) if stride0 else base
    assert fusable(layer, x)
    poison_cpu_outputs(monkeypatch)
    (fused, g_fused), (plain, g_plain) = run_both(layer, base, stride0, grad)
    assert fused.shape == (B, T, C, H // 2, W // 2) and fused.is_contiguous()
    assert torch.equal(fused, plain)
    assert torch.equal(g_fused, g_plain)
    assert torch.equal(torch.signbit(g_fused), torch.signbit(g_plain))
    assert 0 < fused.float().mean() < 1  # both spikes and silence were pooled


def test_under_no_grad_the_forward_alone_runs():
    layer = LIFSpike(tau=1.0, surrogate="atan")
    x = near_threshold((2, 3, 4, 6, 6), torch.float32).requires_grad_()
    with torch.no_grad():
        out = lif_max_pool2d(layer, x)
    assert out.grad_fn is None and torch.equal(out, unfused(layer, x.detach())[0])


@pytest.mark.parametrize("case", ["eager-backend", "tensor-thresh", "odd-height", "odd-width", "too-wide", "4d",
                                  "strided-neurons", "hooked", "input-scale"])
def test_where_the_kernel_does_not_run_the_unfused_pair_does(case):
    layer = LIFSpike(tau=1.0, surrogate="atan", backend="eager" if case == "eager-backend" else "torch",
                     **({"input_scale": 0.5} if case == "input-scale" else {}))
    if case == "tensor-thresh":
        layer = LIFSpike(tau=1.0, thresh=torch.full((3, 1, 1), 1.0), surrogate="atan")
    shape = {"odd-height": (2, 2, 3, 7, 6), "odd-width": (2, 2, 3, 6, 7), "too-wide": (1, 2, 1, 2, 2 * cpu_pool.max_width())}
    x = near_threshold(shape.get(case, (2, 2, 3, 6, 6)), torch.float32)
    if case == "4d":
        x = x.flatten(1, 2)
    if case == "strided-neurons":
        x = near_threshold((2, 2, 3, 6, 12), torch.float32)[..., ::2]
    if case == "hooked":
        seen = []
        layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert not fusable(layer, x)
    if case == "4d":
        return
    out = lif_max_pool2d(layer, x)
    assert torch.equal(out, unfused(layer, x)[0])
    if case == "hooked":
        assert seen == [x.shape, x.shape]  # the hook saw the layer's full-resolution spikes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_csnn_trains_as_the_unfused_network_does(dtype):
    """One step of the CSNN's plain forward (fused blocks) and of forward_with_spikes (unfused): the same
    outputs, every parameter gradient and the BN running statistics, bit for bit."""
    torch.manual_seed(0)
    fused = SpikingCSNN(CSNNConfig(channels=6))
    plain = SpikingCSNN(CSNNConfig(channels=6))
    plain.load_state_dict(fused.state_dict())
    images = torch.rand(5, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out_fused, out_plain = fused(images), plain.forward_with_spikes(images)[0]
    assert torch.equal(out_fused, out_plain)
    out_fused.float().square().sum().backward()
    out_plain.float().square().sum().backward()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        assert torch.equal(a.grad, b.grad), name
    for (name, a), b in zip(fused.named_buffers(), plain.buffers()):
        assert torch.equal(a, b), name


def test_the_fused_blocks_save_only_their_inputs():
    """Saved for the backward (storages, once): the fused blocks keep no spikes, indices or potentials of their own."""
    torch.manual_seed(0)
    model = SpikingCSNN(CSNNConfig(channels=4))
    images = torch.rand(3, 1, 28, 28)

    def saved_bytes(forward):
        with saved_tensors() as saved:
            forward(images).sum()
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}.values())

    fused = saved_bytes(model)
    plain = saved_bytes(lambda x: model.forward_with_spikes(x)[0])
    # unfused, each block also saves its full-resolution spikes (4 B per neuron-step) and int64 indices
    spikes1, spikes2 = 3 * 4 * 4 * 28 * 28 * 4, 3 * 4 * 4 * 14 * 14 * 4
    assert plain - fused >= spikes1 + spikes2


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_torch_compile_calls_the_fused_kernel_forward_and_backward(monkeypatch, compiler):
    """Under torch.compile the CSNN's blocks run the kernel as the opaque ops snn::lif_pool_fwd/bwd: the
    same spikes and gradients as eager (bit for bit under aot_eager; Inductor reorders other layers'
    sums, so to rounding there)."""
    calls = count_calls(monkeypatch, {"forward": (cpu_pool, "lif_pool_forward"), "backward": (cpu_pool, "lif_pool_backward")})
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = SpikingCSNN(CSNNConfig(channels=4))
    images = torch.rand(6, 1, 28, 28)
    compiled = torch.compile(model, backend=compiler)
    out = compiled(images)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    assert calls == {"forward": 2, "backward": 2}
    ref = model(images)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(model.parameters()))
    if compiler == "aot_eager":
        assert torch.equal(out, ref) and all(torch.equal(g, r) for g, r in zip(grads, ref_grads))
    else:
        torch.testing.assert_close(out, ref)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4 * max(x.abs().max().item() for x in ref_grads))
