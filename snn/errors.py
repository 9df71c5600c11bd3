"""The one exception type the command-line scripts turn into a single sentence and exit code 2."""


class UserError(Exception):
    """A problem the user can fix (bad path, foreign checkpoint, unsupported option).

    Its message is one sentence naming what was wrong and what is supported; ``train.py`` and
    ``infer.py`` print it without a traceback and exit with status 2.
    """
