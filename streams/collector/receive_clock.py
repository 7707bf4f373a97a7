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
from dataclasses import dataclass, field


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
        self._issued: int | None = None  # the newest stamp handed out
        self._open: Counter[int] = Counter()

    def open(self) -> int:
        """A new ``received_at``, held open (floors stay at or below it) until :meth:`close`."""
        with self._lock:
            self._last = max(self._wall_ms(), self._last)
            self._open[self._last] += 1
            self._issued = self._last
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
    def stamped(self) -> Iterator[Stamp]:
        """:meth:`open` until :meth:`Stamp.close` or the end of a ``with`` block.

        Example:
            >>> clock = ReceiveClock(iter([100, 101, 102]).__next__)
            >>> with clock.stamped() as stamp:
            ...     stamp.at, clock.floor()        # open: the floor stays at the stamp
            ...     stamp.close()                  # the records are queued
            ...     clock.floor()                  # the floor moves before the block ends
            (100, 100)
            101
        """
        stamp = Stamp(self, self.open())
        try:
            yield stamp
        finally:
            stamp.close()

    def floor(self) -> int:
        """A bound every record written from now on keeps (``>=``): what a heartbeat carries."""
        with self._lock:
            if self._open:
                return min(self._open)
            self._last = max(self._wall_ms(), self._last)
            return self._last

    def promised_past(self, floor: int, lateness_ms: int) -> bool:
        """Whether a heartbeat that carried ``floor`` released every stamp handed out so far.

        True when no stamp is open and ``floor`` passed the newest by more than the allowed
        lateness (a record is ripe once ``key + D < L``, ``processors/ordering.py``), or no
        stamp was ever handed out: later heartbeats would promise nothing anyone waits for.

        Example:
            >>> wall = iter([100, 100, 101, 160]).__next__
            >>> clock = ReceiveClock(wall)
            >>> clock.promised_past(0, 0)             # nothing stamped yet
            True
            >>> with clock.stamped() as stamp:
            ...     clock.promised_past(200, 0)       # a request still open
            False
            >>> clock.promised_past(clock.floor(), 0)  # the wall has not moved past it
            False
            >>> clock.promised_past(clock.floor(), 0), clock.promised_past(160, 60)
            (True, False)
        """
        with self._lock:
            return not self._open and (self._issued is None or floor > self._issued + lateness_ms)


@dataclass
class Stamp:
    """One request's ``received_at`` (:attr:`at`), open on its clock until :meth:`close`."""

    clock: ReceiveClock
    at: int
    closed: bool = field(default=False, init=False)

    def close(self) -> None:
        """The request's records are queued (or never will be); a second call does nothing."""
        if not self.closed:
            self.closed = True
            self.clock.close(self.at)
