"""Event-time order for a lead: the order a by-lead partition processes its records in.

The inbound log is split over partitions by person (device, else lead), so one person's
events, and even one SDK batch (anonymous touches next to userId-only alias, CRM and
webinar events), reach the lead stage through different partitions, in an order that
depends on which partition answered first. The state must not depend on that.

**Canonical order.** Every inbound record has ``R'``: the collector's ``received_at``,
made monotonic per inbound partition by the identity stage (:func:`monotonic_received`).
A by-lead partition processes its records sorted by :func:`release_key`::

    (clamp(occurred_at, R' - D, R'), occurred_at, event_id, rank)

where ``D`` is the allowed lateness (``LEADFLOW_ORDER_LATENESS_MS``, default
:data:`DEFAULT_LATENESS_MS`). Consequences, each tested:

- records with the same ``R'`` (one collector request, e.g. one SDK batch) run in
  ``(occurred_at, event_id)`` order, whatever D;
- records that arrived within D of when they occurred (``R' - occurred_at <= D``) run in
  ``(occurred_at, event_id)`` order among themselves, across requests and sources;
- a *late* record (``R' - occurred_at > D``) runs at position ``R' - D``: after everything
  that occurred before that, never before anything already processed. Its facts keep their
  own event time (first touch, decay); what it causes is stamped at the lead's event time
  (see ``processors/lead.py``, "Late events").
- a merge request sorts right before the event that caused it (``record_key``);
- a clock ahead of the collector (``occurred_at > R'``, within the collector's tolerance)
  counts as ``R'``: the key never waits for the future.

**Release.** A record is released when the partition's low watermark ``L`` (every source
promised "no record with ``R' < L`` will come") passes its key: :func:`ripe`,
``key.at + D < L``. Then every record that sorts before it is already there
(``R'_f <= key(f).at + D <= key(e).at + D < L``), so the processing sequence is the sorted
log whatever the interleaving of partitions, batch boundaries, marker timing, crashes or
worker count: :class:`ReleaseBuffer` is the reference, property-tested.

**Cost.** A record waits ``max(0, min(occurred_at, R') + D - R')`` beyond the watermark's
own propagation: nothing for D = 0, at most D.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from leadflow.processors.derived import MergeRequest
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event

DEFAULT_LATENESS_MS = 0
"""One request shares one R', so a batch needs no lateness; see docs/architecture.md."""

# A merge's two requests sort right before the event that caused it (same time, same id):
# the merged lead's copy first, so a lead stage holding for the survivor's transfer never
# waits for a request behind it (processors/merges.py, "Holding").
HANDOVER_RANK = 0
WAIT_RANK = 1
EVENT_RANK = 2

_T = TypeVar("_T")


class WatermarkViolation(LeadflowError):
    """A record arrived with ``R'`` below a watermark its source had already promised.

    The sequence would depend on timing: the engine's contract is broken, loudly.
    """


@dataclass(frozen=True, order=True, slots=True)
class ReleaseKey:
    """Where a record sorts in its by-lead partition (compare keys, not their parts).

    Attributes:
        at: ``occurred_at`` clamped to ``[R' - D, R']``.
        occurred_at: the event time.
        event_id: the event (a merge request: the event that caused it).
        rank: :data:`HANDOVER_RANK`, :data:`WAIT_RANK` or :data:`EVENT_RANK`.
    """

    at: int
    occurred_at: int
    event_id: str
    rank: int = EVENT_RANK


def release_key(
    received: int,
    occurred_at: int,
    event_id: str,
    *,
    rank: int = EVENT_RANK,
    lateness_ms: int = DEFAULT_LATENESS_MS,
) -> ReleaseKey:
    """The canonical sort key of one by-lead record (see the module doc).

    Example:
        >>> a = release_key(100, 40, "page", lateness_ms=0)   # one batch, R' = 100
        >>> b = release_key(100, 45, "form", lateness_ms=0)
        >>> a < b, a.at
        (True, 100)
        >>> late = release_key(900, 10, "x", lateness_ms=60)  # arrived 890 ms after it happened
        >>> late.at
        840

    Raises:
        ValueError: a negative lateness.
    """
    if lateness_ms < 0:
        raise ValueError(f"lateness must be >= 0, got {lateness_ms}")
    at = min(max(occurred_at, received - lateness_ms), received)
    return ReleaseKey(at, occurred_at, event_id, rank)


