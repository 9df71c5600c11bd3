"""The peers' neurons (snn/peers.py), each against the peer itself: spike for spike, gradient for gradient.

The peer is the oracle (snnTorch 1.0 and SpikingJelly 2.0 are installed in CI; elsewhere these
tests skip). Every row of snn.peers.MAPPING (the README's mapping table) is proven by a test here,
and the README's table is checked to be that mapping.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from snn import peers
from snn.lif.layers import LIFSpike

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["reference", "eager", "torch", "triton"]
B, T, N = 3, 12, 37


def snntorch():
    return pytest.importorskip("snntorch", reason="snnTorch is not installed (pip install snntorch==1.0)")


def spikingjelly():
    return pytest.importorskip("spikingjelly.activation_based.neuron",
                               reason="SpikingJelly 2.0 is not installed (pip install --no-deps spikingjelly==2.0.0 loguru)")


def drive(seed: int, scale: float = 0.9, shift: float = 0.35, shape=(B, T, N)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * scale + shift).requires_grad_()


def run_leaky(lk, x: torch.Tensor, mem0=None):
    """snnTorch's own loop over [B, T, N]: spikes [B, T, N], the mem of every step."""
    mem = lk.reset_mem() if mem0 is None else mem0
    spikes, mems = [], []
    for t in range(x.shape[1]):
        spk, mem = lk(x[:, t], mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes, 1), torch.stack(mems, 1)


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=False)


def assert_grads_close(ours, theirs, what, rtol=1e-5):
    for a, b, name in zip(ours, theirs, what):
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b.reshape(a.shape), rtol=rtol, atol=rtol * scale, msg=lambda m: f"d/d{name}: {m}")


# ---- snnTorch Leaky ------------------------------------------------------------------------------------

