"""SpikingJelly's convolutional SNN (snn/csnn.py): equal to SpikingJelly's own CSNN, BN over T copies, backends, CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types

import pytest
import torch

from snn.config_checks import CSNN_CONFIG_RULES, config_rule
from snn.csnn import CSNNConfig, RepeatedInputBatchNorm2d, SpikingCSNN, state_dict_from_spikingjelly
from snn.monitor import layer_activity

from conftest import REPO_ROOT


def spikingjelly_csnn(time_steps: int, channels: int):
    """SpikingJelly's own CSNN class (examples/conv_fashion_mnist.py), or skip where it does not import.
    Its module imports tensorboard's SummaryWriter at the top for its training script only; a stub
    stands in where tensorboard is not installed."""
    pytest.importorskip("spikingjelly", reason="spikingjelly is not installed (pip install --no-deps spikingjelly==2.0.0 loguru==0.7.3)")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = None
        sys.modules["torch.utils.tensorboard"] = stub
    try:
        from spikingjelly.activation_based.examples.conv_fashion_mnist import CSNN
    except ImportError as exc:
        pytest.skip(f"SpikingJelly's CSNN example does not import: {exc}")
    return CSNN(T=time_steps, channels=channels)


def paired(channels=8, time_steps=4, seed=0):
    torch.manual_seed(seed)
    theirs = spikingjelly_csnn(time_steps, channels)
    ours = SpikingCSNN(CSNNConfig(channels=channels, time_steps=time_steps))
    ours.load_state_dict(state_dict_from_spikingjelly(theirs.state_dict()))
    return theirs, ours


def spikingjelly_forward(model, images):
    from spikingjelly.activation_based import functional

    functional.reset_net(model)
    return model(images)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_equal_to_spikingjelly_outputs_and_gradients(mode):
    """Same weights, same input, fp32: outputs to the last bit, one step's gradients to fp32 rounding,
    BN running statistics to the bit (bn1's to rounding: its mean and variance are reduced over B
    elements instead of T*B)."""
    theirs, ours = paired()
    theirs.train(mode == "train")
    ours.train(mode == "train")
    with torch.no_grad():  # wake the network up so every layer spikes
        for model in (theirs, ours):
            for name, p in model.named_parameters():
                if name.endswith("weight") and p.dim() > 1:
                    p.mul_(3.0)
    images = torch.rand(16, 1, 28, 28)
    out_theirs, out_ours = spikingjelly_forward(theirs, images), ours(images)
    assert out_ours.abs().sum() > 0, "the test needs output spikes"
    assert torch.equal(out_ours, out_theirs)
    target = torch.nn.functional.one_hot(torch.arange(16) % 10, 10).float()
    torch.nn.functional.mse_loss(out_theirs, target).backward()
    torch.nn.functional.mse_loss(out_ours, target).backward()
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        mine = ours_params[state_dict_key(name)]
        torch.testing.assert_close(mine.grad, p.grad, rtol=1e-4, atol=1e-6 * float(p.grad.abs().max()) + 1e-9)
    if mode == "train":
        for key, value in state_dict_from_spikingjelly(theirs.state_dict()).items():
            if key.startswith("bn1.running"):  # batch statistics reduced over B instead of T*B elements
                torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-6, atol=0)
            else:
                assert torch.equal(ours.state_dict()[key], value), key


def state_dict_key(name: str) -> str:
    return next(iter(state_dict_from_spikingjelly({name: None})))


def test_spikingjelly_spikes_at_threshold_ours_do_not():
    """The one definitional difference: SpikingJelly's IF spikes at h >= thresh, ours at h > thresh."""
    from spikingjelly.activation_based import neuron, surrogate

    pytest.importorskip("spikingjelly")
    x = torch.tensor([[1.0], [0.5], [0.5]])  # [T, N]: h = 1.0 exactly at t=0 and at t=2 (0.5 + 0.5)
    node = neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m")
    theirs = node(x)
    ours = SpikingCSNN(CSNNConfig(channels=1)).lif1(x.T.unsqueeze(0))[0].T
    assert theirs.tolist() == [[1.0], [0.0], [1.0]] and ours.tolist() == [[0.0], [0.0], [0.0]]