def record_key(
    record: Event | MergeRequest, received: int, lateness_ms: int = DEFAULT_LATENESS_MS
) -> ReleaseKey:
    """The release key of one by-lead record; ``received`` is its ``R'`` (header).

    A merge request sorts at the event that caused it, the merged lead's copy first.

    Example:
        >>> from leadflow.processors.events import Kind
        >>> from leadflow.processors.evolve import evolve
        >>> e = Event("i1", Kind.IDENTIFY, "ws", 50, 60, "a1", "u1")
        >>> m = MergeRequest("m", "ws", "e-x", "e-x", "u1", 50, 60, "identify", "i1")
        >>> record_key(m, 60) < record_key(evolve(m, lead_id="u1"), 60)
        True
        >>> record_key(evolve(m, lead_id="u1"), 60) < record_key(e, 60)
        True
    """
    if isinstance(record, MergeRequest):
        rank = HANDOVER_RANK if record.lead_id == record.absorbed_id else WAIT_RANK
        return release_key(
            received, record.occurred_at, record.cause_event_id, rank=rank, lateness_ms=lateness_ms
        )
    return release_key(received, record.occurred_at, record.event_id, lateness_ms=lateness_ms)


def ripe(key: ReleaseKey, low_watermark: int, lateness_ms: int = DEFAULT_LATENESS_MS) -> bool:
    """Whether every record that sorts before ``key`` has certainly arrived.

    Example:
        >>> k = release_key(100, 90, "e", lateness_ms=0)
        >>> ripe(k, 100), ripe(k, 101)
        (False, True)
    """
    return key.at + lateness_ms < low_watermark


def added_wait(received: int, occurred_at: int, lateness_ms: int) -> int:
    """How long ordering holds a record beyond the watermark's propagation, in ms.

    Example:
        >>> added_wait(1_000, 990, 0), added_wait(1_000, 990, 50), added_wait(1_000, 10, 50)
        (0, 40, 0)
    """
    return max(0, min(occurred_at, received) + lateness_ms - received)


def monotonic_received(previous: int | None, received: int) -> int:
    """``R'``: the collector's receive time, never going back on one inbound partition.

    Several collectors (or one clock step) can write a smaller ``received_at`` after a
    larger one; the partition's watermark must not go back, so ``R'`` is the running max,
    a function of the partition's log.

    Example:
        >>> monotonic_received(None, 5), monotonic_received(9, 5), monotonic_received(9, 12)
        (5, 9, 12)
    """
    return received if previous is None else max(previous, received)


@dataclass
class LowWatermark:
    """A by-lead partition's low watermark: the minimum over its sources' promises.

    A source (an inbound partition, through the identity stage) promises "no more records
    with ``R' < w``"; promises only move forward. Until every source has spoken the low
    watermark is ``None`` and nothing may be released.
    """

    sources: int
    marks: dict[int, int] = field(default_factory=dict)

    def promise(self, source: int, mark: int) -> None:
        """Record source's promise (an older, smaller promise changes nothing).

        Raises:
            ValueError: a source outside ``range(sources)``.
        """
        if not 0 <= source < self.sources:
            raise ValueError(f"source {source} not in 0..{self.sources - 1}")
        self.marks[source] = max(mark, self.marks.get(source, mark))

    @property
    def low(self) -> int | None:
        """The partition's watermark, or ``None`` while a source has not spoken."""
        if len(self.marks) < self.sources:
            return None
        return min(self.marks.values())