LEAKY_CASES = {
    # name: (MAPPING row, snnTorch kwargs)
    "subtract": (0, {}),
    "zero": (1, {"reset_mechanism": "zero"}),
    "zero-no-delay": (2, {"reset_mechanism": "zero", "reset_delay": False}),
    "subtract-no-delay": (3, {"reset_delay": False}),
    "fast_sigmoid": (5, {"spike_grad": "fast_sigmoid"}),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", LEAKY_CASES, ids=LEAKY_CASES)
def test_snntorch_leaky_spike_for_spike_and_gradients(case, backend):
    snn_t = snntorch()
    row, kwargs = LEAKY_CASES[case]
    kwargs = dict(kwargs)
    if kwargs.get("spike_grad") == "fast_sigmoid":
        kwargs["spike_grad"] = snn_t.surrogate.fast_sigmoid(slope=25)
    beta = torch.linspace(0.6, 0.95, N)  # per-neuron decays
    # reset_delay=False subtract equals the soft reset while no potential exceeds 2x threshold (module docstring)
    x = drive(1, 0.4, 0.25) if case == "subtract-no-delay" else drive(1)
    theirs = snn_t.Leaky(beta=beta, **kwargs)
    ours = peers.leaky(beta, **kwargs, backend=backend)
    s_theirs, mem_theirs = run_leaky(theirs, x)
    delayed = kwargs.get("reset_delay", True)
    out = ours(x, return_v=True, return_h=True)
    if case == "subtract-no-delay":
        assert out.h.max() <= 2.0, "the case must stay where the two agree"
    assert torch.equal(out.spikes, s_theirs), f"{case}: {(out.spikes != s_theirs).sum().item()} spikes differ"
    assert 0.05 < s_theirs.mean().item() < 0.6, "the case must spike, and not everywhere"
    # snnTorch's mem: the pre-reset potential with a delayed reset (for subtract: also our state v)
    expect_mem = out.h if delayed else None
    if delayed:
        assert torch.equal(expect_mem, mem_theirs), f"{case}: mem differs from our h"
    g = torch.randn(s_theirs.shape, generator=torch.Generator().manual_seed(2))
    # the final state's gradient: snnTorch's mem is our v for subtract and for reset_delay=False
    final_ours = out.v if case != "zero" else None
    loss_theirs = (s_theirs * g).sum() + (mem_theirs[:, -1].sum() if final_ours is not None else 0)
    loss_ours = (out.spikes * g).sum() + (final_ours.sum() if final_ours is not None else 0)
    if final_ours is not None:
        assert torch.equal(out.v, mem_theirs[:, -1]), f"{case}: final potential differs"
    assert_grads_close(grads(loss_ours, [x]), grads(loss_theirs, [x]), ["x"])


def test_snntorch_subtract_without_delay_differs_only_above_twice_the_threshold():
    """The one documented difference: with reset_delay=False, a potential still above threshold after
    its reset (h > 2 * threshold) is held there by snnTorch without firing (its next step subtracts
    the threshold for the spike test, then adds it back); we fire again."""
    snn_t = snntorch()
    x = torch.tensor([[[2.5], [0.0], [0.0]]])  # h = 2.5 > 2: after one reset, 1.5 is still above 1
    theirs, _ = run_leaky(snn_t.Leaky(beta=1.0, reset_delay=False), x)
    ours = peers.leaky(1.0, reset_delay=False)(x)
    assert theirs.flatten().tolist() == [1.0, 0.0, 0.0] and ours.flatten().tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_snntorch_learn_beta_and_threshold_gradients_and_initial_mem(backend):
    snn_t = snntorch()
    x = drive(3)
    mem0 = torch.rand(B, N, generator=torch.Generator().manual_seed(4)) * 1.2  # some start above threshold
    theirs = snn_t.Leaky(beta=torch.full((N,), 0.8), threshold=torch.full((N,), 0.9), learn_beta=True,
                         learn_threshold=True)
    ours = peers.from_snntorch(theirs, backend=backend)
    assert isinstance(ours.tau, torch.nn.Parameter) and isinstance(ours.thresh, torch.nn.Parameter)
    s_theirs, mem_theirs = run_leaky(theirs, x, mem0.clone())
    out = ours(x, v0=mem0.clone(), return_v=True)
    assert torch.equal(out.spikes, s_theirs) and torch.equal(out.v, mem_theirs[:, -1])
    g = torch.randn(s_theirs.shape, generator=torch.Generator().manual_seed(5))
    ref = grads((s_theirs * g).sum() + mem_theirs[:, -1].sum(), [x, theirs.beta, theirs.threshold])
    got = grads((out.spikes * g).sum() + out.v.sum(), [x, ours.tau, ours.thresh])
    assert_grads_close(got, ref, ["x", "beta", "threshold"])


def test_snntorch_beta_is_clamped_like_snntorch():
    snn_t = snntorch()
    theirs = snn_t.Leaky(beta=torch.tensor(0.5), learn_beta=True)
    ours = peers.from_snntorch(theirs)
    with torch.no_grad():
        theirs.beta.fill_(1.7)  # SGD pushed it out of range: both use 1.0, and neither gets a gradient
        ours.tau.fill_(1.7)
    x = drive(6)
    s_theirs, _ = run_leaky(theirs, x)
    s_ours = ours(x)
    assert torch.equal(s_ours, s_theirs)
    (g_theirs,) = grads(s_theirs.sum(), [theirs.beta])
    (g_ours,) = grads(s_ours.sum(), [ours.tau])
    assert g_theirs.item() == 0.0 and g_ours.item() == 0.0


@pytest.mark.parametrize("backend", ["reference", "eager"])
def test_snntorch_any_other_spike_grad_runs_as_a_custom_surrogate(backend):
    snn_t = snntorch()
    spike_grad = snn_t.surrogate.triangular()
    theirs = snn_t.Leaky(beta=0.9, spike_grad=spike_grad)
    ours = peers.from_snntorch(theirs, backend=backend)
    assert ours.spec.custom
    x = drive(7)
    s_theirs, mem = run_leaky(theirs, x)
    out = ours(x, return_v=True)
    assert torch.equal(out.spikes, s_theirs) and torch.equal(out.v, mem[:, -1])
    g = torch.randn(s_theirs.shape, generator=torch.Generator().manual_seed(8))
    assert_grads_close(grads((out.spikes * g).sum(), [x]), grads((s_theirs * g).sum(), [x]), ["x"])


def test_snntorch_options_without_an_equivalent_are_refused_in_one_sentence():
    for kwargs, says in (({"reset_mechanism": "none"}, "reset_mechanism='none'"),
                         ({"graded_spikes_factor": 2.0}, "graded_spikes_factor"),
                         ({"inhibition": True}, "inhibition")):
        with pytest.raises(ValueError, match=re.escape(says)) as caught:
            peers.leaky(0.9, **kwargs)
        assert "\n" not in str(caught.value)


# ---- SpikingJelly LIFNode / IFNode ---------------------------------------------------------------------

SJ_CASES = {
    # name: (MAPPING row, constructor, kwargs)
    "lif-decay-input": (6, "LIFNode", {"tau": 2.0}),
    "lif-tau3-decay-input-atan-detach": (6, "LIFNode", {"tau": 3.0, "surrogate_function": "ATan", "detach_reset": True}),
    "lif-no-decay-input-soft": (7, "LIFNode", {"tau": 2.0, "decay_input": False, "v_reset": None}),
    "if": (8, "IFNode", {}),
    "if-soft-threshold-0.8": (8, "IFNode", {"v_reset": None, "v_threshold": 0.8}),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SJ_CASES, ids=SJ_CASES)
def test_spikingjelly_nodes_spike_for_spike_and_gradients(case, backend):
    neuron = spikingjelly()
    from spikingjelly.activation_based import surrogate

    row, kind, kwargs = SJ_CASES[case]
    kwargs = dict(kwargs)
    if kwargs.get("surrogate_function") == "ATan":
        kwargs["surrogate_function"] = surrogate.ATan()
    theirs = getattr(neuron, kind)(step_mode="m", **kwargs)
    ours = peers.from_spikingjelly(theirs, backend=backend)
    x = drive(11, 1.0, 0.6, shape=(T, B, N))  # SpikingJelly's [T, B, N]
    s_theirs = theirs(x)
    v_theirs = theirs.v
    out = ours(x, return_v=True)
    # No potential of this data is within rounding of the threshold: SpikingJelly's >= and its
    # rounding of the charge (v + (x - v) / tau against our v * tau + x) cannot show.
    assert torch.equal(out.spikes, s_theirs), f"{case}: {(out.spikes != s_theirs).sum().item()} spikes differ"
    assert 0.05 < s_theirs.mean().item() < 0.7
    torch.testing.assert_close(out.v, v_theirs, rtol=1e-5, atol=1e-5)
    g = torch.randn(s_theirs.shape, generator=torch.Generator().manual_seed(12))
    ref = grads((s_theirs * g).sum() + v_theirs.sum(), [x])
    got = grads((out.spikes * g).sum() + out.v.sum(), [x])
    assert_grads_close(got, ref, ["x"], rtol=1e-5)


def test_spikingjelly_fires_on_ties_and_we_do_not():
    neuron = spikingjelly()
    x = torch.tensor([[[1.0]], [[0.0]]])  # [T, B, N]: the potential equals the threshold at step 0
    assert neuron.IFNode(step_mode="m")(x).flatten().tolist() == [1.0, 0.0]
    assert peers.if_node()(x).flatten().tolist() == [0.0, 0.0]


def test_spikingjelly_constructors_refuse_what_would_mean_something_else():
    with pytest.raises(ValueError, match="time constant > 1"):
        peers.lif_node(tau=0.5)
    with pytest.raises(ValueError, match="leaks toward v_reset"):
        peers.lif_node(tau=2.0, v_reset=-0.5)


# ---- the README's table -----------------------------------------------------------------------------

def render_mapping() -> str:
    lines = ["| peer | `LIFSpike` (or `snn.peers`) |", "| --- | --- |"]
    lines += [f"| {peer} | {ours} |" for peer, ours in peers.MAPPING]
    return "\n".join(lines)


def test_readme_mapping_table_is_the_proven_mapping():
    readme = (REPO / "README.md").read_text()
    assert render_mapping() in readme, "README's peer mapping table differs from snn.peers.MAPPING (render_mapping())"


def test_every_mapping_row_is_proven_by_a_test_above():
    covered = {row for row, *_ in LEAKY_CASES.values()} | {row for row, *_ in SJ_CASES.values()} | {4}
    assert covered == set(range(len(peers.MAPPING)))
