"""Checkpoints: round trip, atomic writes (also under Ctrl-C and I/O errors), and refusal of missing,
corrupt, foreign or malicious files, and of checkpoints that parse but hold a bad config or bad weights."""

import errno
import json
import math
import os
import pickle
import re
import signal
import time

import pytest
import torch

import snn.checkpoint as checkpoint_module
import snn.safe_files as safe_files_module
from cli_helpers import assert_one_error, draw_one, model_payload, run_infer
from snn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from snn.config_checks import CONFIG_RULES, config_rule
from snn.safe_files import append_line, deferred_interrupt
from snn.errors import UserError
from snn.model import MLPConfig, SpikingMLP


def payload(model, epoch=1):
    return {"model_state": model.state_dict(), "config": model.config.to_dict(),
            "meta": {"epoch": epoch, "accuracy": 0.5, "dataset": "test", "backend": "torch"}}


def test_round_trip_restores_weights_and_metadata(tmp_path):
    model = SpikingMLP(MLPConfig(time_steps=4, tau=0.25))
    path = tmp_path / "sub" / "m.pth"
    save_checkpoint(path, payload(model))
    checkpoint = load_checkpoint(path)
    assert checkpoint["meta"]["epoch"] == 1 and checkpoint["config"]["time_steps"] == 4
    restored = model_from_checkpoint(checkpoint, backend="torch")
    assert restored.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert list(tmp_path.joinpath("sub").iterdir()) == [path], "no temp files left behind"


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.pth"
    save_checkpoint(path, payload(SpikingMLP(), epoch=1))
    before = path.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, payload(SpikingMLP(), epoch=2))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pth"]


def test_missing_and_directory(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(UserError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_foreign_checkpoint(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(UserError, match="not a snn-lif-mnist-mlp checkpoint"):
        load_checkpoint(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(UserError, match="not a snn-lif-mnist-mlp checkpoint"):
        load_checkpoint(path)


def test_wrong_architecture(tmp_path):
    path = tmp_path / "m.pth"
    model = SpikingMLP()
    bad = payload(model)
    bad["model_state"] = {k: v for k, v in bad["model_state"].items() if not k.startswith("fc3")}
    save_checkpoint(path, bad)
    with pytest.raises(UserError, match="does not match the spiking MLP architecture"):
        model_from_checkpoint(load_checkpoint(path), backend="torch", path=path)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create a file if ever unpickled


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note about the hand-made pickle
def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"format": "snn-lif-mnist-mlp", "format_version": 1, "x": RunsCode(str(marker))}, path)
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(RunsCode(str(marker))))  # plain pickle, not even a zip
    with pytest.raises(UserError):
        load_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------- Ctrl-C and I/O errors while writing


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

    monkeypatch.setattr(checkpoint_module.torch, "save", two_ctrl_c)
    with pytest.raises(KeyboardInterrupt), deferred_interrupt():
        save_checkpoint(path, model_payload(SpikingMLP()))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.pth"]


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

