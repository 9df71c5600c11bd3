"""torch.func over the functional LIF (issue 10, item 3): vmap, grad, per-sample gradients, jacrev, each against a loop.

The vmap rule (snn/lif/ops.py) moves the vmapped dimension into the neuron dimensions, so the same
per-element arithmetic runs as in the loop: spikes are compared exactly, gradients to fp32 rounding
(sums over batch and time may run in another order).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, jacrev, vmap

from snn.lif.backends import BACKENDS
from snn.lif.layers import lif_spike
from snn.model import MLPConfig, SpikingMLP

V, B, T, N = 3, 2, 4, 5


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def close(a, b, what):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_matches_loop(backend):
    """Batched x, v0 and (per vmapped element) tau; outputs spikes and the final potential; both time layouts."""
    x, v0, tau = rand(V, B, T, N), rand(V, B, N, seed=1) * 0.5, 0.3 + 0.3 * rand(V, N, seed=2)
    thresh = torch.full((N,), 0.9)

    def f(x, v0, tau, time_dim):
        return tuple(lif_spike(x, tau, thresh, backend=backend, v0=v0, return_v=True, time_dim=time_dim)[:2])

    for time_dim, xs in ((1, x), (0, x.transpose(1, 2))):
        spikes, v = vmap(f, in_dims=(0, 0, 0, None))(xs, v0, tau, time_dim)
        for i in range(V):
            ref_spikes, ref_v = f(xs[i], v0[i], tau[i], time_dim)
            assert torch.equal(spikes[i], ref_spikes), f"{backend} time_dim={time_dim}: spikes of element {i}"
            close(v[i], ref_v, f"{backend} final v of element {i}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_matches_autograd(backend):
    """torch.func.grad with respect to x, tensor tau, thresh and v0 equals torch.autograd."""
    x, v0 = rand(B, T, N), rand(B, N, seed=1) * 0.5
    tau, thresh = torch.full((N,), 0.6), torch.full((N,), 0.9)
    weights = rand(B, T, N, seed=3)

    def loss(x, tau, thresh, v0):
        out = lif_spike(x, tau, thresh, backend=backend, surrogate="sigmoid", v0=v0, return_v=True)
        return (out.spikes * weights).sum() + out.v.square().sum()

    grads = grad(loss, argnums=(0, 1, 2, 3))(x, tau, thresh, v0)
    leaves = [t.clone().requires_grad_() for t in (x, tau, thresh, v0)]
    loss(*leaves).backward()
    for name, g, leaf in zip(("x", "tau", "thresh", "v0"), grads, leaves):
        close(g, leaf.grad, f"{backend} grad of {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_gradients_match_loop(backend):
    """vmap(grad(...)) over a batch of SpikingMLP inputs (learnable tau/thresh): per-sample gradients."""
    torch.manual_seed(0)
    model = SpikingMLP(MLPConfig(in_features=6, hidden=5, num_classes=3, time_steps=3, learn_tau=True,
                                 learn_thresh=True), backend=backend)
    params = {k: v.detach() for k, v in model.named_parameters()}
    images, labels = rand(4, 6) * 2, torch.tensor([0, 2, 1, 2])

    def loss(params, image, label):
        logits = functional_call(model, params, (image.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(logits, label.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, images, labels)
    for i in range(len(images)):
        model.zero_grad()
        loss(dict(model.named_parameters()), images[i], labels[i]).backward()
        for name, p in model.named_parameters():
            close(per_sample[name][i], p.grad, f"{backend} sample {i} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacrev_matches_loop(backend):
    """The Jacobian of the final potential with respect to x (vmap over the backward op)."""
    x, tau = rand(1, T, 3), torch.full((3,), 0.6)

    def final_v(x):
        return lif_spike(x, tau, 0.9, backend=backend, return_v=True).v

    jac = jacrev(final_v)(x)
    for j in range(3):
        leaf = x.clone().requires_grad_()
        (row,) = torch.autograd.grad(final_v(leaf)[0, j], leaf)
        close(jac[0, j], row, f"{backend} jacobian row {j}")