@dataclass
class ReleaseBuffer(Generic[_T]):
    """One by-lead partition's unreleased records, released in :class:`ReleaseKey` order.

    The reference for the engine's buffer (the engine keeps its records in a store so they
    commit with the input offsets; the order and the release rule are these).

    Example:
        >>> buf: ReleaseBuffer[str] = ReleaseBuffer(lateness_ms=0)
        >>> buf.add(release_key(100, 30, "b"), "webinar")   # arrived first
        >>> buf.add(release_key(100, 20, "a"), "form")
        >>> buf.advance(100), buf.advance(101)
        ([], ['form', 'webinar'])
    """

    lateness_ms: int = DEFAULT_LATENESS_MS
    _heap: list[tuple[ReleaseKey, bytes, int, _T]] = field(default_factory=list)
    _added: int = 0
    watermark: int | None = None  # the highest low watermark seen

    def add(self, key: ReleaseKey, record: _T, tiebreak: bytes = b"") -> None:
        """Buffer one record; ``tiebreak`` (its encoded bytes) orders records with equal keys.

        Equal keys mean the same event id at the same time from the same request: a
        client that reuses a message id for two different events. The lead keeps the first
        it processes, so which one that is must not depend on arrival: the bytes decide.

        Raises:
            WatermarkViolation: its key is already ripe at the watermark seen, so a record
                sorting after it may have been released before it.
        """
        if self.watermark is not None and ripe(key, self.watermark, self.lateness_ms):
            raise WatermarkViolation(
                f"record {key.event_id} (sort time {key.at}) arrived after watermark "
                f"{self.watermark} was promised"
            )
        # The counter only orders byte-identical duplicates, where order cannot matter.
        heapq.heappush(self._heap, (key, tiebreak, self._added, record))
        self._added += 1

    def advance(self, low_watermark: int) -> list[_T]:
        """Release, in key order, every record that ``low_watermark`` makes ripe."""
        if self.watermark is None or low_watermark > self.watermark:
            self.watermark = low_watermark
        return list(self._release())

    def pop_ripe(self, low_watermark: int) -> _T | None:
        """Release the next record only (``None`` if none is ripe).

        For a lead stage that may have to stop between two records (a lead waiting for a
        merged lead's state holds its partition, ``processors/merges.py``).
        """
        if self.watermark is None or low_watermark > self.watermark:
            self.watermark = low_watermark
        if self._heap and ripe(self._heap[0][0], self.watermark, self.lateness_ms):
            return heapq.heappop(self._heap)[3]
        return None

    def _release(self) -> Iterator[_T]:
        assert self.watermark is not None
        while self._heap and ripe(self._heap[0][0], self.watermark, self.lateness_ms):
            yield heapq.heappop(self._heap)[3]

    def __len__(self) -> int:
        return len(self._heap)


# -- the model switch ----------------------------------------------------------------------
#
# Which snapshot of a workspace's model scores a record must be a function of the log too
# (docs/architecture.md, "The model switch in the log"). Three rules, each a function of
# positions in the sorted logs:
#
# 1. A lead partition gives every training example it sends the *position* of the record it
#    came from (the released record's ``at``; deadlines fired after it share it) and
#    promises the trainer "no example below P will come from me" (:func:`lead_promise`).
# 2. The trainer learns examples in ``(position, example bytes)`` order once every lead
#    partition promised past them; snapshot n, taken right after the example at position
#    ``K_n``, switches at ``S_n = K_n + delta`` (:func:`switch_position`; the worker uses
#    delta = 1 ms: the first position after ``K_n``). With every snapshot the trainer
#    sends a model marker; then it promises every lead partition "every switch below
#    ``W + delta`` is sent" (``W``: its low watermark over the lead partitions).
# 3. A record is scored with the newest snapshot whose ``S_n <= gate``
#    (:class:`ModelSwitches`, the reference), where the *gate* is the position of the M-th
#    record released before it on its lead partition (:func:`switch_gate`; its own
#    position for M = 0). A lead partition releases a record only when its gate is below
#    every trainer's promise (on top of the inbound rule), and applies the model markers
#    with ``S_n <= gate`` right before it.
#
# Why positions and a count, not a time: positions are collector receive stamps, and two
# runs of the same input (one with crashes) have different gaps between their stamps but
# the same order. ``S_n`` one position after ``K_n`` and a gate M records back depend only
# on that order; a delta of seconds of receive time picks other records in every run
# (measured: 121 of ~1,076 scores differed with delta = 10 s). M > 0 lets a partition
# release M records per lead -> trainer -> lead round trip instead of one position.
#
# Deadlock-free: the ripe record r with the lowest position is some partition's next
# record, so that partition promises at most ``at(r)`` and every other one at least that
# (their next records sort after r, or are not ripe, i.e. at or above ``low - D``); once
# the trainers heard those promises ``W = at(r)``, and r's gate is at or below ``at(r)``,
# below ``W + delta``: r is released when its inbound sources allow.

