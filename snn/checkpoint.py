"""Checkpoint I/O: atomic writes, safe loads (``weights_only=True``), and a format check.

A checkpoint is a plain dict of tensors and primitives::

    {"format": "snn-lif-mnist-mlp", "format_version": 1,
     "model_state": {...}, "config": MLPConfig as dict,
     "meta": {"epoch", "accuracy", "dataset", "backend", "versions", ...},
     "train_state": {... optimizer, scheduler and RNG state, for --resume; optional}}

It never contains pickled objects, so ``torch.load(weights_only=True)`` reads it and refuses any
file that would run code when unpickled.
"""

from __future__ import annotations

import os
import pickle
import platform
import tempfile
import zipfile
from pathlib import Path

import torch

from snn.errors import UserError
from snn.model import MLPConfig, SpikingMLP

FORMAT = "snn-lif-mnist-mlp"
FORMAT_VERSION = 1


def versions() -> dict:
    """Library versions recorded in every checkpoint."""
    info = {"python": platform.python_version(), "torch": str(torch.__version__)}  # TorchVersion is not weights-only safe
    try:
        import triton

        info["triton"] = str(triton.__version__)
    except ImportError:
        info["triton"] = None
    return info


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    An interrupted save (Ctrl-C, full disk) leaves the previous file at ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint of this project, refusing missing, corrupt, foreign or unsafe files."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; train one with 'python train.py' or pass --checkpoint PATH.")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # garbage bytes, not a refused class or function
            raise UserError(f"checkpoint {path} is not a readable PyTorch checkpoint (corrupt pickle data).") from exc
        raise UserError(
            f"checkpoint {path} was refused: it holds objects that would run code when loaded "
            "(only weights-only checkpoints written by train.py are accepted)."
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise UserError(f"checkpoint {path} is not a readable PyTorch checkpoint ({type(exc).__name__}).") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a {FORMAT} checkpoint written by this project's train.py.")
    if checkpoint.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {checkpoint.get('format_version')}; "
            f"this version of the project reads version {FORMAT_VERSION}."
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict, backend: str, path: str | Path = "checkpoint") -> SpikingMLP:
    """Build the model described by ``checkpoint`` with any backend and load its weights."""
    try:
        config = MLPConfig.from_dict(checkpoint["config"])
        model = SpikingMLP(config, backend=backend)
        model.load_state_dict(checkpoint["model_state"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"checkpoint {path} does not match the spiking MLP architecture ({exc}).".replace("\n", " ")) from exc
    return model
