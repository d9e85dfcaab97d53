"""Driver-side threads beside a Horovod run: the watchdog that ends hangs, and epoch progress.

Both read only the run folder (shared storage), so they work wherever the ranks' stdout goes
(executor logs on a cluster). Their decisions are plain functions of the folder's state and a
clock, unit-tested without a run.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..common.run_folder import RunFolder

log = logging.getLogger(__name__)


def hang_reason(joined: list[str], num_proc: int, now: float, first_alive: float | None,
                first_error: float | None, start_timeout: float, grace: float) -> str | None:
    """Why a run must be cancelled now, or ``None``.

    ``first_alive``: when the first rank started (``None``: none yet); ``first_error``: when a
    rank first wrote an error. A run is hung when ranks started but not all joined the ring
    within ``start_timeout``, or when a rank failed and the others are still blocked ``grace``
    seconds later.
    """
    if first_alive is not None and len(joined) < num_proc and now - first_alive > start_timeout:
        missing = sorted(set(map(str, range(num_proc))) - set(joined))
        return (f"rank(s) {', '.join(missing)} did not join the Horovod ring within "
                f"startTimeout={start_timeout:g} s (joined: {joined or 'none'}); a "
                "rank is stuck before hvd.init or its executor is unreachable")
    if first_error is not None and now - first_error > grace:
        return (f"a rank failed and the others were still blocked {grace:g} s later; "
                "the run was cancelled")
    return None


class RunWatchdog:
    """End a Horovod run that would otherwise hang, by calling ``cancel`` (the launcher's).

    ``reason`` says why, for the error. ``clock`` is injectable for tests; :meth:`step` is one
    look at the run folder and is what the background thread repeats every ``interval`` s.
    """

    def __init__(self, run: RunFolder, num_proc: int, start_timeout: float,
                 cancel: Callable[[], None], grace: float = 30.0, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.run, self.num_proc, self.start_timeout = run, num_proc, start_timeout
        self.cancel, self.grace, self.interval, self.clock = cancel, grace, interval, clock
        self.reason: str | None = None
        self.first_alive: float | None = None
        self.first_error: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="hvd-otto-watchdog")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def step(self) -> bool:
        """Look at the run once; cancel it and return True when it is hung."""
        now = self.clock()
        if self.first_alive is None and self.run.ranks_in_state("alive"):
            self.first_alive = now
        if self.first_error is None and self.run.has_errors():
            self.first_error = now
        reason = hang_reason(self.run.ranks_in_state("joined"), self.num_proc, now,
                             self.first_alive, self.first_error, self.start_timeout, self.grace)
        if reason:
            self.reason = reason
            log.warning("cancelling the Horovod run: %s", reason)
            self.cancel()
        return reason is not None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.step():
                return


def format_epoch(entry: dict, epochs: int) -> str:
    """One progress line for an epoch of the history."""
    metrics = "  ".join(f"{k}={entry[k]:.4f}" for k in
                        ("loss", "accuracy", "val_loss", "val_accuracy") if k in entry)
    return (f"epoch {entry['epoch']}/{epochs}  {metrics}  {entry['seconds']:.1f}s  "
            f"{entry['samples_per_second']:,.0f} samples/s{'  *best' if entry.get('best') else ''}")


class ProgressWatcher:
    """Print rank 0's epochs on the driver as they land in the run's ``history.json``."""

    def __init__(self, run: RunFolder, enabled: bool = True, interval: float = 1.0,
                 emit: Callable[[str], None] = lambda line: print(line, flush=True)):
        self.run, self.enabled, self.interval, self.emit = run, enabled, interval, emit
        self.shown = len(run.read_history().get("history", []))  # a resumed run's were shown
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="hvd-otto-progress")

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.poll()
        return False

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """Emit the epochs committed since the last poll."""
        state = self.run.read_history()
        if not state:
            return
        for entry in state["history"][self.shown:]:
            self.emit(format_epoch(entry, state["epochs"]))
        self.shown = max(self.shown, len(state["history"]))
