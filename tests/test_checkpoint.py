"""Checkpoints: round trip, atomic writes, and refusal of missing, corrupt, foreign or malicious files."""

import os
import pickle

import pytest
import torch

import snn.checkpoint as checkpoint_module
from snn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
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
