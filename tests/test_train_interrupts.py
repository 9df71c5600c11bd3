"""Ctrl-C at any moment of train.py (and while either script imports torch): exit status 130, the
"interrupted" message and no traceback, every completed save intact, no temp file or lock left.

The runs use the tiny random MNIST of tests/cli_helpers.py. A Ctrl-C in the middle of one
``save_checkpoint`` is in tests/test_checkpoint.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import snn.checkpoint as checkpoint_module
from cli_helpers import make_mnist, run_train, train_argv
from conftest import REPO_ROOT
from snn.checkpoint import load_checkpoint
from snn.cli import train


def test_ctrl_c_during_a_save_finishes_the_save_then_exits_130(tiny_mnist, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "m.pth"
    real_save = checkpoint_module.torch.save
    calls = []

    def save_with_ctrl_c(obj, handle):
        calls.append(1)
        if len(calls) == 3:  # the best checkpoint of epoch 2: a real SIGINT half-way through the write
            handle.write(b"half")
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, handle)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_with_ctrl_c)
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "3", "--lr", "1e-2"))
    assert code == 130, err
    assert "Traceback" not in err and "interrupted: epoch 2 is the last completed one" in err and "--resume" in err
    assert len(calls) == 4, "the interrupted save and the one after it (best + last of epoch 2) completed"
    assert load_checkpoint(tmp_path / "m.last.pth")["meta"]["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "m.lock").exists()
    records = [json.loads(line) for line in (tmp_path / "m.metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records] == [None, 1, 2], "the metrics line of epoch 2 was written too"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the SIGINT handler is restored"


def test_ctrl_c_before_training_changes_nothing(tiny_mnist, tmp_path, capsys, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "load_mnist", ctrl_c)
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, tmp_path / "m.pth"))
    assert code == 130 and "interrupted before training started" in err and "Traceback" not in err
    assert not (tmp_path / "m.lock").exists()


def test_temp_files_of_a_killed_save_are_removed_at_the_next_run(tiny_mnist, tmp_path, capsys):
    stale = [tmp_path / ".m.pth.k1ll3d.tmp", tmp_path / ".m.last.pth.abc123.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    unrelated = tmp_path / ".other.pth.abc.tmp"
    unrelated.write_bytes(b"someone else's")
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, tmp_path / "m.pth", "--epochs", "1"))
    assert code == 0, err
    assert not any(path.exists() for path in stale) and unrelated.exists()


@pytest.mark.parametrize("script", ["train.py", "infer.py"])
def test_ctrl_c_while_the_libraries_load(script, tmp_path):
    """The first second or two of either script is spent importing torch: Ctrl-C there too."""
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / script), "--help"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert process.returncode == 130 and "interrupted" in err or process.returncode == 0, (process.returncode, err)


@pytest.mark.slow
def test_real_ctrl_c_to_a_training_process(tmp_path):
    """A real SIGINT to a real train.py process: "interrupted", exit 130, no traceback."""
    data = make_mnist(tmp_path / "data", n_train=256, n_test=32)
    command = [sys.executable, str(REPO_ROOT / "train.py"), *train_argv(data, tmp_path / "m.pth", "--epochs", "1000")]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if line.startswith("epoch   2/"):
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted: epoch" in err and "Traceback" not in err, err
    assert load_checkpoint(tmp_path / "m.last.pth")["meta"]["epoch"] >= 2

