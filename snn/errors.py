"""The one exception type the command-line scripts turn into a single sentence and exit code 2."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable


class UserError(Exception):
    """A problem the user can fix (bad path, foreign checkpoint, unsupported option).

    Its message is one sentence naming what was wrong and what is supported; ``train.py`` and
    ``infer.py`` print it without a traceback and exit with status 2.
    """


def say(line: str) -> None:
    """Write ``line`` and its newline to stderr in one write: under torchrun every rank shares the
    terminal, and two ranks' ``print`` (text, then newline) interleave into one garbled line."""
    text = line + "\n"
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured or replaced stderr (no descriptor)
        sys.stderr.write(text)
        return
    sys.stderr.flush()
    os.write(fd, text.encode(sys.stderr.encoding or "utf-8", "backslashreplace"))


def _report_interrupt(message: str | Callable[[], str]) -> None:
    """Print the interrupted message; a second Ctrl-C meanwhile must not turn into a traceback."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        say(f"\n{message() if callable(message) else message}")
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def run_cli(run, args, interrupted: str | Callable[[], str] = "interrupted.") -> int:
    """``run(args)``, with a :class:`UserError` printed as ``error: ...`` (exit 2, no traceback)
    and Ctrl-C printed as ``interrupted`` (exit 130). ``interrupted`` may be a function, called
    only then, so the message can say what the run had saved by that moment."""
    try:
        return run(args)
    except UserError as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        _report_interrupt(interrupted)
        return 130
    except MemoryError:
        say("error: out of memory; use a smaller --batch-size or fewer images at once.")
        return 2
    except BrokenPipeError:  # stdout closed early (e.g. `python infer.py ... | head -1`): nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
