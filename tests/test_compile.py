"""torch.compile, torch.export and the tracing paths that must refuse (issue 10, item 2).

Minimal shapes: each test proves one claim per backend. Dynamo's graph capture is checked with a
counting backend (the captured graph run eagerly) and AOTAutograd with ``aot_eager`` (forward and
backward traced through the ops' fake and autograd registrations); Inductor itself once, for the
torch backend (all backends under ``-m slow``).
"""

from __future__ import annotations

import io

import pytest
import torch
import torch._dynamo as dynamo
import torch._dynamo.testing  # noqa: F401  (dynamo.testing)
from torch import nn
from torch._dynamo.testing import CompileCounter

from snn.lif.backends import BACKENDS
from snn.lif.layers import LIFSpike, TimeDistributed, direct_encode
from snn.model import MLPConfig, SpikingMLP

from lif_helpers import count_calls

SMALL = MLPConfig(in_features=12, hidden=8, num_classes=3, time_steps=3)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    dynamo.reset()
    yield
    dynamo.reset()


def mlp(backend: str) -> SpikingMLP:
    torch.manual_seed(0)
    return SpikingMLP(SMALL, backend=backend)


def conv_snn(backend: str) -> nn.Module:
    """A small conv SNN: per-step conv, a LIF with learnable per-channel tau, a LIF on [B, T, N]."""
    torch.manual_seed(0)
    return nn.Sequential(
        TimeDistributed(nn.Conv2d(1, 4, 3, padding=1)),
        LIFSpike(tau=torch.full((4, 1, 1), 0.6), learn_tau=True, backend=backend),
        TimeDistributed(nn.Flatten()),
        TimeDistributed(nn.Linear(4 * 6 * 6, 5)),
        LIFSpike(reset="soft", surrogate="atan", backend=backend),
    )


def images(batch: int) -> torch.Tensor:
    return torch.rand(batch, SMALL.in_features, generator=torch.Generator().manual_seed(batch)) * 3