DEFAULT_SWITCH_DELAY_MS = 1
"""delta: how far behind the trainer's position a snapshot switches (receive-time ms).
The worker keeps 1: any larger delta depends on the gaps between receive stamps."""

DEFAULT_SWITCH_RECORDS = 100
"""M: the switch gate, in records released on a lead partition (LEADFLOW_MODEL_SWITCH_RECORDS)."""


def switch_gate(released: Sequence[int], at: int, records: int) -> int | None:
    """The switch gate of a record at ``at``, released next after ``released``.

    ``released``: the positions of the records released before it, oldest first. The gate
    is the position of the ``records``-th record released before it, its own position for
    ``records == 0``; ``None`` (no snapshot scores it yet) before that many.

    Example:
        >>> switch_gate([], 500, 0), switch_gate([100, 200, 300], 500, 2)
        (500, 200)
        >>> switch_gate([300], 500, 2) is None
        True
    """
    if records < 0:
        raise ValueError(f"the switch gate must be >= 0 records, got {records}")
    if not records:
        return at
    if len(released) < records:
        return None
    return released[len(released) - records]


def switch_position(trained_at: int, delay_ms: int = DEFAULT_SWITCH_DELAY_MS) -> int:
    """Where a snapshot taken right after the example at ``trained_at`` takes over.

    Example:
        >>> switch_position(1_000, 250)
        1250
    """
    if delay_ms < 1:
        raise ValueError(f"the switch delay must be >= 1 ms, got {delay_ms}")
    return trained_at + delay_ms


def lead_promise(
    previous: int | None,
    *,
    head: int | None,
    low: int | None,
    lateness_ms: int,
    released: int | None,
    holding: bool,
) -> int | None:
    """What a lead partition promises the trainer: no example below it will come.

    Its examples carry the position of the record they came from: a released record's
    ``at`` (deadlines fired after it share it), or, for a record applied on arrival, the
    partition's position so far (``max(released, previous)``). Every record still to be
    released sorts at or after the buffer's ``head`` or arrives with ``at >= low - D``.
    While a lead holds the partition only the last released position can be promised: the
    transfer it waits for is applied there.

    Example:
        >>> lead_promise(None, head=500, low=900, lateness_ms=0, released=None, holding=False)
        500
        >>> lead_promise(500, head=None, low=900, lateness_ms=100, released=600, holding=False)
        800
        >>> lead_promise(500, head=700, low=900, lateness_ms=0, released=600, holding=True)
        600
        >>> lead_promise(None, head=10, low=None, lateness_ms=0, released=None, holding=False)
    """
    if holding:
        candidate = released
    elif low is None:
        candidate = None
    else:
        candidate = low - lateness_ms if head is None else min(head, low - lateness_ms)
    if candidate is None:
        return previous
    return candidate if previous is None else max(previous, candidate)


@dataclass(frozen=True, slots=True)
class Switch:
    """Snapshot ``version`` of ``workspace``'s model takes over at position ``at``."""

    at: int
    workspace: str
    version: int


@dataclass
class ModelSwitches:
    """The reference: which snapshot scores a record with a given gate (:func:`switch_gate`).

    Example:
        >>> s = ModelSwitches([Switch(100, "ws", 25), Switch(300, "ws", 50)])
        >>> s.version("ws", 99), s.version("ws", 100), s.version("ws", 301), s.version("x", 500)
        (None, 25, 50, None)
    """

    switches: list[Switch] = field(default_factory=list)

    def version(self, workspace: str, at: int | None) -> int | None:
        """The newest snapshot of ``workspace`` with ``S <= at`` (None: the prior)."""
        if at is None:
            return None
        best: Switch | None = None
        for switch in self.switches:
            later = best is None or (switch.at, switch.version) > (best.at, best.version)
            if switch.workspace == workspace and switch.at <= at and later:
                best = switch
        return None if best is None else best.version
