"""benchmarks.common.interleaved times at the caller's thread count (torch.utils.benchmark.Timer's default is one)."""

from __future__ import annotations

import torch

from benchmarks.common import interleaved


def test_interleaved_runs_every_call_at_the_callers_thread_count():
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        interleaved({"a": lambda: seen.append(torch.get_num_threads()), "b": lambda: None}, reps=2)
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {2}, seen
