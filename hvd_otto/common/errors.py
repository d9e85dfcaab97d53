"""The errors a user sees: bad input (exit 2), training that failed (exit 1), and a job
stopped by SIGINT or SIGTERM (exit 130 or 143)."""

from __future__ import annotations

import signal


class InputError(Exception):
    """Bad user input (a file, a column, an option). The message says what, where and what to do.

    The CLI prints the message alone, without a traceback, and exits with code 2.
    """


class TrainingError(RuntimeError):
    """Horovod training failed on every attempt; the message carries the ranks' errors."""


class Interrupted(KeyboardInterrupt):
    """The driver received SIGINT or SIGTERM: the job was stopped, and nothing is retried.

    ``run`` is the run folder whose checkpoints a ``resume`` continues (``None`` when the fit
    had no storePath, or no epoch was committed).
    """

    def __init__(self, signum: int, run: str | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run = run

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


def error_summary(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when empty), for a one-line error."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]
