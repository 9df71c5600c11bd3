"""TimeDistributed (snn/time_distributed.py): one call on a stride-0 input, fold strategies, layout refusals."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from snn import TimeDistributed, direct_encode
from snn.time_distributed import time_invariant


def conv_stack() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


def counting(module: nn.Module) -> list:
    seen = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    return seen


def test_a_stride0_input_runs_the_layer_once_and_equals_the_per_step_result():
    layer = conv_stack()
    images = torch.rand(3, 2, 6, 6, requires_grad=True)
    x = direct_encode(images, 5)
    seen = counting(layer)
    y = TimeDistributed(layer)(x)
    assert seen == [3], f"the layer saw batches of {seen}, not one call on the 3 images"
    assert y.shape == (3, 5, 4, 3, 3) and y.stride(1) == 0
    ref = TimeDistributed(layer, broadcast=False)(x)
    assert torch.equal(y, ref)
    g = torch.rand(y.shape)
    grad = torch.autograd.grad(y, images, g)[0]
    ref_grad = torch.autograd.grad(ref, images, g)[0]
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", [nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Sequential(nn.Conv2d(2, 2, 1), nn.Dropout())])
def test_layers_with_batch_statistics_or_randomness_fold_in_training_and_run_once_in_eval(layer):
    x = direct_encode(torch.rand(3, 2, 4, 4), 4)
    layer.train()
    assert not time_invariant(layer)
    seen = counting(layer)
    TimeDistributed(layer)(x)
    layer.eval()
    assert time_invariant(layer)
    TimeDistributed(layer)(x)
    assert seen == [12, 3], seen


def test_an_unknown_module_folds_unless_broadcast_is_asked_for():
    class Custom(nn.Module):
        def forward(self, x):
            return x * 2

    x = direct_encode(torch.rand(2, 3), 4)
    layer = Custom()
    seen = counting(layer)
    TimeDistributed(layer)(x)
    TimeDistributed(layer, broadcast=True)(x)
    assert seen == [8, 2]


@pytest.mark.parametrize("fold", ["all", 1, 2, 3, "auto"])
def test_every_fold_gives_the_same_outputs_and_gradients(fold):
    layer = conv_stack()
    x = torch.rand(2, 5, 2, 6, 6, requires_grad=True)
    y = TimeDistributed(layer, fold=fold)(x)
    ref = TimeDistributed(layer, fold="all")(x)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    g = torch.rand(ref.shape)
    grads = torch.autograd.grad(y, [x, *layer.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [x, *layer.parameters()], g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_chunks_call_the_layer_on_that_many_steps():
    layer = conv_stack()
    seen = counting(layer)
    TimeDistributed(layer, fold=2)(torch.rand(3, 5, 2, 4, 4))
    assert seen == [6, 6, 3]


def test_a_single_step_image_given_to_a_conv_layer_is_one_sentence():
    with pytest.raises(ValueError, match=r"TimeDistributed\(Conv2d\): expected a 5-D \[B, T, \.\.\.\] input .*"
                                         r"got shape \(4, 2, 6, 6\); give one step .* x\.unsqueeze\(1\)"):
        TimeDistributed(conv_stack())(torch.rand(4, 2, 6, 6))


def test_time_steps_refuses_a_time_major_tensor():
    layer = TimeDistributed(nn.Linear(3, 2), time_steps=4)
    layer(torch.rand(8, 4, 3))
    with pytest.raises(ValueError, match=r"built for T=4 steps on dim 1, got shape \(4, 8, 3\); .*transpose\(0, 1\)"):
        layer(torch.rand(4, 8, 3))


def test_swapped_batch_and_time_are_warned_about_once():
    layer = TimeDistributed(nn.Linear(3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.rand(8, 4, 3))
        layer(torch.rand(5, 4, 3))  # another batch size: no warning
    with pytest.warns(UserWarning, match=r"looks like \[T, B, \.\.\.\]"):
        layer(torch.rand(4, 8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.rand(4, 8, 3))


def test_bad_options_are_one_sentence():
    with pytest.raises(ValueError, match="fold must be 'auto', 'all' or a number of steps >= 1"):
        TimeDistributed(nn.Identity(), fold=0)
    with pytest.raises(ValueError, match="time_steps must be a whole number >= 1"):
        TimeDistributed(nn.Identity(), time_steps=0)


def test_auto_fold_caps_the_images_per_call_of_a_measured_layer_type(monkeypatch):
    import snn.time_distributed as td

    monkeypatch.setattr(td, "IMAGES_PER_CALL", {nn.Conv2d: 6})
    layer = conv_stack()
    seen = counting(layer)
    TimeDistributed(layer)(torch.rand(3, 5, 2, 4, 4))
    TimeDistributed(nn.Sequential(nn.Flatten()))(torch.rand(3, 5, 2, 4, 4))
    assert seen == [6, 6, 3]
