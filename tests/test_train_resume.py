"""train.py --resume: it refuses, before training, a .last.pth that cannot be resumed (a best
checkpoint, a damaged training state) and a run whose arguments or data changed since it started.

The runs use the tiny random MNIST of tests/cli_helpers.py. Resuming that replays a run exactly is
in tests/test_train.py.
"""

from __future__ import annotations

import pytest

from cli_helpers import assert_one_error, make_mnist, no_training, run_train, snapshot, train_argv
from snn.checkpoint import load_checkpoint, save_checkpoint
from snn.cli import train

# ---------------------------------------------------------------------------- checkpoints that parse but cannot be resumed


def test_best_checkpoint_where_resume_needs_a_last_checkpoint(tiny_mnist, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "m.pth"
    assert run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "1"))[0] == 0
    last = tmp_path / "m.last.pth"
    last.write_bytes(checkpoint.read_bytes())  # a best checkpoint copied over the .last.pth
    no_training(monkeypatch)
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "1", "--resume"))
    assert_one_error(code, err, "holds no training state: it is a best checkpoint")

    last.unlink()
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "1", "--resume"))
    assert_one_error(code, err, "m.last.pth does not exist (")
    assert "is a best checkpoint, which holds no training state" in err


def test_damaged_training_state_is_a_sentence(tiny_mnist, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "m.pth"
    assert run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "2"))[0] == 0
    last = tmp_path / "m.last.pth"
    state = load_checkpoint(last)
    state["train_state"]["optimizer"] = {"state": {}, "param_groups": "nonsense"}
    state["meta"]["epoch"] = 1
    save_checkpoint(last, {k: v for k, v in state.items() if k not in ("format", "format_version")})
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "2", "--resume"))
    assert_one_error(code, err, "has a damaged training state")

    state["train_state"].pop("rng")
    save_checkpoint(last, {k: v for k, v in state.items() if k not in ("format", "format_version")})
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "2", "--resume"))
    assert_one_error(code, err, "damaged training state (rng is missing")


# ---------------------------------------------------------------------------- --resume with changed arguments


CHANGED = {
    "--lr": ("0.005", "--lr 0.001"),
    "--seed": ("3", "--seed 0"),
    "--train-samples": ("48", "--train-samples all"),
    "--test-samples": ("16", "--test-samples all"),
    "--max-shift": ("0", "--max-shift 2"),
    "--epochs": ("5", "--epochs 2"),
    "--batch-size": ("16", "--batch-size 32"),
    "--time-steps": ("4", "--time-steps 6"),
}


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A 2-epoch run stopped after epoch 1 (its .last.pth as --resume finds it)."""
    root = tmp_path_factory.mktemp("interrupted")
    data = make_mnist(root / "data")
    checkpoint = root / "m.pth"
    assert train.main(train_argv(data, checkpoint, "--epochs", "1")) == 0
    state = load_checkpoint(root / "m.last.pth")
    state["train_state"]["epochs"] = state["train_state"]["args"]["epochs"] = 2  # as if --epochs 2 was stopped
    save_checkpoint(root / "m.last.pth", {k: v for k, v in state.items() if k not in ("format", "format_version")})
    return data, checkpoint


@pytest.mark.parametrize("flag", CHANGED, ids=list(CHANGED))
def test_resume_with_changed_arguments_is_refused_up_front(flag, interrupted_run, capsys, monkeypatch):
    data, checkpoint = interrupted_run
    value, started_with = CHANGED[flag]
    before = snapshot(checkpoint.parent)
    no_training(monkeypatch)
    code, out, err = run_train(capsys, *train_argv(data, checkpoint, "--resume", flag, value))
    assert_one_error(code, err, f"was started with {started_with}")
    assert f"not {flag} {value}" in err and "--overwrite" in err
    assert snapshot(checkpoint.parent) == before


def test_resume_with_the_same_arguments_on_other_data_is_refused(interrupted_run, tmp_path, capsys, monkeypatch):
    data, checkpoint = interrupted_run
    other = make_mnist(tmp_path / "other", n_train=80)
    no_training(monkeypatch)
    code, out, err = run_train(capsys, *train_argv(other, checkpoint, "--resume"))
    assert_one_error(code, err, "was trained on the MNIST (64 train / 32 test images)")
    assert "--data-dir" in err

