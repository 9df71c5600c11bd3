"""Saved activations per sample and peak RSS of a training step: ours (plain, low) vs SpikingJelly (BPTT, memopt).

    python -m pytest benchmarks/test_memory.py -q -s          # the saved-bytes rows, printed
    python -m benchmarks.memory_accounting saved              # the whole saved-bytes table
    python -m benchmarks.memory_accounting budget             # largest batch in a 4 GB budget (minutes)

The accounting (``saved_tensors_hooks``, storages counted once, weights apart, inputs left out) and
the fresh-process peak-RSS probe live in :mod:`benchmarks.memory_accounting`; the figures of
benchmarks/RESULTS.md ("Memory: spikes as bits, recomputed blocks") come from these commands.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.memory_accounting import measure_saved

KIB = 1024


def test_mlp_plain_saves_28_kib_per_sample():
    """The MLP's plain path at B=256 fp32: 2 (stride-0 current) + 12 (fc2's float spikes) + 12 (lif2's
    input) + 2 (fc3's mean spikes) KiB per sample, the figure the issue starts from."""
    saved, _ = measure_saved("mlp-plain", 256)
    print(f"\nMLP plain: {saved['per_sample'] / KIB:.2f} KiB/sample")
    assert saved["per_sample"] == 28.0 * KIB


@pytest.mark.slow
@pytest.mark.parametrize("time_steps", [4, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_csnn_saved_bytes_against_spikingjelly(time_steps, dtype):
    pytest.importorskip("spikingjelly")
    rows = {name: measure_saved(name, 8, 128, time_steps, dtype) for name in ("sj-plain", "sj-memopt", "csnn-plain")}
    for name, (saved, search) in rows.items():
        print(f"\nCSNN T={time_steps} {dtype}: {name} {saved['per_sample'] / 2**20:.3f} MiB/sample (search {search:.1f} s)")
    assert rows["csnn-plain"][0]["per_sample"] < rows["sj-plain"][0]["per_sample"]
