"""The collector's ``received_at`` clock and the floor its heartbeats carry.

``received_at`` (R) orders the pipeline's records (docs/architecture.md, "Event-time
order"): one request gets one R, and a later request of the same process never gets a
smaller one, even when the wall clock steps back. The collector's heartbeats tell the
worker "nothing this process writes from now on has a ``received_at`` below F"; a request
stamped before a heartbeat but queued after it would break that, so a stamp stays *open*
until its records are queued on the producer, and the floor never passes an open stamp.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class ReceiveClock:
    """Non-decreasing UTC ms stamps from a wall clock, and a floor for heartbeats.

    Example:
        >>> wall = iter([100, 120, 90, 150]).__next__
        >>> clock = ReceiveClock(wall)
        >>> a = clock.open(); b = clock.open()    # two requests in flight: 100 and 120
        >>> clock.floor()                         # not past a request not yet queued
        100
        >>> clock.close(a); clock.close(b)
        >>> clock.floor(), clock.open()           # the wall steps back to 90: stamps do not
        (120, 150)
    """

    def __init__(
        self, wall_ms: Callable[[], int], on_close: Callable[[], None] | None = None
    ) -> None:
        self._wall_ms = wall_ms
        self.on_close = on_close  # e.g. the producer's heartbeat kick
        self._lock = threading.Lock()
        self._last = 0  # no stamp from now on is below this
        self._open: Counter[int] = Counter()

    def open(self) -> int:
        """A new ``received_at``, held open (floors stay at or below it) until :meth:`close`."""
        with self._lock:
            self._last = max(self._wall_ms(), self._last)
            self._open[self._last] += 1
            return self._last

    def close(self, stamp: int) -> None:
        """The records stamped ``stamp`` are queued (or will never be): release the floor."""
        with self._lock:
            self._open[stamp] -= 1
            if self._open[stamp] <= 0:
                del self._open[stamp]
        if self.on_close is not None:
            self.on_close()

    @contextmanager
    def stamped(self) -> Iterator[int]:
        """:meth:`open` for the duration of a ``with`` block."""
        stamp = self.open()
        try:
            yield stamp
        finally:
            self.close(stamp)

    def floor(self) -> int:
        """A bound every record written from now on keeps (``>=``): what a heartbeat carries."""
        with self._lock:
            if self._open:
                return min(self._open)
            self._last = max(self._wall_ms(), self._last)
            return self._last
