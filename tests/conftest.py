"""Shared fixtures: the devices a test runs on, and where the real MNIST lives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _devices():
    yield pytest.param("cpu", id="cpu")
    yield pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
        ],
    )


@pytest.fixture(params=list(_devices()))
def device(request) -> str:
    """Run the test on the CPU (Triton interpreter) and, where present, on CUDA."""
    return request.param


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST in torchvision's layout beside the repo (``../shared/data``), or skip."""
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found at {SHARED_DATA}/MNIST/raw")
    return SHARED_DATA
