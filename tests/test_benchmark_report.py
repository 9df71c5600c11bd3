"""The benchmark suite's ``--bench-report``: it rewrites the generated tables and keeps the hand-written records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.conftest import HAND_WRITTEN

ROOT = Path(__file__).resolve().parents[1]


def test_bench_report_replaces_the_tables_and_keeps_what_follows_the_marker(tmp_path):
    report = tmp_path / "RESULTS.md"
    hand = f"{HAND_WRITTEN}\n\n## Issue 99: a hand-written record\n\nmeasured by hand, kept\n"
    report.write_text("# SNN benchmark results\n\n| stale | table |\n\n" + hand)
    # the smallest real run: the copy bandwidth, a few quick rounds, in a fresh process as a user runs it
    proc = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_lif.py::test_copy_bandwidth", "-q",
                           "-p", "no:cacheprovider", "--benchmark-max-time=0.05", "--benchmark-min-rounds=1",
                           f"--bench-report={report}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = report.read_text()
    assert "| stale | table |" not in text
    assert "**Copy bandwidth**" in text and text.index("**Copy bandwidth**") < text.index(HAND_WRITTEN)
    assert text.endswith(hand), "the hand-written part must survive unchanged"
    assert text.count(HAND_WRITTEN) == 1
