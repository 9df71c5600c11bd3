"""train.py and the files it owns: a new run never replaces an earlier run's model, two runs never
interleave (the run lock), output locations are checked before training, and a full disk while
saving keeps the previous checkpoint.

Every fault ends in one ``error: ...`` sentence on stderr and exit status 2, with every file saved
before it intact. The runs use the tiny random MNIST of tests/cli_helpers.py.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import snn.checkpoint as checkpoint_module
import snn.safe_files as safe_files_module
from cli_helpers import assert_one_error, no_training, run_train, snapshot, train_argv
from snn.checkpoint import load_checkpoint
from snn.safe_files import RunLock
from snn.cli import train
from snn.errors import UserError

# ---------------------------------------------------------------------------- the newcomer's data loss


def test_new_run_never_replaces_an_earlier_runs_checkpoint(tiny_mnist, tmp_path, capsys):
    checkpoint = tmp_path / "ck" / "m.pth"
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint))
    assert code == 0, err
    before = snapshot(checkpoint.parent)
    assert {"m.pth", "m.last.pth", "m.metrics.jsonl"} <= set(before) and "m.lock" not in before

    # the README's smoke command pasted after a real run: refused, nothing touched
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--train-samples", "32", "--epochs", "1"))
    assert_one_error(code, err, "already holds a model from an earlier run")
    assert "--resume" in err and "--overwrite" in err and "--checkpoint" in err
    assert snapshot(checkpoint.parent) == before, "a refused run must not change any file"

    # only .last.pth left (the best deleted by hand): still an earlier run's model
    best = checkpoint.read_bytes()
    checkpoint.unlink()
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint))
    assert_one_error(code, err, "m.last.pth already holds a model")
    checkpoint.write_bytes(best)

    # --overwrite is the explicit way to start over
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--overwrite", "--seed", "1"))
    assert code == 0, err
    assert load_checkpoint(checkpoint.with_name("m.last.pth"))["train_state"]["args"]["seed"] == 1


def test_resume_and_overwrite_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--resume", "--overwrite"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_two_runs_on_one_checkpoint_cannot_interleave(tiny_mnist, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "m.pth"
    no_training(monkeypatch)
    with RunLock(tmp_path / "m.lock"):  # another run holds the lock
        code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint))
    assert_one_error(code, err, "another training run is writing this checkpoint")
    assert not checkpoint.exists()


def test_lock_of_a_killed_run_does_not_block_the_next(tiny_mnist, tmp_path, capsys):
    lock = tmp_path / "m.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="another training run"):
            RunLock(lock).__enter__()
    finally:
        holder.kill()  # like SIGKILL of a training run: the lock file stays, the lock goes
        holder.wait()
    assert lock.exists()
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, tmp_path / "m.pth", "--epochs", "1"))
    assert code == 0, err
    assert not lock.exists(), "a finished run removes its lock file"


# ---------------------------------------------------------------------------- output locations


def test_output_locations_are_checked_before_training(tiny_mnist, tmp_path, capsys, monkeypatch):
    no_training(monkeypatch)
    monkeypatch.setattr(train, "load_mnist", lambda *a, **k: pytest.fail("data loaded before the paths were checked"))
    folder = tmp_path / "is_a_dir.pth"
    folder.mkdir()
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, folder))
    assert_one_error(code, err, "is a folder")

    a_file = tmp_path / "plain_file"
    a_file.write_text("x")
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, a_file / "sub" / "m.pth"))
    assert_one_error(code, err, f"{a_file} is a file, not a folder")

    code, out, err = run_train(capsys, *train_argv(tiny_mnist, tmp_path / "m.last.pth"))
    assert_one_error(code, err, "--checkpoint")


def test_read_only_checkpoint_folder_is_refused_up_front(tiny_mnist, tmp_path, capsys, monkeypatch):
    no_training(monkeypatch)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the folder refuse new files as a read-only mount would
        real_mkstemp = safe_files_module.tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == read_only:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(safe_files_module.tempfile, "mkstemp", refuse)
    else:
        read_only.chmod(0o555)
    try:
        code, out, err = run_train(capsys, *train_argv(tiny_mnist, read_only / "m.pth"))
    finally:
        read_only.chmod(0o755)
    assert_one_error(code, err, "Permission denied")
    assert list(read_only.iterdir()) == []


# ---------------------------------------------------------------------------- disk full


def enospc_on_call(monkeypatch, n: int):
    """torch.save (as the checkpoint module calls it) fails with a full disk from its n-th call on,
    after writing part of the file."""
    real_save = checkpoint_module.torch.save
    calls = []

    def save(obj, handle):
        calls.append(1)
        if len(calls) >= n:
            handle.write(b"partial data")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tiny_mnist, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "m.pth"
    enospc_on_call(monkeypatch, 3)  # epoch 1 saves best + last; the third save (epoch 2) fails
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--lr", "1e-2"))
    assert_one_error(code, err, "the disk is full")
    assert "is unchanged" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m.last.pth", "m.metrics.jsonl", "m.pth"], \
        "the temp file is removed, the lock released"
    assert load_checkpoint(checkpoint)["meta"]["epoch"] == 1
    assert load_checkpoint(tmp_path / "m.last.pth")["meta"]["epoch"] == 1
    monkeypatch.undo()
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--lr", "1e-2", "--resume"))
    assert code == 0 and "resuming after epoch 1" in out, err

