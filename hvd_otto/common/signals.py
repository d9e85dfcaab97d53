"""SIGINT and SIGTERM stop a job instead of killing it half-way or being taken for a failure.

While a :class:`StopSignals` block runs in the main thread, either signal calls its stop hook
(cancel the Spark jobs, stop the ranks) once and raises :class:`Interrupted` there, so
``finally`` blocks remove temporary files and the caller decides what to say. The previous
handlers come back when the block ends. In another thread the block does nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

from .errors import Interrupted

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: SIGINT/SIGTERM run ``on_stop`` once, then raise :class:`Interrupted`."""

    def __init__(self, on_stop: Callable[[], None] | None = None):
        self.on_stop = on_stop
        self.received: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.received is not None

    def _handle(self, signum: int, frame) -> None:
        first = self.received is None
        if first:
            self.received = signum
            if self.on_stop:
                try:
                    self.on_stop()
                except Exception as err:  # noqa: BLE001 - stopping goes on regardless
                    log.warning("while stopping after %s: %s", signal.Signals(signum).name, err)
        raise Interrupted(self.received)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
