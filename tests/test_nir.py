"""NIR interchange (snn/nir_exchange/): ours -> NIR -> ours, and across to snnTorch and SpikingJelly.

Inputs and weights are multiples of 1/8 so every sum is exact in fp32 whatever the summation order:
then many pre-reset potentials land exactly on the threshold, which is where a ``>`` and a ``>=``
convention part, and spike-for-spike equality means something there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir", reason="the NIR tests need the package nir (pip install -e '.[dev]')")

from snn.cli import infer  # noqa: E402
from snn.checkpoint import save_checkpoint, versions  # noqa: E402
from snn.lif.layers import LIFSpike, TimeDistributed, direct_encode  # noqa: E402
from snn.model import MLPConfig, SpikingMLP  # noqa: E402
from snn.nir_exchange import (  # noqa: E402
    DEFAULT_DT, NIRExchangeError, NIRNetwork, export_nir, import_nir, lif_from_nir, lif_to_nir, write_nir,
)

T = 6


def quantize(tensor: torch.Tensor, step: float = 0.125) -> torch.Tensor:
    return (tensor / step).round() * step


def quantize_(module: nn.Module, scale: float = 2.0) -> nn.Module:
    """Weights and biases (not the neurons' decays and thresholds) on the 1/8 grid."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                for parameter in layer.parameters():
                    parameter.copy_(quantize(parameter * scale))
    return module


def spikes_of(net: nn.Module, kind, run) -> list[torch.Tensor]:
    """The outputs of every ``kind`` module while ``run()`` runs (forward hooks)."""
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out))
             for m in net.modules() if isinstance(m, kind)]
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def round_trip(model: nn.Module, tmp_path, **export_args) -> NIRNetwork:
    """ours -> NIR file -> ours."""
    path = tmp_path / "model.nir"
    write_nir(model, path, **export_args)
    return import_nir(path)


def small_mlp(**options) -> SpikingMLP:
    torch.manual_seed(0)
    return quantize_(SpikingMLP(MLPConfig(in_features=20, hidden=24, num_classes=5, time_steps=T, **options)), 3.0).eval()


def small_conv(**lif_options) -> nn.Sequential:
    """A small conv SNN from our layers (the shape of the convolutional model: conv-LIF-pool blocks, flatten, linear)."""
    torch.manual_seed(1)
    net = nn.Sequential(
        TimeDistributed(nn.Conv2d(1, 4, 3, padding=1)),
        LIFSpike(tau=torch.rand(4, 1, 1), thresh=1.0, **lif_options),                  # per channel
        TimeDistributed(nn.AvgPool2d(2)),
        TimeDistributed(nn.Conv2d(4, 6, 3, stride=1, padding=1, bias=False)),
        LIFSpike(tau=0.75, thresh=torch.full((6, 4, 4), 0.5), learn_thresh=True),        # per neuron, learnable
        TimeDistributed(nn.AvgPool2d(2, divisor_override=1)),                            # NIR's SumPool2d
        TimeDistributed(nn.Flatten()),
        TimeDistributed(nn.Linear(6 * 2 * 2, 5)),
        LIFSpike(tau=1.0, thresh=0.5),                                                   # no leak: NIR's IF
    )
    return quantize_(net, 2.0).eval()


def test_neuron_maps_to_the_nir_lif_and_if_nodes_the_other_importers_read():
    node = lif_to_nir(0.5, 1.0, 0.0, (3,), dt=1e-4)
    assert isinstance(node, nir.LIF)
    np.testing.assert_allclose(node.tau, 2e-4)                 # tau = dt / (1 - decay): snnTorch's beta = 1 - dt/tau
    np.testing.assert_allclose(node.r * 1e-4 / node.tau, 1.0)  # r*dt/tau == 1: the input is added, not scaled
    assert (node.v_leak == 0).all() and (node.v_threshold == 1).all() and (node.v_reset == 0).all()
    assert isinstance(lif_to_nir(1.0, 0.7, -0.5, (2, 2), dt=1e-3), nir.IF)
    np.testing.assert_allclose(lif_to_nir(1.0, 0.7, -0.5, (2,), dt=1e-3).r, 1e3)  # IF: r = 1/dt
    np.testing.assert_allclose(lif_to_nir(0.0, 1.0, 0.0, (1,)).tau, DEFAULT_DT)      # no memory: tau = dt


