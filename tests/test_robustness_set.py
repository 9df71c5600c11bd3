"""benchmarks/robustness_set.py: the generated robustness set is deterministic and MNIST-shaped."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import robustness_set  # noqa: E402

from snn.data import read_idx  # noqa: E402
from snn.preprocess import preprocess_pil  # noqa: E402


def test_distortions_are_deterministic_and_preprocess_to_digits(mnist_dir):
    raw = mnist_dir / "MNIST" / "raw"
    digits = read_idx(raw / "t10k-images-idx3-ubyte", 3)[:5].numpy()
    labels = read_idx(raw / "t10k-labels-idx1-ubyte", 1)[:5].numpy()
    first = robustness_set.mnist_distortions(digits, labels)
    second = robustness_set.mnist_distortions(digits, labels)
    assert set(first) == {"thick", "thin", "blur", "lowres", "paper"}
    for name in first:
        for (a, label_a), (b, label_b) in zip(first[name], second[name]):
            assert label_a == label_b and np.array_equal(np.asarray(a), np.asarray(b)), name
            out = preprocess_pil(a, name=name)
            assert out.shape == (28, 28) and out.dtype == torch.uint8 and int(out.max()) == 255


def test_fonts_render_every_digit_or_are_skipped_with_a_note(capsys):
    fonts = robustness_set.find_fonts()[:1]
    if not fonts:
        assert "no TrueType fonts" in capsys.readouterr().err
        pytest.skip("no fonts installed (apt-get install fonts-dejavu)")
    rendered = list(robustness_set.font_digits(fonts))
    assert sorted({label for _, label in rendered}) == list(range(10))
    assert len(rendered) == 10 * len(robustness_set.SIZES) * len(robustness_set.SLANTS)