def test_batch_statistics_over_repeated_copies_equal_those_over_the_batch():
    """The first BN sees the batch once instead of T identical copies: same output, same running stats."""
    torch.manual_seed(1)
    x = torch.randn(6, 4, 5, 5) * 2 + 0.5
    copies = x.unsqueeze(0).expand(3, *x.shape).reshape(18, 4, 5, 5)
    plain, repeated = torch.nn.BatchNorm2d(4), RepeatedInputBatchNorm2d(4, repeats=3)
    with torch.no_grad():
        for bn in (plain, repeated):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        repeated.load_state_dict(plain.state_dict())
    for _ in range(2):
        out_copies = plain(copies)
        out_once = repeated(x)
        torch.testing.assert_close(out_copies.reshape(3, *x.shape), out_once.expand(3, *x.shape), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(repeated.running_mean, plain.running_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(repeated.running_var, plain.running_var, rtol=1e-6, atol=1e-7)
    assert int(repeated.num_batches_tracked) == int(plain.num_batches_tracked) == 2
    # the correction matters: with the batch's own count the running variance would differ
    naive = torch.nn.BatchNorm2d(4)
    naive(x)
    fresh_plain = torch.nn.BatchNorm2d(4)
    fresh_plain(copies)
    assert (naive.running_var - fresh_plain.running_var).abs().max() > 1e-5


def test_first_layer_runs_once_per_sample():
    """conv1 sees [B, 1, 28, 28], not [B*T, ...], and the first LIF reads a stride-0 view over T."""
    model = SpikingCSNN(CSNNConfig(channels=4, time_steps=5))
    seen = []
    model.conv1.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    model.lif1.register_forward_hook(lambda m, i, o: seen.append(i[0].stride(1)))
    model(torch.rand(3, 1, 28, 28))
    assert seen == [(3, 1, 28, 28), 0]


@pytest.mark.parametrize("backend", ["torch", "eager", "reference", "triton"])
def test_backends_agree(backend):
    """Every backend computes the same CSNN (triton in the interpreter here: a tiny batch)."""
    torch.manual_seed(2)
    base = SpikingCSNN(CSNNConfig(channels=2, time_steps=2), backend="reference")
    other = SpikingCSNN(CSNNConfig(channels=2, time_steps=2), backend=backend)
    other.load_state_dict(base.state_dict())
    with torch.no_grad():
        for p in base.parameters():
            p.mul_(4.0)
        other.load_state_dict(base.state_dict())
    images = torch.rand(2, 1, 28, 28, requires_grad=True)
    out_base, out_other = base(images), other(images)
    assert torch.equal(out_base, out_other)
    grad_base = torch.autograd.grad(out_base.square().sum() + base.forward_with_spikes(images)[1][0].sum(), images)[0]
    grad_other = torch.autograd.grad(out_other.square().sum() + other.forward_with_spikes(images)[1][0].sum(), images)[0]
    torch.testing.assert_close(grad_other, grad_base, rtol=1e-5, atol=1e-6)


def test_torch_compile_matches_eager():
    model = SpikingCSNN(CSNNConfig(channels=2, time_steps=2)).eval()
    images = torch.rand(4, 1, 28, 28)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(images), model(images))


def test_every_csnn_config_field_has_a_rule():
    for field in dataclasses.fields(CSNNConfig):
        assert field.name in CSNN_CONFIG_RULES, f"CSNNConfig.{field.name} has no rule in CSNN_CONFIG_RULES"
        assert config_rule(field, CSNN_CONFIG_RULES)(getattr(CSNNConfig(), field.name)) is None


def test_layer_activity_counts_synaptic_operations():
    """Firing rates are the spike share; ACs of fc2 are the spikes of lif3 times 10 outputs."""
    model = SpikingCSNN(CSNNConfig(channels=2, time_steps=3))
    images = (torch.rand(5, 28, 28) * 255).to(torch.uint8)
    activity = layer_activity(model, images)
    _, spikes = model.eval().forward_with_spikes(images.float().div(255).unsqueeze(1))
    assert activity["firing_rates"]["lif3"] == pytest.approx(float(spikes[2].mean()))
    assert activity["synops"]["fc2"]["AC"] == pytest.approx(float(spikes[2].sum()) * 10 / 5)
    assert activity["synops"]["conv1"]["MAC"] == 9 * 2 * 784
    # an all-ones spike map through a 3x3 conv with padding 1: 9 per inner pixel, fewer at the border
    from snn.monitor import _conv_fanout
    assert float(_conv_fanout(torch.ones(1, 1, 4, 4), 1)) == 4 * 9 + 8 * 6 + 4 * 4


def test_train_and_infer_csnn_fashion_mnist_through_the_clis(tmp_path, fashion_mnist_dir):
    """A fresh train.py process trains the CSNN on Fashion-MNIST; infer.py rebuilds it and names the class."""
    checkpoint = tmp_path / "c.pth"
    run = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--model", "csnn", "--dataset", "fashion-mnist",
                          "--channels", "2", "--data-dir", str(fashion_mnist_dir), "--train-samples", "64",
                          "--test-samples", "40", "--epochs", "1", "--checkpoint", str(checkpoint), "--no-progress",
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "firing lif1" in run.stdout
    assert "on the first 40 of the 10,000 images of the Fashion-MNIST test set" in run.stdout
    infer = subprocess.run([sys.executable, str(REPO_ROOT / "infer.py"), "--checkpoint", str(checkpoint), "--index", "0",
                            "--json", "--data-dir", str(fashion_mnist_dir), "--device", "cpu"],
                           capture_output=True, text=True, timeout=300)
    assert infer.returncode == 0, infer.stderr
    import json
    line = json.loads(infer.stdout.splitlines()[0])
    assert line["dataset"] == "Fashion-MNIST" and line["label"] == 9 and line["label_name"] == "Ankle boot"
    assert set(line["firing_rates"]) == {"lif1", "lif2", "lif3", "lif4"}


def test_evaluate_measures_the_activity_of_layer_activity_in_its_own_pass():
    """train.py's per-epoch firing rates come from the test pass: the same figures as layer_activity."""
    from snn.model import MLPConfig, SpikingMLP
    from snn.training import evaluate

    torch.manual_seed(3)
    images = (torch.rand(23, 28, 28) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (23,))
    for model in (SpikingCSNN(CSNNConfig(channels=3, time_steps=2)), SpikingMLP(MLPConfig(hidden=16, time_steps=3))):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)  # enough spikes to count
        accuracy, activity = evaluate(model, images, labels, batch_size=5, activity_samples=12)
        assert accuracy == evaluate(model, images, labels, batch_size=5)
        expected = layer_activity(model, images[:12])
        assert activity["samples"] == 12
        assert activity["firing_rates"] == pytest.approx(expected["firing_rates"], rel=1e-12)
        assert activity["MAC"] == pytest.approx(expected["MAC"]) and activity["AC"] == pytest.approx(expected["AC"])
        assert 0 < activity["firing_rates"]["lif1"] < 1


