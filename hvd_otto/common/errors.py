"""The two errors a user sees: bad input (exit 2) and training that failed (exit 1)."""


class InputError(Exception):
    """Bad user input (a file, a column, an option). The message says what, where and what to do.

    The CLI prints the message alone, without a traceback, and exits with code 2.
    """


class TrainingError(RuntimeError):
    """Horovod training failed on every attempt; the message carries the ranks' errors."""