@pytest.mark.parametrize("dt", [1e-4, 1e-3, 1.0])
def test_every_float32_decay_and_threshold_survive_the_round_trip_exactly(dt):
    generator = torch.Generator().manual_seed(0)
    decay = torch.rand(20000, generator=generator)
    decay[:4] = torch.tensor([0.0, 0.5, 0.999999940395, 1e-8])
    thresh = torch.rand(20000, generator=generator) * 3
    back = lif_from_nir(lif_to_nir(decay, thresh, 0.25, (20000,), dt=dt), dt, "LIF")
    assert torch.equal(back["tau"], decay) and torch.equal(back["thresh"], thresh) and back["v_reset"] == 0.25


MLP_OPTIONS = {
    "seed neuron": {},
    "v_reset": {"v_reset": -0.25},
    "learnable per-neuron tau and thresh": {"learn_tau": True, "learn_thresh": True},
    "training-only options (dropped)": {"surrogate": "sigmoid", "alpha": 3.0, "detach_reset": True},
    "no leak (IF)": {"tau": 1.0},
    "no memory (decay 0)": {"tau": 0.0, "thresh": 0.5},
}


@pytest.mark.parametrize("options", MLP_OPTIONS.values(), ids=MLP_OPTIONS.keys())
def test_mlp_round_trip_gives_identical_spikes_and_logits(options, tmp_path):
    model = small_mlp(**options)
    if options.get("learn_tau"):
        with torch.no_grad():
            model.lif1.tau.copy_(torch.rand(24))
            model.lif2.thresh.copy_(quantize(torch.rand(24) + 0.5))
    imported = round_trip(model, tmp_path)
    assert imported.metadata["time_steps"] == T and imported.input_shape == (20,)
    images = quantize(torch.rand(64, 20) * 2)

    with torch.no_grad():
        logits, spikes = model.forward_with_spikes(images)
    imported_spikes = spikes_of(imported, LIFSpike, lambda: imported.classify(images))
    assert all(torch.equal(a, b) for a, b in zip(spikes, imported_spikes)) and len(imported_spikes) == 2
    assert 0.05 < float(spikes[1].mean()) < 0.95
    with torch.no_grad():
        assert torch.equal(imported.classify(images), logits)
        # the graph's own per-step semantics: the mean over T of its output is the logits (to rounding: fc3 is affine)
        per_step = imported(direct_encode(images, T))
    torch.testing.assert_close(per_step.mean(dim=1), logits)
    # and the imported network exports to the same graph
    again = export_nir(imported, imported.input_shape)
    original = export_nir(model)
    for (name, node), (_, node_again) in zip(sorted(original.nodes.items()), sorted(again.nodes.items(), key=lambda kv: kv[0])):
        for key, value in node.to_dict().items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, node_again.to_dict()[key], err_msg=f"{name}.{key}")


def test_conv_round_trip_gives_identical_spikes_and_outputs(tmp_path):
    net = small_conv()
    imported = round_trip(net, tmp_path, input_shape=(1, 8, 8), time_steps=T)
    kinds = [type(node).__name__ for node in export_nir(net, (1, 8, 8)).nodes.values()]
    assert kinds == ["Input", "Conv2d", "LIF", "AvgPool2d", "Conv2d", "LIF", "SumPool2d", "Flatten", "Affine", "IF", "Output"]
    x = direct_encode(quantize(torch.rand(16, 1, 8, 8) * 3), T)
    ours = spikes_of(net, LIFSpike, lambda: net(x))
    theirs = spikes_of(imported, LIFSpike, lambda: imported(x))
    assert len(theirs) == 3 and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert all(0.01 < float(s.mean()) < 0.99 for s in ours)


