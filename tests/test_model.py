"""The optimised SpikingMLP computes the seed's function (literal per-step model) with ~half the FLOPs."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from snn.lif.layers import TimeDistributed, apply_per_step, direct_encode
from snn.model import MLPConfig, SpikingMLP
from snn.seed_model import SeedMLP


def paired_models(config=MLPConfig()):
    optimised = SpikingMLP(config)
    with torch.no_grad():  # default init barely reaches the threshold; scale so both layers fire
        optimised.fc1.weight.mul_(6.0)
        optimised.fc2.weight.mul_(6.0)
    literal = SeedMLP(config)
    literal.load_state_dict(optimised.state_dict())  # same keys, same parameters
    return optimised, literal


def mnist_like_batch(batch, generator):
    # Sparse ink in [0, 1], like MNIST digits, so the LIF layers see realistic currents.
    images = torch.rand(batch, 1, 28, 28, generator=generator)
    return images * (torch.rand(batch, 1, 28, 28, generator=generator) < 0.2)


def test_same_outputs_and_gradients_as_the_literal_seed_model():
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    optimised, literal = paired_models()
    images = mnist_like_batch(64, generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    logits_opt, (spikes1, spikes2) = optimised.forward_with_spikes(images)
    logits_lit = literal(images)
    assert spikes1.float().mean() > 0.01 and spikes2.float().mean() > 0.01, "LIF layers must actually fire"
    torch.testing.assert_close(logits_opt, logits_lit, rtol=1e-5, atol=1e-5)

    torch.nn.functional.cross_entropy(logits_opt, labels).backward()
    torch.nn.functional.cross_entropy(logits_lit, labels).backward()
    for (name, p_opt), p_lit in zip(optimised.named_parameters(), literal.parameters()):
        torch.testing.assert_close(p_opt.grad, p_lit.grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_first_layer_input_is_broadcast_not_copied():
    current = torch.randn(4, 512)
    encoded = direct_encode(current, 6)
    assert encoded.shape == (4, 6, 512) and encoded.stride(1) == 0
    assert encoded.data_ptr() == current.data_ptr(), "direct encoding must be a view"
    images = torch.randn(2, 1, 28, 28)
    before = images.clone()
    assert direct_encode(images, 3).shape == (2, 3, 1, 28, 28)
    assert torch.equal(images, before) and images.shape == (2, 1, 28, 28)


def test_about_half_the_flops_of_the_seed_model():
    optimised, literal = paired_models()
    images = torch.rand(32, 1, 28, 28)

    def flops(model, backward):
        with FlopCounterMode(display=False) as counter:
            out = model(images).sum()
            if backward:
                out.backward()
        return counter.get_total_flops()

    # T=6 forward: (784*512 + 6*512*512 + 512*10) / (6 * (784*512 + 512*512 + 512*10)) = 0.493
    forward_ratio = flops(optimised, False) / flops(literal, False)
    assert 0.45 < forward_ratio < 0.5, f"forward FLOP ratio {forward_ratio:.3f}"
    # with backward (fc1 needs only its weight gradient, fc2 both) the ratio is 0.575
    training_ratio = flops(optimised, True) / flops(literal, True)
    assert 0.5 < training_ratio < 0.6, f"forward+backward FLOP ratio {training_ratio:.3f}"


def test_time_distributed_folds_time_into_batch():
    linear = torch.nn.Linear(5, 3)
    x = torch.randn(4, 6, 5)
    expected = torch.stack([linear(x[:, t]) for t in range(6)], dim=1)
    torch.testing.assert_close(apply_per_step(linear, x), expected)
    torch.testing.assert_close(TimeDistributed(linear)(x), expected)


def test_accepts_flat_images_and_other_time_steps():
    model = SpikingMLP(MLPConfig(time_steps=3))
    logits, spikes = model.forward_with_spikes(torch.rand(5, 784))
    assert logits.shape == (5, 10) and spikes[0].shape == (5, 3, 512)
