"""The outputs researchers train on and the parameters they set: a differentiable membrane output on
every backend, the single-step module, the leaky readout, the spike monitor, tau's range and the
constrained learnable parameters, and custom surrogates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snn.lif.backends import BACKENDS, get_lif_function
from snn.errors import UserError
from snn.lif.layers import LeakyReadout, LIFSpike, TimeDistributed, lif_spike
from snn.lif.reference import lif_reference
from snn.monitor import SpikeMonitor
from snn.lif.spec import LIFSpec
from snn.stateful import LIFStep

B, T, N = 3, 7, 37
SPECS = [LIFSpec(), LIFSpec("soft", surrogate="atan"), LIFSpec("subtract_next", detach_reset=True, surrogate="fast_sigmoid"),
         LIFSpec("hard", -0.2, True, "sigmoid")]


def drive(seed=0, shape=(B, T, N)):
    gen = torch.Generator().manual_seed(seed)
    return (0.2 + 1.1 * torch.rand(shape, generator=gen)).requires_grad_()


@pytest.mark.parametrize("spec", SPECS, ids=[f"{s.reset}-{s.surrogate}" for s in SPECS])
@pytest.mark.parametrize("backend", BACKENDS)
def test_membrane_loss_has_the_reference_gradient_on_every_backend(backend, spec):
    x = drive(1)
    tau = torch.full((N,), 0.7, requires_grad=True)
    thresh = torch.full((N,), 0.9, requires_grad=True)
    v0 = torch.rand(B, N, generator=torch.Generator().manual_seed(2)).requires_grad_()
    target = torch.rand(B, T, N, generator=torch.Generator().manual_seed(3))
    results = []
    for fn in (get_lif_function(backend), lif_reference):
        out = fn(x, tau, thresh, spec=spec, v0=v0, return_h=True)
        loss = (out.h - target).square().mean() + out.spikes.sum() * 0.01  # a membrane loss and a spike loss
        results.append((out.h.detach(), *torch.autograd.grad(loss, [x, tau, thresh, v0])))
    assert torch.equal(results[0][0], results[1][0]), "h values"
    for got, ref, name in zip(results[0][1:], results[1][1:], ("x", "tau", "thresh", "v0")):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item(), msg=lambda m: f"d/d{name}: {m}")


def test_snntorch_tutorial5_membrane_loss_without_tricks():
    snn_t = pytest.importorskip("snntorch")
    from snn import peers

    x = drive(4)
    theirs = snn_t.Leaky(beta=0.95)
    mem, mems = theirs.reset_mem(), []
    for t in range(T):
        _, mem = theirs(x[:, t], mem)
        mems.append(mem)
    target = torch.rand(B, T, N, generator=torch.Generator().manual_seed(5))
    ref = torch.autograd.grad((torch.stack(mems, 1) - target).square().sum(), x)[0]
    h = peers.leaky(0.95)(x, return_h=True).h  # snnTorch's mem
    torch.testing.assert_close(torch.autograd.grad((h - target).square().sum(), x)[0], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "eager", "reference"])
def test_single_step_module_equals_one_multi_step_call(backend):
    layer = LIFSpike(tau=torch.full((N,), 0.8), thresh=0.9, learn_tau=True, reset="subtract_next", detach_reset=True,
                     backend=backend)
    x = drive(6)
    g = torch.randn(B, T, N, generator=torch.Generator().manual_seed(7))
    whole = layer(x, return_v=True)
    ref = torch.autograd.grad((whole.spikes * g).sum() + whole.v.sum(), [x, layer.tau])
    step = LIFStep(layer)
    spikes = torch.stack([step(x[:, t]) for t in range(T)], 1)
    assert torch.equal(spikes, whole.spikes) and torch.equal(step.v, whole.v)
    got = torch.autograd.grad((spikes * g).sum() + step.v.sum(), [x, layer.tau])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    step.reset()
    assert step.v is None and torch.equal(step(x[:, 0].detach()), whole.spikes[:, 0])
    with pytest.raises(ValueError, match="call reset"):
        step(torch.zeros(B + 1, N))


def test_leaky_readout_is_the_leaky_integral_and_learns_tau():
    readout = LeakyReadout(tau=0.9, learn_tau=True)
    x = drive(8)
    out = readout(x)
    v, expect = torch.zeros(B, N), []
    for t in range(T):
        v = v * 0.9 + x[:, t]
        expect.append(v)
    assert torch.equal(out, torch.stack(expect, 1))
    out.sum().backward()
    assert readout.tau.grad is not None and x.grad is not None
    assert torch.equal(LeakyReadout(0.9, last_only=True, time_dim=0)(x.detach().transpose(0, 1)), out[:, -1].detach())
    with pytest.raises(ValueError, match="decay factor"):
        LeakyReadout(tau=2.0)


def test_spike_monitor_counts_any_network_of_our_layers():
    net = nn.Sequential(TimeDistributed(nn.Linear(N, 20)), LIFSpike(), TimeDistributed(nn.Linear(20, 5)),
                        LIFSpike(reset="soft"))
    x = drive(9)
    with SpikeMonitor(net) as monitor:
        net(x)
        net(x)
    hidden = net[1](net[0](x))
    rates = monitor.firing_rates()
    assert set(rates) == {"1", "3"} and rates["1"] == pytest.approx(hidden.detach().double().mean().item())
    assert monitor.neuron_steps["1"] == 2 * hidden.numel()
    net(x)  # hooks are gone after the with block
    assert monitor.neuron_steps["1"] == 2 * hidden.numel()


# ---- tau's meaning and the learnable parameters --------------------------------------------------

@pytest.mark.parametrize("bad", [2.0, -0.5, float("nan")])
def test_tau_outside_zero_one_is_refused_with_what_it_means(bad):
    for make in (lambda: LIFSpike(tau=bad), lambda: lif_spike(torch.rand(2, 3, 4), tau=bad)):
        with pytest.raises(ValueError) as caught:
            make()
        message = str(caught.value)
        assert "\n" not in message and ("decay factor" in message or "finite" in message)
    with pytest.raises(ValueError, match=r"1 - 1/tau_sj.*exp\(-dt/tau_m\)"):
        LIFSpike(tau=torch.tensor([0.5, 1.5]))
    assert LIFSpike(tau=1.0)(torch.rand(2, 3, 4)).shape == (2, 3, 4)  # IF: the edge of the range works


def test_learnable_tau_stays_in_range_and_keeps_its_checkpoint_key():
    layer = LIFSpike(tau=0.99, learn_tau=True, param_shape=(N,))
    assert list(layer.state_dict()) == ["tau"]  # checkpoints of earlier versions load as they did
    with torch.no_grad():
        layer.tau.fill_(284.0)  # what five SGD steps did before
    assert layer.effective_params()[0].max().item() == 1.0
    old = {"tau": torch.full((N,), 0.7)}
    layer.load_state_dict(old)
    assert torch.equal(layer.tau.detach(), old["tau"])


def test_sigmoid_parametrised_tau_has_exact_gradients_and_cannot_leave_zero_one():
    layer = LIFSpike(tau=0.8, learn_tau=True, param_shape=(N,), tau_param="sigmoid", backend="eager")
    logit = layer.parametrizations.tau.original
    x = drive(10)
    layer(x).sum().backward()
    tau = torch.sigmoid(logit.detach()).requires_grad_()
    (g_tau,) = torch.autograd.grad(get_lif_function("eager")(x, tau, 1.0).sum(), tau)
    torch.testing.assert_close(logit.grad, g_tau * tau.detach() * (1 - tau.detach()), rtol=1e-6, atol=0)
    with torch.no_grad():
        logit.fill_(1e4)
    assert layer.tau.max().item() <= 1.0
    with pytest.raises(ValueError, match="inside \\(0, 1\\)"):
        LIFSpike(tau=1.0, learn_tau=True, tau_param="sigmoid")


def test_learnable_thresh_is_kept_non_negative():
    layer = LIFSpike(thresh=0.5, learn_thresh=True)
    with torch.no_grad():
        layer.thresh.fill_(-3.0)
    assert layer.effective_params()[1].item() == 0.0


# ---- custom surrogates ----------------------------------------------------------------------------

class MyATan(torch.autograd.Function):
    """The atan surrogate (alpha 2) written as a user would."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * (1.0 / (1 + (z * torch.pi / 2 * 2).square()))


