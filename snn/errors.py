"""The one exception type the command-line scripts turn into a single sentence and exit code 2."""

import sys


class UserError(Exception):
    """A problem the user can fix (bad path, foreign checkpoint, unsupported option).

    Its message is one sentence naming what was wrong and what is supported; ``train.py`` and
    ``infer.py`` print it without a traceback and exit with status 2.
    """


def run_cli(run, args, interrupted: str = "interrupted.") -> int:
    """``run(args)``, with a :class:`UserError` printed as ``error: ...`` (exit 2, no traceback)
    and Ctrl-C printed as ``interrupted`` (exit 130)."""
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
