"""The command-line programs (``train.py`` and ``infer.py`` at the repository root are thin scripts
around them; ``pip install`` makes them the ``snn-train`` and ``snn-infer`` commands)."""

from __future__ import annotations

import signal
import sys
from typing import Callable, NoReturn


def run_script(main: Callable[[], int]) -> NoReturn:
    """``sys.exit(main())``, with a Ctrl-C outside ``run_cli`` (parsing, shutting down) as "interrupted", 130."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on run_cli reports Ctrl-C
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        sys.exit(130)


MAX_SEED = (1 << 63) - 1  # torch.manual_seed takes 64-bit seeds


def bounded(kind: type, low, high) -> Callable[[str], object]:
    """An argparse ``type`` that reads a ``kind`` (int or float) from ``low`` to ``high`` inclusive,
    so a value outside the range is a usage error, never an overflow or a huge allocation later."""
    import argparse
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or (kind is float and not math.isfinite(value)) or not low <= value <= high:
            noun, span = ("a whole number", f"{low} to {high}") if kind is int else ("a number", f"{low:g} to {high:g}")
            raise argparse.ArgumentTypeError(f"must be {noun} from {span}, not {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
