"""Benchmark suite: the LIF contenders side by side, the MLP training step, and the GPU check.

Run with ``pytest benchmarks`` (see ``benchmarks/README.md``). A package, so that pytest puts the
repository root on ``sys.path`` and ``python -m benchmarks.report`` works from there.
"""