def conv_input(batch: int) -> torch.Tensor:
    return direct_encode(torch.rand(batch, 1, 6, 6, generator=torch.Generator().manual_seed(batch)) * 3, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_no_graph_breaks(backend):
    """One graph, 0 graph breaks, for the MLP and the conv SNN."""
    for model, x in ((mlp(backend), images(4)), (conv_snn(backend), conv_input(2))):
        explained = dynamo.explain(model)(x)
        assert (explained.graph_break_count, explained.graph_count) == (0, 1), f"{backend}: {explained.break_reasons}"


def test_compiling_a_layer_that_returns_its_potentials_warns_nothing():
    """A membrane output (return_h) under torch.compile: no warning reaches the user (Dynamo warned
    about the lru_cache of the feature check when it traced through it)."""
    import warnings

    layer = LIFSpike(reset="subtract_next", detach_reset=True, surrogate="atan")
    x = torch.rand(2, 3, 5, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = torch.compile(lambda t: layer(t, return_h=True), backend="aot_eager")(x)
        out.h.sum().backward()
    assert torch.equal(out.h, layer(x, return_h=True).h)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_matches_eager_and_recompiles_at_most_once(backend):
    """Spikes identical to eager over changing batch sizes; the compilations counted.

    dynamic=True: one graph for every batch size >= 2, one recompile for batch 1 (Dynamo specializes
    sizes 0 and 1). The default: a static graph for the first size, a dynamic one from the second
    (automatic dynamic shapes), and the recompile for batch 1.
    """
    model = mlp(backend)
    for dynamic, most in ((True, 2), (None, 3)):
        dynamo.reset()
        counter = CompileCounter()
        compiled = torch.compile(model.forward_with_spikes, backend=counter, fullgraph=True, dynamic=dynamic)
        for batch in (4, 5, 7, 1, 16):
            x = images(batch)
            logits, spikes = compiled(x)
            ref_logits, ref_spikes = model.forward_with_spikes(x)
            for s, r in zip(spikes, ref_spikes):
                assert torch.equal(s, r), f"{backend} dynamic={dynamic} B={batch}: spikes differ"
            assert torch.equal(logits, ref_logits)
        assert counter.frame_count == most, f"{backend} dynamic={dynamic}: {counter.frame_count} compilations"


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_training_step_matches_eager(backend):
    """Forward and backward through AOTAutograd (the ops' fake and autograd registrations): same gradients."""
    model = conv_snn(backend)
    x = conv_input(2)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    out = compiled(x)
    ref = model(x)
    assert torch.equal(out, ref)
    grads = torch.autograd.grad(out.sum(), list(model.parameters()))
    ref_grads = torch.autograd.grad(ref.sum(), list(model.parameters()))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def _inductor_case(backend):
    model = mlp(backend)
    x = images(6)
    out = torch.compile(model, fullgraph=True, dynamic=True)(x)
    ref = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()


def test_inductor_compiles_torch_backend():
    _inductor_case("torch")


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_inductor_compiles_other_backends(backend):
    _inductor_case(backend)


def test_triton_launches_keep_fp_fusion_off_under_compile(monkeypatch):
    """Compiled code calls the same launchers: every launch still has enable_fp_fusion=False (no FMA)."""
    import snn.kernels.lif.triton_launch as L

    launches = []
    config = L._launch_config

    def recording(*args, **kwargs):
        grid, options = config(*args, **kwargs)
        launches.append(options)
        return grid, options

    monkeypatch.setattr(L, "_launch_config", recording)
    model = mlp("triton")
    out = torch.compile(model, backend="aot_eager", fullgraph=True)(images(3))
    out.sum().backward()
    assert len(launches) == 4, "two forward and two backward launches"
    assert all(options["enable_fp_fusion"] is False for options in launches)


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_runs_and_matches_eager(backend):
    """torch.export with a dynamic batch: the exported program gives the eager result at another batch size."""
    model = mlp(backend)
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(model, (images(4),), dynamic_shapes=({0: batch},))
    x = images(7)
    assert torch.equal(program.module()(x), model(x))
    ops = {str(node.target) for node in program.graph.nodes if str(node.target).startswith("snn.")}
    # the torch backend's fused C path is for plain eager calls; traced, it is the registered eager op
    expected = {"reference": "snn.surrogate_spike.default", "torch": "snn.lif_fwd_eager.default"}
    assert ops == {expected.get(backend, f"snn.lif_fwd_{backend}.default")}


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_trace_refuses(backend):
    """torch.jit.trace would bake the spikes of the example input into a constant: refused in one sentence."""
    with pytest.raises(RuntimeError, match=r"torch\.jit\.trace .* constant; export with torch\.export\.export"):
        torch.jit.trace(mlp(backend), images(2))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_legacy_onnx_export_refuses():
    with pytest.raises(Exception, match=r"torch\.onnx\.export\(dynamo=False\)"):
        torch.onnx.export(mlp("torch"), (images(2),), io.BytesIO(), dynamo=False)


def test_compiled_torch_backend_runs_the_fused_kernel_forward_and_backward(monkeypatch):
    """Under torch.compile the torch backend is the fused C kernel (snn::lif_fwd_torch), not the eager op."""
    import snn.kernels.lif.cpu_launch as L
    import snn.lif.eager as E

    calls = count_calls(monkeypatch, {"forward": (L, "lif_cpu_forward"), "backward": (L, "lif_cpu_backward"),
                                      "eager": (E, "lif_torch_forward")})
    model, x = conv_snn("torch"), conv_input(2)
    recorded = dynamo.testing.EagerAndRecordGraphs()
    torch.compile(model, backend=recorded, fullgraph=True)(x)
    ops = {str(n.target) for n in recorded.graphs[0].graph.nodes if str(n.target).startswith("snn.")}
    assert ops == {"snn.lif_fwd_torch.default"}
    dynamo.reset()
    calls.update(forward=0, backward=0, eager=0)
    out = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    torch.autograd.grad(out.sum(), list(model.parameters()))
    assert calls == {"forward": 2, "backward": 2, "eager": 0}, calls


def test_the_output_cache_never_hands_out_a_storage_a_compiled_graph_holds(monkeypatch):
    """Every output over the cache (limit 0 bytes): outputs kept from one compiled call survive the next."""
    import snn.kernels.lif.cpu_launch as L

    monkeypatch.setattr(L, "LARGE_OUTPUT_BYTES", 0)
    model = mlp("torch")
    compiled = torch.compile(model.forward_with_spikes, fullgraph=True)
    x1, x2 = images(6), images(6) * 0.5
    logits1, spikes1 = compiled(x1)
    kept = [s.clone() for s in spikes1]
    logits1.sum().backward()
    logits2, spikes2 = compiled(x2)
    logits2.sum().backward()
    for s, k in zip(spikes1, kept):
        assert torch.equal(s, k), "a held output was overwritten by a later call"
    for s, r in zip(spikes2, model.forward_with_spikes(x2)[1]):
        assert torch.equal(s, r)
    assert L.OUTPUT_CACHE.held_bytes() > 0, "the outputs did go through the cache"
