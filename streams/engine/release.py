"""A by-lead partition's release buffer, kept in a store so it commits with the offsets.

The pure rule is :mod:`leadflow.processors.ordering` (``record_key``, ``ripe``,
``LowWatermark``, ``ReleaseBuffer``); this is its engine form. A by-lead partition receives
the records of every inbound partition (through the identity stage), interleaved as the
identity stage's transactions happened to commit, and the identity stage's **markers**
("inbound partition *s* has sent everything with ``R' <`` *w*"). Records wait here and
are released one at a time in key order once ripe under the low watermark over every
inbound partition: the released sequence is the sorted log, whatever the interleaving,
batch boundaries, crashes, rebalances or number of workers.

Store layout (one store per by-lead partition, changelogged like every store):

- ``p`` + sort bytes -> the record (its key, value and offset): unreleased records. The
  sort bytes compare like ``(ReleaseKey, value bytes)``, so equal keys are ordered by the
  record's bytes, as :class:`~leadflow.processors.ordering.ReleaseBuffer` orders them
  with ``tiebreak``; a byte-identical record is kept once.
- ``w`` -> JSON ``{"<source>": <watermark>}``: every source's latest promise, written once
  per batch in which it moved.

A task rebuilds the in-memory index (a heap of sort bytes) from the store when it is built,
so an aborted batch leaves nothing behind in memory either.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass

from leadflow.processors.errors import LeadflowError
from leadflow.processors.ordering import LowWatermark, ReleaseKey, WatermarkViolation
from leadflow.streams.engine.stage import TaskContext

PENDING = b"p"
MARKS = b"w"
_SHIFT = 1 << 63  # event times may be negative: shifted, their bytes sort like the numbers


class ReleaseError(LeadflowError):
    """A record that cannot be given a place in the release order (e.g. a NUL in its id)."""


def sort_bytes(key: ReleaseKey, tiebreak: bytes = b"") -> bytes:
    """Bytes that compare like ``(key, tiebreak)``.

    Example:
        >>> from leadflow.processors.ordering import release_key
        >>> a, b = release_key(100, 40, "page"), release_key(100, 45, "form")
        >>> sort_bytes(a) < sort_bytes(b), sort_bytes(a, b"x") < sort_bytes(a, b"y")
        (True, True)
        >>> at_of(sort_bytes(release_key(100, -5, "e", lateness_ms=200)))
        -5

    Raises:
        ReleaseError: the event id contains NUL (it ends the id in these bytes).
    """
    if "\x00" in key.event_id:
        raise ReleaseError(f"event id {key.event_id!r} contains NUL")
    return (
        (key.at + _SHIFT).to_bytes(8, "big")
        + (key.occurred_at + _SHIFT).to_bytes(8, "big")
        + key.event_id.encode()
        + b"\x00"
        + key.rank.to_bytes(1, "big")
        + tiebreak
    )


def at_of(sort: bytes) -> int:
    """The clamped time (``ReleaseKey.at``) that sort bytes start with."""
    return int.from_bytes(sort[:8], "big") - _SHIFT


@dataclass(frozen=True, slots=True)
class Held:
    """One unreleased record: its record key, value and offset on ``events.by-lead``."""

    key: bytes
    value: bytes
    offset: int

    def encode(self) -> bytes:
        """Stored form: offset, key length, key, value.

        Example:
            >>> Held.decode(Held(b"k", b"v", 7).encode())
            Held(key=b'k', value=b'v', offset=7)
        """
        return (
            self.offset.to_bytes(8, "big")
            + len(self.key).to_bytes(4, "big")
            + self.key
            + self.value
        )

    @staticmethod
    def decode(data: bytes) -> Held:
        """The record :meth:`encode` stored."""
        size = int.from_bytes(data[8:12], "big")
        return Held(data[12 : 12 + size], data[12 + size :], int.from_bytes(data[:8], "big"))


class StoredRelease:
    """One by-lead partition's unreleased records and its sources' promises, in a store.

    Args:
        ctx: the partition's task context (the store is read once, here).
        store: the store's name.
        sources: how many inbound partitions promise (every one must, before a release).
        lateness_ms: the allowed lateness D (``LEADFLOW_ORDER_LATENESS_MS``).
    """

    def __init__(self, ctx: TaskContext, store: str, sources: int, lateness_ms: int) -> None:
        self.store = store
        self.lateness_ms = lateness_ms
        self.marks = LowWatermark(sources)
        raw = ctx.get(store, MARKS)
        if raw:
            for source, mark in json.loads(raw).items():
                if int(source) < sources:
                    self.marks.promise(int(source), int(mark))
        self._heap = [key[len(PENDING) :] for key, _ in ctx.items(store, PENDING)]
        heapq.heapify(self._heap)
        self._moved = False
        self.watermark: int | None = None  # the highest low watermark a release used

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def low(self) -> int | None:
        """The low watermark over every source (``None`` until each has promised)."""
        return self.marks.low

    def promise(self, source: int, mark: int) -> None:
        """Take one source's promise (an older one changes nothing)."""
        before = self.marks.marks.get(source)
        self.marks.promise(source, mark)
        if self.marks.marks[source] != before:
            self._moved = True

    def add(self, ctx: TaskContext, sort: bytes, held: Held) -> bool:
        """Buffer a record until it is ripe; ``False`` if the same bytes wait already.

        Raises:
            WatermarkViolation: the record is already ripe under the promises taken: a record
                sorting after it may have been released before it (a broken promise: the
                caller decides; the record is buffered all the same).
        """
        if ctx.get(self.store, PENDING + sort) is not None:
            return False
        heapq.heappush(self._heap, sort)
        ctx.put(self.store, PENDING + sort, held.encode())
        low = self.low
        if low is not None and at_of(sort) + self.lateness_ms < low:
            raise WatermarkViolation(
                f"record at {at_of(sort)} arrived after watermark {low} was promised"
            )
        return True

    def peek_ripe(self) -> bytes | None:
        """The sort bytes of the next record if it is ripe, else ``None``."""
        low = self.low
        if low is None or not self._heap:
            return None
        head = self._heap[0]
        return head if at_of(head) + self.lateness_ms < low else None

    def pop(self, ctx: TaskContext, sort: bytes) -> Held:
        """Take the record :meth:`peek_ripe` named out of the buffer."""
        assert self._heap
        assert self._heap[0] == sort
        heapq.heappop(self._heap)
        raw = ctx.get(self.store, PENDING + sort)
        ctx.put(self.store, PENDING + sort, None)
        assert raw is not None, "index and store disagree"
        self.watermark = self.low
        return Held.decode(raw)

    def flush(self, ctx: TaskContext) -> None:
        """Store the promises if any moved (once per batch)."""
        if self._moved:
            marks = {str(s): m for s, m in sorted(self.marks.marks.items())}
            ctx.put(self.store, MARKS, json.dumps(marks, separators=(",", ":")).encode())
            self._moved = False
