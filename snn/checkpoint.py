"""Checkpoints: the format, atomic saves and safe loads (``weights_only=True``) of what train.py writes.

A checkpoint is a plain dict of tensors and primitives::

    {"format": "snn-lif-mnist-mlp", "format_version": 1, "model": "csnn" (absent: the MLP),
     "model_state": {...}, "config": MLPConfig or CSNNConfig as a flat dict,
     "meta": {"epoch", "accuracy", "dataset", "backend", "versions", ...},
     "train_state": {... optimizer, scheduler and RNG state, for --resume; optional}}

It never contains pickled objects, so ``torch.load(weights_only=True)`` reads it and refuses any
file that would run code when unpickled. A file that parses is still checked before use
(:mod:`snn.config_checks`, through :func:`model_from_checkpoint`). Saving goes through
:func:`snn.safe_files.atomic_write`.
"""

from __future__ import annotations

import pickle
import platform
import zipfile
from pathlib import Path

import torch

from snn.config_checks import MODEL_NAMES, MODELS, model_kind, validate_config, validate_weights
from snn.csnn import SpikingCSNN
from snn.errors import UserError
from snn.model import SpikingMLP
from snn.safe_files import atomic_write

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
    """Write ``payload`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda handle: torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, handle),
                 what="checkpoint")


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
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, TypeError, KeyError,
            IndexError, AttributeError, MemoryError) as exc:
        raise UserError(f"checkpoint {path} is not a readable PyTorch checkpoint ({type(exc).__name__}).") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a {FORMAT} checkpoint written by this project's train.py.")
    if checkpoint.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {checkpoint.get('format_version')}; "
            f"this version of the project reads version {FORMAT_VERSION}."
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict, backend: str, path: str | Path = "checkpoint") -> SpikingMLP | SpikingCSNN:
    """Build the model described by ``checkpoint`` with any backend and load its (validated) weights."""
    kind = model_kind(checkpoint, path)
    config = validate_config(checkpoint.get("config"), path, kind)
    state = checkpoint.get("model_state")
    validate_weights(state, config, path)
    model = MODELS[kind][2](config, backend=backend)
    try:
        model.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"checkpoint {path} does not match the {MODEL_NAMES[kind]} architecture "
                        f"({exc}).".replace("\n", " ")) from exc
    return model
