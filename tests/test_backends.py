"""The triton backend is a drop-in for the torch backend: whole model, checkpoints, train.py."""

import pytest
import torch

from snn.cli import train
from snn.checkpoint import load_checkpoint, model_from_checkpoint
from snn.model import MLPConfig, SpikingMLP


def firing_model(backend, device, seed=0):
    torch.manual_seed(seed)
    model = SpikingMLP(MLPConfig(), backend=backend)
    with torch.no_grad():  # default init barely reaches the threshold; scale so both layers fire
        model.fc1.weight.mul_(6.0)
        model.fc2.weight.mul_(6.0)
    return model.to(device)


def test_whole_model_same_loss_and_parameter_gradients(device):
    generator = torch.Generator().manual_seed(11)
    images = (torch.rand(24, 1, 28, 28, generator=generator) * (torch.rand(24, 1, 28, 28, generator=generator) < 0.2)).to(device)
    labels = torch.randint(0, 10, (24,), generator=generator).to(device)
    results = {}
    for backend in ("torch", "triton"):
        model = firing_model(backend, device)
        logits, spikes = model.forward_with_spikes(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        results[backend] = (loss.detach(), spikes, {n: p.grad for n, p in model.named_parameters()})
    (loss_t, spikes_t, grads_t), (loss_k, spikes_k, grads_k) = results["torch"], results["triton"]
    assert spikes_t[0].float().mean() > 0.01 and spikes_t[1].float().mean() > 0.01, "both LIF layers must fire"
    for layer, (a, b) in enumerate(zip(spikes_t, spikes_k)):
        assert torch.equal(a, b), f"LIF layer {layer + 1} spikes differ"
    assert torch.equal(loss_t, loss_k), f"loss {loss_t.item()} vs {loss_k.item()}"
    for name, grad in grads_t.items():
        torch.testing.assert_close(grads_k[name], grad, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")


def predictions(checkpoint_path, backend, images):
    model = model_from_checkpoint(load_checkpoint(checkpoint_path), backend=backend).eval()
    with torch.no_grad():
        return model(images)


@pytest.mark.parametrize("trained_with", ["torch", "triton"])
def test_checkpoint_from_one_backend_predicts_identically_with_the_other(mnist_dir, tmp_path, capsys, trained_with):
    checkpoint = tmp_path / "m.pth"
    argv = ["--data-dir", str(mnist_dir), "--checkpoint", str(checkpoint), "--no-progress", "--device", "cpu",
            "--backend", trained_with, "--train-samples", "128", "--test-samples", "64", "--epochs", "1",
            "--batch-size", "64"]
    assert train.main(argv) == 0
    assert f"--backend {trained_with}" in capsys.readouterr().out
    assert load_checkpoint(checkpoint)["meta"]["backend"] == trained_with
    images = torch.rand(16, 1, 28, 28) * (torch.rand(16, 1, 28, 28) < 0.25)
    logits_torch = predictions(checkpoint, "torch", images)
    logits_triton = predictions(checkpoint, "triton", images)
    assert torch.equal(logits_torch, logits_triton)


def test_amp_training_learns_like_fp32_on_cpu(mnist_dir, tmp_path):
    accuracy = {}
    for flags in ((), ("--amp",)):
        path = tmp_path / f"m{len(flags)}.pth"
        argv = ["--data-dir", str(mnist_dir), "--checkpoint", str(path), "--no-progress", "--device", "cpu",
                *flags, "--train-samples", "3000", "--test-samples", "1000", "--epochs", "2"]
        assert train.main(argv) == 0
        accuracy[flags] = load_checkpoint(path)["meta"]["accuracy"]
    # bf16 autocast follows the fp32 run (~0.75 here) closely; chance is 0.1
    assert accuracy[("--amp",)] > 0.6 and abs(accuracy[("--amp",)] - accuracy[()]) < 0.05, accuracy
