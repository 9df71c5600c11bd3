"""Shared fixtures: the devices a test runs on, and where the real MNIST lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MNIST_DIR_ENV = "SNN_MNIST_DIR"  # the same variable the benchmarks read


def mnist_root() -> Path:
    """Where the real MNIST is looked for: ``$SNN_MNIST_DIR``, else ``../shared/data`` beside the repo."""
    return Path(os.environ.get(MNIST_DIR_ENV) or SHARED_DATA)


def missing_mnist_reason(root: Path) -> str:
    return (f"real MNIST not found at {root}/MNIST/raw; set {MNIST_DIR_ENV}=/path/to/root, the folder that holds "
            "MNIST/raw with the four IDX files (e.g. after 'python train.py' downloaded them: SNN_MNIST_DIR=data)")


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
    """The real MNIST in torchvision's layout (``$SNN_MNIST_DIR`` or ``../shared/data``), or skip."""
    root = mnist_root()
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(missing_mnist_reason(root))
    return root


FASHION_MNIST_DIR_ENV = "SNN_FASHION_MNIST_DIR"  # like SNN_MNIST_DIR: the folder that holds FashionMNIST/raw


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """The real Fashion-MNIST (``$SNN_FASHION_MNIST_DIR`` or ``../shared/data``, holding FashionMNIST/raw), or skip."""
    root = Path(os.environ.get(FASHION_MNIST_DIR_ENV) or SHARED_DATA)
    raw = root / "FashionMNIST" / "raw"
    if not any((raw / name).exists() for name in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz")):
        pytest.skip(f"real Fashion-MNIST not found at {raw}; set {FASHION_MNIST_DIR_ENV}=/path/to/root, the folder "
                    "that holds FashionMNIST/raw with the four IDX files (raw or .gz)")
    return root


@pytest.fixture
def tiny_mnist(tmp_path) -> Path:
    """A tiny random MNIST (64 train / 32 test images, tests/cli_helpers.py) in tmp_path/data."""
    from cli_helpers import make_mnist

    return make_mnist(tmp_path / "data")


# ---------------------------------------------------------------------------- the LIF kernels' test aids (tests/lif_helpers.py)


def pytest_configure(config):
    config.addinivalue_line("markers", "small_tiles(neurons): the tile size the small_tiles fixture shrinks the "
                                       "Triton kernel's tiles to (tests/lif_helpers.py)")


@pytest.fixture
def small_tiles(request, monkeypatch) -> int:
    """The Triton kernel's tiles shrunk to the ``small_tiles(neurons)`` marker's size (on the test or
    its module; each module picks the size its shapes cross), outputs poisoned with NaN."""
    from lif_helpers import shrink_triton_tiles

    marker = request.node.get_closest_marker("small_tiles")
    if marker is None:
        pytest.fail("the small_tiles fixture needs a @pytest.mark.small_tiles(neurons) on the test or its module")
    shrink_triton_tiles(monkeypatch, marker.args[0])
    return marker.args[0]


@pytest.fixture
def poisoned_outputs(monkeypatch) -> None:
    """The Triton launchers fill their output buffers with NaN before launch."""
    from lif_helpers import poison_triton_outputs

    poison_triton_outputs(monkeypatch)
