"""The --device flag shared by train.py and infer.py."""

from __future__ import annotations

import torch

from snn.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is a :class:`UserError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but CUDA is not available; use --device cpu or auto.")
    return torch.device(name)