@pytest.mark.parametrize("backend", ["eager", "reference"])
@pytest.mark.parametrize("surrogate", [MyATan, MyATan.apply, lambda z: MyATan.apply(z)], ids=["Function", "apply", "lambda"])
def test_custom_surrogate_equals_the_named_one_on_eager_and_reference(backend, surrogate):
    x = drive(11)
    ours = LIFSpike(surrogate=surrogate, reset="soft", backend=backend)
    named = LIFSpike(surrogate="atan", reset="soft", backend="reference")
    s1, s2 = ours(x), named(x)
    assert torch.equal(s1, s2)
    g = torch.randn(B, T, N, generator=torch.Generator().manual_seed(12))
    torch.testing.assert_close(torch.autograd.grad((s1 * g).sum(), x)[0], torch.autograd.grad((s2 * g).sum(), x)[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_backends_refuse_a_custom_surrogate_in_one_sentence(backend):
    with pytest.raises(UserError, match=r"^backend '\w+' does not implement custom surrogate; use eager or reference\.$"):
        LIFSpike(surrogate=MyATan, backend=backend)
    with pytest.raises(ValueError, match="eager and reference backends only"):
        get_lif_function(backend)(torch.rand(2, 3, 4), spec=LIFSpec(surrogate=MyATan))


def test_a_custom_surrogate_must_be_a_heaviside_with_a_backward():
    with pytest.raises(ValueError, match="Heaviside"):
        LIFSpike(surrogate=torch.sigmoid, backend="eager")(drive(13)).sum().backward()
