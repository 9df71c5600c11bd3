"""memory="low" (snn/memory.py): spikes saved as bits, blocks recomputed; bit-identical to the plain path."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from snn import memory as snn_memory
from snn.csnn import CSNNConfig, SpikingCSNN
from lif_helpers import saved_tensors, time_major_storage
from snn.lif.layers import LIFSpike
from snn.memory import lif_with_bits, recompute_block
from snn.model import MLPConfig, SpikingMLP
from snn.spikebits import pack_bits, packed_shape, unpack_bits

DTYPES = [torch.float32, torch.bfloat16]
DTYPE_IDS = ["fp32", "bf16"]


# ---- the bit layout and the kernels that write it ----------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 3, 1029), (4, 2, 3, 5, 5), (1, 1, 1)])
def test_pack_unpack_round_trip(shape):
    spikes = (torch.rand(shape) > 0.5).float()
    bits = pack_bits(spikes)
    assert bits.dtype == torch.uint8 and tuple(bits.shape) == packed_shape(shape)
    assert torch.equal(unpack_bits(bits, shape, torch.float32), spikes)
    n = spikes[0, 0].numel()
    assert (bits[..., -1] >> (n - 8 * (bits.shape[-1] - 1)) == 0).all(), "pad bits are 0"


def _inputs(shape, dtype):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.8).to(dtype)
    x.view(-1)[::7] = 1.0  # on the threshold: does not spike
    return {"contiguous": x, "stride-0 time": x[:, :1].expand(shape),
            "time-major storage": time_major_storage(x)}


BIT_CASES = [(backend, dtype) for backend in ("torch", "eager", "reference") for dtype in ("fp32", "bf16", "fp16")]
BIT_CASES += [("triton", "fp32"), pytest.param("triton", "bf16", marks=pytest.mark.slow),
              pytest.param("triton", "fp16", marks=pytest.mark.slow)]


@pytest.mark.parametrize("backend, dtype", BIT_CASES)
def test_every_backend_writes_the_bits_of_its_spikes_in_the_same_pass(backend, dtype):
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    interpreted = backend == "triton"  # the interpreter is slow: fewer cases, one crossing a tile (1024) edge
    shapes = [(3, 4, 13), (2, 3, 2, 5, 5), (2, 2, 2053)] if not interpreted else [(2, 3, 13), (1, 2, 1030)]
    for shape in shapes:
        for layout, x in _inputs(shape, dtype).items():
            per_neuron = {"thresh": torch.linspace(0.5, 1.5, x[0, 0].numel()).view(x.shape[2:])}
            for options in ({}, per_neuron) if interpreted else ({}, {"reset": "soft"}, per_neuron):
                lif = LIFSpike(backend=backend, **options)
                spikes, bits = lif_with_bits(lif, x)
                with torch.no_grad():
                    want = lif(x)
                label = f"{backend} {shape} {layout} {options.keys()}"
                assert torch.equal(spikes, want), f"{label}: spikes differ from the layer's"
                poisoned = bits.clone().fill_(0xA5)
                assert torch.equal(bits, pack_bits(want)) and not torch.equal(poisoned, bits), f"{label}: bits"


# ---- bit-identity of the two paths ---------------------------------------------------------------


def _step(model, images, steps=2):
    """Outputs, parameter gradients and buffers after ``steps`` SGD steps (momentum: later steps see the first's)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    target = F.one_hot(torch.arange(images.shape[0]) % 10, 10).float()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        out = model(images)
        F.mse_loss(out.float(), target).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
    return out.detach(), grads, {n: b.clone() for n, b in model.state_dict().items()}


def assert_identical(plain, low, label):
    for part, a, b in zip(("output", "gradients", "state"), plain, low):
        if part == "output":
            assert torch.equal(a, b), f"{label}: outputs differ"
            continue
        assert a.keys() == b.keys(), f"{label}: {part} keys differ"
        for name in a:
            assert torch.equal(a[name], b[name]), f"{label}: {part} {name} differs"


MLP_OPTIONS = [{}, {"reset": "soft"}, {"v_reset": -0.25}, {"detach_reset": True}, {"surrogate": "sigmoid"},
               {"surrogate": "atan", "alpha": 3.0}, {"surrogate": "rectangle"}, {"learn_tau": True, "learn_thresh": True}]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", MLP_OPTIONS, ids=lambda o: ",".join(o) or "seed")
def test_mlp_low_memory_is_bit_identical(options, dtype):
    config = MLPConfig(hidden=37, time_steps=3, **options)
    images = torch.rand(9, 784, generator=torch.Generator().manual_seed(1)).to(dtype)
    runs = []
    for memory in ("plain", "low"):
        torch.manual_seed(0)
        runs.append(_step(SpikingMLP(dataclasses.replace(config, memory=memory)).to(dtype), images))
    assert_identical(*runs, f"MLP {options} {dtype}")


CSNN_OPTIONS = [{}, {"reset": "soft"}, {"tau": 0.5, "surrogate": "triangle"}, {"detach_reset": True, "v_reset": 0.1}]


@pytest.mark.parametrize("chunk", [16, 2], ids=["whole", "pieces"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", CSNN_OPTIONS, ids=lambda o: ",".join(o) or "sj")
def test_csnn_low_memory_is_bit_identical(options, dtype, chunk, monkeypatch):
    """Also with the conv blocks' per-sample part (LIF, pooling) run 2 samples at a time."""
    monkeypatch.setattr(snn_memory, "LOCAL_CHUNK", chunk)
    config = CSNNConfig(channels=3, time_steps=3, **options)
    images = (torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 3).to(dtype)
    runs = []
    for memory in ("plain", "low"):
        torch.manual_seed(0)
        runs.append(_step(SpikingCSNN(dataclasses.replace(config, memory=memory)).to(dtype), images))
    assert_identical(*runs, f"CSNN {options} {dtype}")
    assert runs[1][2]["bn2.num_batches_tracked"].item() == 2, "BatchNorm's running statistics update once per step"


@pytest.mark.parametrize("backend", ["eager", "reference", "triton"])
def test_low_memory_is_bit_identical_on_every_backend(backend):
    images = torch.rand(3, 784, generator=torch.Generator().manual_seed(3))
    runs = []
    for memory in ("plain", "low"):
        torch.manual_seed(0)
        runs.append(_step(SpikingMLP(MLPConfig(hidden=20, time_steps=2, memory=memory), backend=backend), images, 1))
    assert_identical(*runs, f"MLP {backend}")
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3)) * 3
    runs = []
    for memory in ("plain", "low"):
        torch.manual_seed(0)
        runs.append(_step(SpikingCSNN(CSNNConfig(channels=2, time_steps=2, memory=memory), backend=backend), images, 1))
    assert_identical(*runs, f"CSNN {backend}")


def test_eval_and_no_grad_outputs_equal_the_plain_path():
    torch.manual_seed(0)
    plain = SpikingCSNN(CSNNConfig(channels=3)).eval()
    low = SpikingCSNN(CSNNConfig(channels=3, memory="low")).eval()
    low.load_state_dict(plain.state_dict())
    images = torch.rand(4, 1, 28, 28) * 3
    with torch.no_grad():
        assert torch.equal(plain(images), low(images))


# ---- what the graph keeps ----------------------------------------------------------------------


def _saved(model, images):
    with saved_tensors() as saved:
        model(images)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}
    for t in saved:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr != images.untyped_storage().data_ptr():
            storages[ptr] = t
    return list(storages.values())