@pytest.mark.parametrize("backend", ["torch", "eager", "reference"])
def test_export_runs_and_matches_eager(backend):
    """torch.export of the CSNN (eval mode) with a dynamic batch gives the eager result at another batch size."""
    torch.manual_seed(4)
    model = SpikingCSNN(CSNNConfig(channels=2, time_steps=3), backend=backend).eval()
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(model, (torch.rand(4, 1, 28, 28),), dynamic_shapes=({0: batch},))
    images = torch.rand(7, 1, 28, 28) * 3
    assert torch.equal(program.module()(images), model(images))


def test_torchrun_trains_the_csnn_on_two_ranks(mnist_dir, tmp_path):
    """Two gloo ranks train one CSNN (identical weights); the epoch's firing rates, measured by the
    ranks on their halves of the test images and summed, are those of the saved model."""
    import json
    import os

    from snn.checkpoint import load_checkpoint
    from snn.data import load_dataset

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    checkpoint = tmp_path / "c.pth"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(REPO_ROOT / "train.py"), "--model", "csnn", "--channels", "2", "--data-dir", str(mnist_dir),
                          "--train-samples", "128", "--test-samples", "101", "--epochs", "1", "--batch-size", "32",
                          "--checkpoint", str(checkpoint), "--no-progress", "--device", "cpu"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "weights identical on all 2 ranks" in run.stdout
    record = [json.loads(line) for line in (tmp_path / "c.metrics.jsonl").read_text().splitlines()][-1]
    saved = load_checkpoint(checkpoint)
    model = SpikingCSNN(CSNNConfig(**saved["config"]))
    model.load_state_dict(saved["model_state"])
    expected = layer_activity(model, load_dataset("mnist", mnist_dir).test_images[:101])
    assert record["firing_rates"] == pytest.approx(expected["firing_rates"], rel=1e-9)
    assert record["synops_per_sample"]["AC"] == pytest.approx(expected["AC"], rel=1e-9)


def test_infer_names_the_csnn_in_titles_and_the_figure_shows_every_spiking_layer(tmp_path):
    """infer.py's title says what the checkpoint holds; the figure has a panel per LIF layer with its rate."""
    import argparse

    from snn.cli.infer import figure_title
    from snn.figure import inference_figure

    model = SpikingCSNN(CSNNConfig(channels=3, time_steps=2)).eval()
    model.dataset = "fashion-mnist"
    args = argparse.Namespace(checkpoint=str(tmp_path / "c.pth"), backend="torch")
    assert figure_title(args, model) == "spiking CSNN (C=3, T=2), Fashion-MNIST c.pth, backend torch"
    images = torch.rand(2, 1, 28, 28)
    rates, spikes = model.forward_with_spikes(images)
    fig = inference_figure(images[:, 0], rates.softmax(1), spikes, ["a", "b"], [0, 9],
                           class_names=("T-shirt/top",) + tuple(map(str, range(1, 9))) + ("Ankle boot",))
    titles = [ax.get_title() for ax in fig.axes]
    assert sum("LIF layer 1 (conv, 3 channels" in t for t in titles) == 2
    assert sum(t.startswith("LIF layer 4:") for t in titles) == 2
    assert any("label 9 Ankle boot" in t for t in titles)


def test_the_shift_default_follows_the_dataset_and_the_flag_wins():
    """Shifts by default on MNIST (both models), none on Fashion-MNIST (the CSNN: 92.65 % without, 91.80 % with
    2-pixel shifts, benchmarks/RESULTS.md); --max-shift sets either."""
    from snn.cli.train_args import parse_args

    assert parse_args([]).max_shift == 2
    assert parse_args(["--model", "csnn"]).max_shift == 2
    assert parse_args(["--model", "csnn", "--dataset", "fashion-mnist"]).max_shift == 0
    assert parse_args(["--dataset", "fashion-mnist"]).max_shift == 0
    assert parse_args(["--model", "csnn", "--dataset", "fashion-mnist", "--max-shift", "2"]).max_shift == 2
    assert parse_args(["--max-shift", "0"]).max_shift == 0
