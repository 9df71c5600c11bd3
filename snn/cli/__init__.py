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
