"""Notice an input partition that holds lag but does not move, and say what to do about it.

The worker's engine positions come only from committed offsets, so a partition that stops
moving is not expected; the watch is a safety net (docs/architecture.md, "The stall watch"):
first re-seek the partition to its committed offset, and if that does not move it either,
exit so the supervisor starts a fresh process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


def owed(end: int, committed: int, *, markers: bool) -> int:
    """Records of one partition past its committed offset.

    Under exactly_once a partition ends with a transaction marker that no consumer ever
    commits past: with ``markers=True`` a lag of one record counts as none.

    Example:
        >>> owed(10, 7, markers=False), owed(10, 9, markers=True), owed(10, 7, markers=True)
        (3, 0, 3)
    """
    behind = end - committed
    return 0 if behind <= (1 if markers else 0) else behind


class Verdict(Enum):
    """What the worker should do after one observation."""

    OK = "ok"
    RESEEK = "reseek"
    EXIT = "exit"


@dataclass
class StallWatch:
    """Progress of one worker: lag on its inputs and how many records it has processed.

    A stall is lag above zero with no record processed for ``after`` seconds. The first
    stall asks for a re-seek; a second one in a row asks the worker to exit.

    Example:
        >>> watch = StallWatch(after=30.0)
        >>> watch.observe(0.0, lag=5, processed=10)
        <Verdict.OK: 'ok'>
        >>> watch.observe(31.0, lag=5, processed=10)
        <Verdict.RESEEK: 'reseek'>
        >>> watch.observe(62.0, lag=5, processed=10)
        <Verdict.EXIT: 'exit'>
        >>> StallWatch(after=30.0).observe(100.0, lag=0, processed=0)
        <Verdict.OK: 'ok'>
    """

    after: float
    since: float | None = None
    processed: int = -1
    reseeked: bool = False

    def observe(self, now: float, *, lag: int, processed: int) -> Verdict:
        """Record one look at the worker (``now`` from a monotonic clock, in seconds)."""
        if lag <= 0 or processed != self.processed:
            self.since, self.processed, self.reseeked = now, processed, False
            return Verdict.OK
        if self.since is None:
            self.since = now
        if now - self.since < self.after:
            return Verdict.OK
        self.since = now
        if not self.reseeked:
            self.reseeked = True
            return Verdict.RESEEK
        return Verdict.EXIT