def test_batch_norm_is_folded_into_the_preceding_convolution(tmp_path):
    torch.manual_seed(2)
    norm = nn.BatchNorm2d(4)
    with torch.no_grad():
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.2)
    net = nn.Sequential(TimeDistributed(nn.Conv2d(1, 4, 3, padding=1)), TimeDistributed(norm), LIFSpike(0.5, 1.0),
                        TimeDistributed(nn.Flatten()), TimeDistributed(nn.Linear(4 * 6 * 6, 3))).eval()
    imported = round_trip(net, tmp_path, input_shape=(1, 6, 6))
    assert [type(m.module).__name__ for m in imported if isinstance(m, TimeDistributed)] == ["Conv2d", "Flatten", "Linear"]
    x = torch.rand(32, 1, 6, 6) * 3
    with torch.no_grad():
        # folding changes the rounding, not the function: the currents agree to fp32 rounding
        torch.testing.assert_close(imported[0].module(x), net[1].module(net[0].module(x)), rtol=1e-5, atol=1e-5)
        ours, theirs = net(direct_encode(x, T)), imported(direct_encode(x, T))
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_imported_network_runs_on_every_cpu_backend_and_trains(tmp_path):
    net = small_conv()
    path = tmp_path / "conv.nir"
    write_nir(net, path, input_shape=(1, 8, 8))
    x = direct_encode(quantize(torch.rand(8, 1, 8, 8) * 3), T)
    on_torch = import_nir(path, learn_tau=True, learn_thresh=True)
    on_reference = import_nir(path, backend="reference")
    with torch.no_grad():
        assert torch.equal(on_torch(x), on_reference(x))
    on_torch.train()
    on_torch(x).mean().backward()
    grads = [p.grad for p in on_torch.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert on_torch[1].tau.grad is not None and on_torch[1].tau.shape == (4, 8, 8)


def _with_tau(layer, tau):
    layer.tau = tau
    return layer


EXPORT_REFUSALS = {
    "soft reset": (lambda: nn.Sequential(TimeDistributed(nn.Linear(4, 4)), LIFSpike(reset="soft")), "reset='soft'"),
    "snnTorch's subtract reset": (lambda: nn.Sequential(TimeDistributed(nn.Linear(4, 4)),
                                                        LIFSpike(reset="subtract_next", detach_reset=True)), "reset='subtract_next'"),
    "max pooling": (lambda: nn.Sequential(TimeDistributed(nn.Conv2d(1, 2, 3)), LIFSpike(), TimeDistributed(nn.MaxPool2d(2))),
                    "max-pooling"),
    "unknown layer": (lambda: nn.Sequential(TimeDistributed(nn.Linear(4, 4)), TimeDistributed(nn.ReLU())), "ReLU"),
    # LIFSpike refuses tau=1.5 itself (tests/test_peers.py); a value assigned afterwards still meets the exporter
    "decay above 1": (lambda: nn.Sequential(TimeDistributed(nn.Linear(4, 4)), _with_tau(LIFSpike(), 1.5)), "outside [0, 1]"),
    "IF and LIF in one layer": (lambda: nn.Sequential(TimeDistributed(nn.Linear(4, 4)), LIFSpike(tau=torch.tensor([1.0, 0.5, 0.5, 0.5]))),
                                "IF"),
    "batch norm first": (lambda: nn.Sequential(TimeDistributed(nn.BatchNorm1d(4)), LIFSpike()), "batch-norm"),
    "LIF inside TimeDistributed": (lambda: nn.Sequential(TimeDistributed(LIFSpike())), "TimeDistributed"),
}


@pytest.mark.parametrize("make, says", EXPORT_REFUSALS.values(), ids=EXPORT_REFUSALS.keys())
def test_export_refuses_what_nir_cannot_express_in_one_sentence(make, says):
    shape = (1, 6, 6) if "MaxPool" in repr(make()) else (4,)
    with pytest.raises(NIRExchangeError) as caught:
        export_nir(make(), shape)
    message = str(caught.value)
    assert says in message and "layer" in message and "\n" not in message


def chain(*nodes, **named) -> "nir.NIRGraph":
    return nir.NIRGraph.from_list(*nodes, **named)


def lif_node(n=4, **changes):
    node = dict(tau=np.full(n, 2e-4), r=np.full(n, 2.0), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
    node.update(changes)
    return nir.LIF(**node)


def affine(n=4):
    return nir.Affine(weight=np.eye(n, dtype=np.float32), bias=np.zeros(n, dtype=np.float32))


IMPORT_REFUSALS = {
    "CubaLIF": (lambda: chain(affine(), nir.CubaLIF(tau_syn=np.full(4, 1e-3), tau_mem=np.full(4, 1e-3), r=np.full(4, 10.0),
                                                     v_leak=np.zeros(4), v_threshold=np.ones(4))), "CubaLIF"),
    "v_leak": (lambda: chain(affine(), lif_node(v_leak=np.full(4, 0.1))), "v_leak"),
    "input scaled (r*dt/tau != 1, SpikingJelly's decay_input)": (lambda: chain(affine(), lif_node(r=np.ones(4))), "r*dt/tau"),
    "per-neuron v_reset": (lambda: chain(affine(), lif_node(v_reset=np.arange(4.0))), "v_reset"),
    "tau below dt": (lambda: chain(affine(), lif_node(tau=np.full(4, 1e-5), r=np.full(4, 0.1))), "at least dt"),
    "Delay": (lambda: chain(affine(), nir.Delay(delay=np.ones(4))), "Delay"),
}


@pytest.mark.parametrize("make, says", IMPORT_REFUSALS.values(), ids=IMPORT_REFUSALS.keys())
def test_import_refuses_nodes_without_a_counterpart_naming_them(make, says):
    with pytest.raises(NIRExchangeError) as caught:
        import_nir(make())
    assert says in str(caught.value) and "node" in str(caught.value)


def test_import_refuses_branches_and_loops():
    nodes = {"input": nir.Input(np.array([4])), "a": affine(), "b": affine(), "lif": lif_node(), "output": nir.Output(np.array([4]))}
    branch = nir.NIRGraph(nodes, [("input", "a"), ("input", "b"), ("a", "lif"), ("b", "lif"), ("lif", "output")], type_check=False)
    with pytest.raises(NIRExchangeError, match="feeds 2 nodes"):
        import_nir(branch)
    loop = nir.NIRGraph(dict(nodes), [("input", "a"), ("a", "lif"), ("lif", "b"), ("b", "a"), ("lif", "output")], type_check=False)
    with pytest.raises(NIRExchangeError):
        import_nir(loop)


def test_infer_export_nir_writes_the_checkpoint_model_and_never_replaces_a_file(tmp_path, capsys):
    torch.manual_seed(0)
    model = SpikingMLP(MLPConfig(time_steps=4))
    checkpoint = tmp_path / "m.pth"
    save_checkpoint(checkpoint, {"model_state": model.state_dict(), "config": model.config.to_dict(),
                                 "meta": {"epoch": 0, "accuracy": 0.0, "dataset": "test", "backend": "torch", "versions": versions()}})
    out = tmp_path / "exported" / "m.nir"
    assert infer.main(["--checkpoint", str(checkpoint), "--export-nir", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    imported = import_nir(out)
    images = torch.rand(10, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(imported.classify(images), model(images))
    before = out.read_bytes()
    assert infer.main(["--checkpoint", str(checkpoint), "--export-nir", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before


# ------------------------------------------------------------------------------------------- snnTorch

def run_snntorch(net: nn.Module, x: torch.Tensor, unbatched: bool = False) -> list[torch.Tensor]:
    """Every snnTorch Leaky's spikes [B, T, ...] for x [B, T, ...], one call per step from rest.

    ``unbatched``: one sample at a time, without a batch dim. snnTorch's importer turns NIR's
    ``Flatten(start_dim=0)`` (NIR shapes have no batch dim) into ``torch.nn.Flatten(0)``, which
    would flatten the batch too; its conv layers take unbatched ``[C, H, W]`` inputs.
    """
    snn = pytest.importorskip("snntorch")
    from snntorch import utils

    def run(sequence):  # [T, ...] -> one [T, ...] per Leaky
        utils.reset(net)
        steps = [spikes_of(net, snn.Leaky, lambda: net(step)) for step in sequence]
        return [torch.stack(layer) for layer in zip(*steps)]

    if unbatched:
        samples = [run(sample) for sample in x]
        return [torch.stack(layer) for layer in zip(*samples)]
    return [layer.transpose(0, 1) for layer in run(x.transpose(0, 1))]


def mlp_sequential(**lif) -> nn.Sequential:
    torch.manual_seed(3)
    net = nn.Sequential(TimeDistributed(nn.Linear(12, 16)), LIFSpike(tau=torch.rand(16), thresh=1.0, **lif),
                        TimeDistributed(nn.Linear(16, 8)), LIFSpike(tau=0.5, thresh=0.5))
    return quantize_(net).eval()


def test_ours_to_nir_to_snntorch_spike_for_spike_with_ties_at_the_threshold():
    pytest.importorskip("snntorch", reason="snnTorch is not installed (pip install -e '.[dev]')")
    from snntorch.import_nir import import_from_nir

    for net, shape, x, unbatched in [
            (mlp_sequential(), (12,), quantize(torch.rand(64, 8, 12) * 2), False),
            (small_conv_snntorch_subset(), (1, 8, 8), direct_encode(quantize(torch.rand(16, 1, 8, 8) * 3), 8), True)]:
        theirs_net = import_from_nir(export_nir(net, shape))
        ours = spikes_of(net, LIFSpike, lambda: net(x))
        with torch.no_grad():
            h = net[1](net[0](x), return_h=True).h
        assert (h == net[1].thresh).sum() > 0  # potentials exactly at the threshold: > and >= would differ
        theirs = run_snntorch(theirs_net, x, unbatched)
        assert len(theirs) == len(ours) and all(torch.equal(a, b) for a, b in zip(ours, theirs))


def small_conv_snntorch_subset() -> nn.Sequential:
    """The conv net without what snnTorch's importer lacks (per-neuron thresholds, SumPool2d, IF)."""
    torch.manual_seed(4)
    net = nn.Sequential(TimeDistributed(nn.Conv2d(1, 4, 3, padding=1)), LIFSpike(tau=torch.rand(4, 1, 1), thresh=1.0),
                        TimeDistributed(nn.AvgPool2d(2)), TimeDistributed(nn.Flatten()),
                        TimeDistributed(nn.Linear(4 * 4 * 4, 5)), LIFSpike(tau=0.75, thresh=0.5))
    return quantize_(net).eval()


def test_snntorch_to_nir_to_ours_spike_for_spike():
    snn = pytest.importorskip("snntorch", reason="snnTorch is not installed (pip install -e '.[dev]')")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(5)
    # reset to zero without delay: the neuron NIR's LIF describes (snnTorch's default subtract reset is not NIR)
    leaky = dict(reset_mechanism="zero", reset_delay=False, init_hidden=True)
    theirs = nn.Sequential(nn.Linear(12, 16), snn.Leaky(beta=torch.rand(16), threshold=torch.full((16,), 1.0), **leaky),
                           nn.Linear(16, 8), snn.Leaky(beta=torch.full((8,), 0.5), threshold=torch.full((8,), 0.5), **leaky))
    quantize_(theirs)
    ours = import_nir(export_to_nir(theirs, torch.zeros(12)))
    x = quantize(torch.rand(64, 8, 12) * 2)
    theirs_spikes = run_snntorch(theirs, x)
    ours_spikes = spikes_of(ours, LIFSpike, lambda: ours(x))
    assert all(torch.equal(a, b) for a, b in zip(theirs_spikes, ours_spikes)) and len(ours_spikes) == 2
    assert 0.05 < float(ours_spikes[1].mean()) < 0.95


# ------------------------------------------------------------------------------------------- SpikingJelly

def spikingjelly():
    return pytest.importorskip("spikingjelly.activation_based.nir_exchange",
                               reason="SpikingJelly 2.0 is not installed (pip install --no-deps spikingjelly==2.0.0 loguru)")


def run_spikingjelly(net: nn.Module, x: torch.Tensor, nudge: bool) -> list[torch.Tensor]:
    """Every SpikingJelly neuron's spikes [B, T, ...]. SpikingJelly fires at ``v - v_threshold >= 0``;
    ``nudge`` raises each threshold to the next float32, which makes that exactly NIR's ``v > v_threshold``."""
    from spikingjelly.activation_based import functional, neuron

    nodes = [m for m in net.modules() if isinstance(m, neuron.BaseNode)]
    for node in nodes:
        node.v_threshold = float(np.nextafter(np.float32(node.v_threshold), np.float32(np.inf))) if nudge else node.v_threshold
    functional.reset_net(net)
    outputs = spikes_of(net, neuron.BaseNode, lambda: net(x.transpose(0, 1)))
    return [out.transpose(0, 1) for out in outputs]


def test_ours_to_nir_to_spikingjelly_differs_only_at_the_threshold():
    spikingjelly()
    from spikingjelly.activation_based.nir_exchange.from_nir import import_from_nir

    # decay 0.5 (SpikingJelly's tau = 2: v - v/2 rounds like v*0.5) and no leak (its IFNode): same arithmetic
    net = nn.Sequential(TimeDistributed(nn.Linear(12, 16)), LIFSpike(0.5, 1.0), TimeDistributed(nn.Linear(16, 8)), LIFSpike(1.0, 0.5))
    quantize_(net).eval()
    x = quantize(torch.rand(64, 8, 12) * 2)
    ours = spikes_of(net, LIFSpike, lambda: net(x))
    with torch.no_grad():
        h = net[1](net[0](x), return_h=True).h
    assert (h == 1.0).sum() > 0

    def imported(end: int, nudge: bool) -> torch.Tensor:
        """The spikes of SpikingJelly's import of net[:end] (its graph module hides the inner layers from hooks)."""
        from spikingjelly.activation_based import functional, neuron

        model = import_from_nir(export_nir(net[:end], (12,)), step_mode="m")
        for node in model.modules():
            if isinstance(node, neuron.BaseNode) and nudge:
                node.v_threshold = float(np.nextafter(np.float32(node.v_threshold), np.float32(np.inf)))
        functional.reset_net(model)
        with torch.no_grad():
            return model(x.transpose(0, 1))[0].transpose(0, 1)

    # SpikingJelly fires where the potential equals the threshold (v - v_threshold >= 0); we and NIR do not.
    # Each neuron's trains agree up to its first tie, where SpikingJelly spikes and we do not (then resets differ).
    differ = imported(2, nudge=False) - ours[0]
    changed = differ.ne(0).any(dim=1)
    first = differ.ne(0).int().argmax(dim=1, keepdim=True)
    assert changed.any()
    assert (differ.gather(1, first)[changed.unsqueeze(1)] == 1).all()
    assert (h.gather(1, first)[changed.unsqueeze(1)] == 1.0).all()
    assert torch.equal(changed, (h == 1.0).any(dim=1))  # and every neuron with a tie is affected
    # with its threshold raised to the next float32, its >= is exactly NIR's >: spike for spike
    assert torch.equal(imported(2, nudge=True), ours[0]) and torch.equal(imported(4, nudge=True), ours[1])


def test_spikingjelly_to_nir_to_ours_spike_for_spike_with_its_threshold_convention_accounted_for():
    spikingjelly()
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.nir_exchange.to_nir import export_to_nir

    torch.manual_seed(6)
    theirs = nn.Sequential(layer.Linear(12, 16), neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0),
                           layer.Linear(16, 8), neuron.IFNode(v_threshold=0.5, v_reset=0.0))
    quantize_(theirs)
    ours = import_nir(export_to_nir(theirs, torch.zeros(1, 12)))
    functional.set_step_mode(theirs, "m")  # run it on [T, B, N] at once
    assert [m.gamma for m in ours if isinstance(m, LIFSpike)] and float(ours[1].tau) == 0.5 and float(ours[3].tau) == 1.0
    x = quantize(torch.rand(64, 8, 12) * 2)
    ours_spikes = spikes_of(ours, LIFSpike, lambda: ours(x))
    theirs_spikes = run_spikingjelly(theirs, x, nudge=True)
    assert len(ours_spikes) == 2 and all(torch.equal(a, b) for a, b in zip(theirs_spikes, ours_spikes))
    assert 0.05 < float(ours_spikes[1].mean()) < 0.95


# ------------------------------------------------------------------------------------------- README

@pytest.mark.slow
def test_readme_worked_example(mnist_dir, tmp_path, capsys):
    """The README's worked example as written (its paths replaced): a briefly trained model, exported
    with infer.py --export-nir, predicts in snnTorch what it predicts here on all 10,000 test images."""
    pytest.importorskip("snntorch", reason="snnTorch is not installed (pip install -e '.[dev]')")
    import re
    from pathlib import Path

    from snn.cli import train

    checkpoint, exported = tmp_path / "m.pth", tmp_path / "m.nir"
    assert train.main(["--data-dir", str(mnist_dir), "--train-samples", "2000", "--epochs", "1",
                       "--checkpoint", str(checkpoint), "--no-progress"]) == 0
    assert infer.main(["--checkpoint", str(checkpoint), "--export-nir", str(exported)]) == 0
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```py\n(.*?)```", readme, flags=re.S).group(1)
    for old, new in (('"mnist_mlp.nir"', repr(str(exported))), ('"checkpoints/mnist_mlp.pth"', repr(str(checkpoint))),
                     ('load_mnist("data")', f"load_mnist({str(mnist_dir)!r})")):
        assert old in block
        block = block.replace(old, new)
    capsys.readouterr()
    exec(compile(block, "README.md worked example", "exec"), {"__name__": "readme_example"})
    agreed = re.search(r"agree on (\d+) of (\d+)", capsys.readouterr().out)
    assert agreed.group(2) == "10000" and agreed.group(1) == "10000"
