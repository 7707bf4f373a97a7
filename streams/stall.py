"""Notice an input partition that holds lag but does not move, and say what to do about it.

The worker's engine positions come only from committed offsets, so a partition that stops
moving is not expected; the watch is a safety net (docs/architecture.md, "The stall watch"):
first re-seek the partition to its committed offset, and if that does not move it either,
exit so the supervisor starts a fresh process.

Where a partition stands (:func:`behind`) is the larger of its committed offset and the
consumer's position: a read_committed consumer skips aborted records and transaction
markers without delivering them, so only its position passes an aborted tail.
:func:`owed` is the measure of tools that see committed offsets only; :func:`skipped_to`
says where the worker and the projector commit past what the consumer skipped.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

P = TypeVar("P", bound=Hashable)

# Exit code asking the supervisor for a fresh process: a partition the watch could not move
# (the worker: past a re-seek; the projector: past a new consumer).
EXIT_STALLED = 70


def owed(end: int, committed: int, *, markers: bool) -> int:
    """Records of one partition past its committed offset.

    Under exactly_once a partition ends with a transaction marker that a consumer commits
    past only if it commits its position rather than its last record (the worker does, for
    an idle partition, within one look of its stall watch): with ``markers=True`` a lag of
    one record counts as none.

    Example:
        >>> owed(10, 7, markers=False), owed(10, 9, markers=True), owed(10, 7, markers=True)
        (3, 0, 3)
    """
    gap = end - committed
    return 0 if gap <= (1 if markers else 0) else gap


def behind(end: int, committed: int, position: int, *, low: int = 0) -> int:
    """Entries of one partition between where the worker stands and the partition's end.

    Where it stands is the furthest of its committed offset, the consumer's position (past
    the records and markers a read_committed consumer skips; negative when unknown) and the
    partition's first offset (``low``; a committed offset may be the logical "beginning").
    Nothing is forgiven: an aborted tail or a final marker is behind the position, not ahead.

    Example:
        >>> behind(12, 9, 12), behind(12, 9, -1001), behind(0, -2, -1001), behind(9, 9, 7)
        (0, 3, 0, 0)
        >>> behind(20, -2, -1001, low=15)
        5
    """
    return max(0, end - max(committed, position, low))


def skipped_to(positions: Mapping[P, int], committed: Mapping[P, int]) -> dict[P, int]:
    """The partitions of ``committed`` whose consumer position is past it, with the position.

    Asked between batches, when every record the consumer delivered has been processed and
    its offset committed (or is about to be, in the same commit): between the committed
    offset and the position there are then only entries a read_committed consumer skips
    (aborted records, abort and commit markers), and committing the position moves the
    group past them, so its lag can reach 0. The worker's engine and the projector both
    commit what this returns. A negative position (not known yet: before the first fetch
    after an assignment or a seek) and a partition missing from ``committed`` are left out.

    Example:
        >>> skipped_to({"a": 12, "b": 7, "c": -1001, "d": 5}, {"a": 10, "b": 7, "c": 3})
        {'a': 12}
    """
    return {
        tp: position
        for tp, position in positions.items()
        if tp in committed and position >= 0 and position > committed[tp]
    }


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

    def acted(self, now: float) -> None:
        """The first remedy was applied from outside (a new consumer for every partition).

        The stall's clock starts over at ``now``, and the next stall asks to exit; a look
        that finds the partition moved or caught up forgets it, as after a re-seek.

        Example:
            >>> watch = StallWatch(after=30.0)
            >>> watch.observe(0.0, lag=5, processed=10)
            <Verdict.OK: 'ok'>
            >>> watch.acted(20.0)
            >>> watch.observe(49.0, lag=5, processed=10), watch.observe(51.0, lag=5, processed=10)
            (<Verdict.OK: 'ok'>, <Verdict.EXIT: 'exit'>)
        """
        self.since, self.reseeked = now, True

    def wait(self, now: float) -> None:
        """Time up to ``now`` does not count (nothing could move: no assignment yet).

        Example:
            >>> watch = StallWatch(after=30.0)
            >>> watch.observe(0.0, lag=5, processed=10)
            <Verdict.OK: 'ok'>
            >>> watch.wait(25.0)
            >>> watch.observe(40.0, lag=5, processed=10)
            <Verdict.OK: 'ok'>
        """
        if self.since is not None:
            self.since = now


@dataclass
class PrefetchQueue:
    """Whether the client's prefetch queue ran dry since the stall watch's last look.

    librdkafka prefetches every assigned partition and delivers what it fetched in the
    order it arrived, so while a backlog drains, a partition's records can wait in the
    client behind other partitions' for longer than a stall limit. A batch shorter than
    the most a poll may take means the queue ran dry: everything fetched was delivered. A
    look after nothing but full batches cannot tell such a queued partition from a stuck
    one, so it judges none (the worker and the projector, docs/architecture.md, "The stall
    watch").

    Example:
        >>> queue = PrefetchQueue()
        >>> queue.took(5, most=5)
        >>> queue.may_judge()       # only full batches since the last look
        False
        >>> queue.took(5, most=5)
        >>> queue.took(2, most=5)
        >>> queue.may_judge()
        True
        >>> queue.may_judge()       # no poll since: nothing says the queue is full
        True
    """

    full: bool = False
    short: bool = False

    def took(self, taken: int, most: int) -> None:
        """A poll took ``taken`` records (errors and events included) of at most ``most``."""
        if taken < most:
            self.short = True
        else:
            self.full = True

    def may_judge(self) -> bool:
        """``False`` after nothing but full batches since the last call; starts over."""
        judge = self.short or not self.full
        self.full = self.short = False
        return judge


@dataclass
class OpenTailWatch:
    """Notices a partition held by an open transaction: its last stable offset stays put.

    A read_committed reader stops at a partition's last stable offset (LSO), the first offset
    of its oldest open transaction. Its lag, measured to the LSO, is then 0: the stall
    watch cannot see it. A transaction normally ends within its timeout; one that stays
    open longer (a producer whose coordinator skipped its markers: docs/operations.md,
    "The single-node broker killed -9") holds every reader of the partition. This watch
    says so once per episode: the LSO below the high watermark and unmoved for ``after``
    seconds.

    Example:
        >>> watch = OpenTailWatch(after=30.0)
        >>> watch.observe(0.0, stable=608, high=612), watch.observe(29.0, stable=608, high=650)
        (False, False)
        >>> watch.observe(31.0, stable=608, high=700), watch.observe(40.0, stable=608, high=700)
        (True, False)
        >>> watch.observe(45.0, stable=700, high=700), watch.observe(50.0, stable=700, high=701)
        (False, False)
    """

    after: float
    stable: int | None = None  # the LSO held since ``since`` (None: nothing held)
    since: float = 0.0
    told: bool = False

    def observe(self, now: float, *, stable: int, high: int) -> bool:
        """One look (``now`` from a monotonic clock); ``True`` when the hold is first due."""
        if stable >= high or stable != self.stable:
            self.stable = stable if stable < high else None
            self.since, self.told = now, False
            return False
        if self.told or now - self.since < self.after:
            return False
        self.told = True
        return True

    def held_for(self, now: float) -> float:
        """Seconds the current LSO has held (0 when none holds)."""
        return 0.0 if self.stable is None else now - self.since
