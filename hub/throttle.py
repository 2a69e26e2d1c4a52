"""Log lines about events that a sender can cause at will (refused messages, dropped QoS 0
messages), throttled: a flood of them must not fill the disk with one line each."""

from __future__ import annotations

import threading
import time
from typing import Callable


class Tally:
    """Events of one kind, counted; at most ``lines`` of them are logged in any window of
    ``seconds`` (a window starts at the first line logged after the last one ended). The line that
    is due says how many events there were since the line before, so none goes unaccounted.
    Thread-safe: callers on several threads share one tally."""

    def __init__(self, seconds: float, lines: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.lines, self._clock = seconds, lines, clock
        self.count = 0  # every event counted, logged or not
        self._logged = 0  # ``count`` at the last line
        self._window_at = float("-inf")
        self._in_window = 0  # lines logged in the current window
        self._lock = threading.Lock()

    def add(self) -> int:
        """Counts one event; if a line is due now, how many events it covers (this one and those
        not logged since the last line: at least 1), else 0."""
        with self._lock:
            self.count += 1
            now = self._clock()
            if now - self._window_at >= self.seconds:
                self._window_at, self._in_window = now, 0
            if self._in_window >= self.lines:
                return 0
            self._in_window += 1
            since, self._logged = self.count - self._logged, self.count
            return since
