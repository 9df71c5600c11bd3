"""Divergence in train.py: --lr must be finite and positive, a run whose weights or optimizer state
turn non-finite stops with one sentence, and a non-finite model is never saved.

The runs use the tiny random MNIST of tests/cli_helpers.py.
"""

from __future__ import annotations

import pytest
import torch

from cli_helpers import assert_one_error, run_train, train_argv
from snn.checkpoint import load_checkpoint, model_from_checkpoint
from snn.cli import train
from snn.model import SpikingMLP
from snn.training import first_non_finite


@pytest.mark.parametrize("lr", ["inf", "nan", "-inf", "0"])
def test_lr_must_be_finite_and_positive(lr, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args([f"--lr={lr}"])
    assert exit_info.value.code == 2
    assert "--lr must be a finite positive number" in capsys.readouterr().err


def test_divergence_stops_training_and_never_saves_a_non_finite_model(tiny_mnist, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "m.pth"
    real_step = train.train_one_epoch

    # an absurd learning rate (beyond what --lr accepts since issue 15, so set on the optimizer itself):
    # the weights really overflow in the first epoch
    real_make_optimizer = train.make_optimizer
    monkeypatch.setattr(train, "make_optimizer", lambda params, lr, *a, **k: real_make_optimizer(params, 1e38, *a, **k))
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint))
    monkeypatch.undo()
    assert_one_error(code, err, "training diverged in epoch 1")
    assert "lower --lr" in err and "nothing was saved" in err
    assert not checkpoint.exists() and not checkpoint.with_name("m.last.pth").exists()

    # diverging after a good epoch: the epoch-1 checkpoints stay, nothing non-finite is written
    def nan_in_epoch_2(model, *args, epoch, **kwargs):
        result = real_step(model, *args, epoch=epoch, **kwargs)
        if epoch == 2:
            with torch.no_grad():
                model.fc2.weight[0, 0] = float("nan")
            raise train.Diverged("the weight fc2.weight holds NaN or inf")
        return result

    monkeypatch.setattr(train, "train_one_epoch", nan_in_epoch_2)
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--overwrite"))
    assert_one_error(code, err, "training diverged in epoch 2")
    assert "m.last.pth still holds epoch 1" in err
    for path in (checkpoint, checkpoint.with_name("m.last.pth")):
        state = load_checkpoint(path)
        assert state["meta"]["epoch"] == 1
        model_from_checkpoint(state, "torch", path)  # finite, loadable


def test_non_finite_weights_and_optimizer_state_are_detected():
    model = SpikingMLP()
    optimizer = torch.optim.Adam(model.parameters())
    assert first_non_finite(model, optimizer) is None
    model(torch.rand(2, 784)).sum().backward()
    optimizer.step()
    next(iter(optimizer.state.values()))["exp_avg_sq"][0] = float("inf")
    assert first_non_finite(model, optimizer) == "optimizer state exp_avg_sq"
    with torch.no_grad():
        model.fc3.bias[0] = float("nan")
    assert first_non_finite(model) == "weight fc3.bias"