def test_mlp_low_keeps_two_bit_tensors_and_the_first_layers_output():
    images = torch.rand(8, 784)
    saved = _saved(SpikingMLP(MLPConfig(memory="low")), images)
    kept = sorted((str(t.dtype), tuple(t.shape)) for t in saved)
    assert kept == [("torch.float32", (8, 512))] + [("torch.uint8", (8, 6, 64))] * 2, kept


def test_csnn_low_keeps_bits_the_fc_neurons_inputs_and_no_pooling_indices():
    """The conv blocks keep the bits of their input (the first: the images); the fully connected
    layers keep their input's bits, and the two LIF layers after them their (small) inputs."""
    images = torch.rand(4, 1, 28, 28)
    saved = _saved(SpikingCSNN(CSNNConfig(channels=8, memory="low")), images)
    kept = sorted((str(t.dtype), tuple(t.shape)) for t in saved)
    bits = [("torch.uint8", (4, 4, 8 * 14 * 14 // 8)), ("torch.uint8", (4, 4, 8 * 49 // 8)), ("torch.uint8", (4, 4, 16))]
    assert kept == sorted(bits + [("torch.float32", (4, 4, 8 * 16)), ("torch.float32", (4, 4, 10))]), kept


# ---- the API for your own blocks -----------------------------------------------------------------


def test_recompute_block_on_a_users_block_matches_autograd():
    torch.manual_seed(0)
    conv, bn, lif = torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), LIFSpike(surrogate="atan")
    x = (torch.rand(3, 2, 2, 6, 6) > 0.6).float().requires_grad_()

    def block(s, lif_call):
        y = bn(conv(s.flatten(0, 1)))
        return lif_call(lif, y.view(3, 2, *y.shape[1:]))

    grad = torch.randn(3, 2, 4, 6, 6)
    plain = block(x, lambda m, c: m(c))
    plain.backward(grad)
    want = [x.grad.clone()] + [p.grad.clone() for p in (*conv.parameters(), *bn.parameters())]
    stats = bn.running_mean.clone()
    for t in (x, *conv.parameters(), *bn.parameters()):
        t.grad = None
    out, bits = recompute_block(block, x, (conv, bn, lif), spikes=True)
    assert torch.equal(out, plain) and torch.equal(bits, pack_bits(plain))
    out.backward(grad)
    got = [x.grad] + [p.grad for p in (*conv.parameters(), *bn.parameters())]
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert not torch.equal(bn.running_mean, stats) and bn.num_batches_tracked.item() == 2


def test_memory_option_is_checked():
    with pytest.raises(ValueError, match="memory must be one of 'plain', 'low'"):
        MLPConfig(memory="tiny").checked()
    with pytest.raises(ValueError, match="memory must be one of"):
        SpikingCSNN(CSNNConfig(memory="high"))


# ---- the switch: train.py --memory ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["mlp", pytest.param("csnn", marks=pytest.mark.slow)])
def test_train_py_memory_low_trains_the_same_weights(model, mnist_dir, tmp_path):
    """One epoch on 200 images: --memory low ends with the plain run's weights to the bit; its
    checkpoint records the mode and loads as a model either way."""
    from snn.checkpoint import load_checkpoint, model_from_checkpoint
    from snn.cli import train

    extra = ("--channels", "3") if model == "csnn" else ()
    weights = {}
    for memory in ("plain", "low"):
        checkpoint = tmp_path / memory / "m.pth"
        assert train.main(["--data-dir", str(mnist_dir), "--checkpoint", str(checkpoint), "--no-progress",
                           "--device", "cpu", "--model", model, "--memory", memory, "--train-samples", "200",
                           "--test-samples", "50", "--epochs", "1", "--batch-size", "50", *extra]) == 0
        saved = load_checkpoint(checkpoint.with_name("m.last.pth"))
        assert saved["config"]["memory"] == memory
        weights[memory] = saved["model_state"]
        assert model_from_checkpoint(saved, "torch").config.memory == memory
    for key, value in weights["plain"].items():
        assert torch.equal(value, weights["low"][key]), key


@pytest.mark.slow
def test_torch_compile_of_the_low_memory_mlp_matches_plain_eager():
    torch.manual_seed(0)
    plain = SpikingMLP(MLPConfig(hidden=16, time_steps=2))
    torch.manual_seed(0)
    low = SpikingMLP(MLPConfig(hidden=16, time_steps=2, memory="low"))
    images = torch.rand(4, 784)
    plain(images).sum().backward()
    out = torch.compile(low)(images)
    out.sum().backward()
    assert torch.equal(out, plain(images))
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(plain.parameters(), low.parameters()))
