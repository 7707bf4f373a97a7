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
  per batch in which it moved;
- ``m`` -> the same for the trainers' promises ("every model switch below this is sent"),
  when the buffer also takes model markers (``trainers > 0``);
- ``f`` -> JSON ``{"released": <at>, "promised": <P>, "recent": [<at>, ...]}``: the
  position of the last released record, what the partition last promised the trainer
  (``processors.ordering.lead_promise``) and the positions of the last M released records
  (M = ``switch_records``: the gate of the model switch);
- ``s`` + :func:`switch_sort` bytes -> a model marker (key = the workspace, value = the
  snapshot) until the gate passes its switch position;
- ``o`` + sort bytes -> the hop count of an unreleased record a redirect forwarded (it
  keeps its release key, "the forward frontier" below);
- ``v`` -> JSON ``{"<partition>": [<hex>, ...]}``: every by-lead partition's latest forward
  promises (``processors/frontier.py``), when the partition takes them (``peers > 0``);
- ``t`` + lead key -> empty: a lead whose survivor-side merge request was released here
  (forwards come only to such leads; written by the lead stage,
  ``streams/engine/frontier.Forwardable``);
- ``c`` -> JSON ``{"sent": {"<target>": n}, "read": {"<source>": n}}``: how many forwards
  this partition sent to each by-lead partition and read from each (written in a batch that
  sent or read one). With them a worker hands its own partitions' promises over in memory
  (``streams/engine/frontier.py``, "Promises handed over in memory").

**The forward frontier** (issue 14, ``processors/frontier.py``): a record a redirect
forwards keeps its release key and waits here with the others; a record is released only
once every by-lead partition promised that no forward sorting before it will come
(:meth:`StoredRelease.peek_ripe`). Promises compare release keys only (:func:`key_bytes`),
not the records' bytes, as the reference compares ``ReleaseKey`` values.

**The model switch gate** (``processors/ordering.py``, "the model switch"): a record is
scored with the newest snapshot whose switch position ``S <= gate``, where the gate is the
position of the M-th record released before it on this partition (its own position for
M = 0; no snapshot before M records were released). So a record waits until every
trainer promised past its gate, and the model markers with ``S <= gate`` are applied right
before it (:meth:`StoredRelease.due_switch`). The gate counts records of this partition,
not time: it is the same in every run of the same records, whatever gaps their receive
stamps have; M > 0 lets a partition release M records per lead -> trainer -> lead round
trip instead of one position.

A task rebuilds the in-memory index (a heap of sort bytes) from the store when it is built,
so an aborted batch leaves nothing behind in memory either.
"""

from __future__ import annotations

import heapq
import json
import time
from dataclasses import dataclass, field

from leadflow.processors.errors import LeadflowError
from leadflow.processors.frontier import gate
from leadflow.processors.ordering import (
    LowWatermark,
    ReleaseKey,
    WatermarkViolation,
    lead_promise,
    switch_gate,
)
from leadflow.streams.engine.stage import TaskContext
from leadflow.streams.logs import get_logger

log = get_logger(__name__)

PENDING = b"p"
MARKS = b"w"
MODEL_MARKS = b"m"
FRONTIER = b"f"
SWITCHES = b"s"
HOPS = b"o"
VIEWS = b"v"
TARGETS = b"t"
COUNTS = b"c"
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


def switch_sort(at: int, workspace: str, version: int) -> bytes:
    """Sort bytes of a model marker (store prefix ``s``): by switch position, workspace, version.

    Example:
        >>> switch_sort(100, "ws", 25) < switch_sort(100, "ws", 26) < switch_sort(101, "a", 1)
        True
        >>> at_of(switch_sort(100, "ws", 25))
        100
    """
    if "\x00" in workspace:
        raise ReleaseError(f"workspace {workspace!r} contains NUL")
    return (
        (at + _SHIFT).to_bytes(8, "big") + workspace.encode() + b"\x00" + version.to_bytes(8, "big")
    )


def position_sort(at: int, tiebreak: bytes) -> bytes:
    """Sort bytes of a training example: its position, then its bytes (the trainer's order).

    Example:
        >>> position_sort(-1, b"b") < position_sort(0, b"a") < position_sort(0, b"b")
        True
    """
    return (at + _SHIFT).to_bytes(8, "big") + tiebreak


def key_bytes(sort: bytes) -> bytes:
    """The release-key part of sort bytes (without the tiebreak): what promises compare.

    Example:
        >>> from leadflow.processors.ordering import release_key
        >>> k = sort_bytes(release_key(100, 90, "e"))
        >>> key_bytes(k + b"tiebreak") == k
        True
    """
    end = sort.index(b"\x00", 16)  # the event id ends with NUL, then the rank's byte
    return sort[: end + 2]


def bound_bytes(low: int, lateness_ms: int) -> bytes:
    """Bytes below every release key with ``at >= low - lateness_ms`` (and above lower ones).

    Example:
        >>> from leadflow.processors.ordering import release_key
        >>> b = bound_bytes(100, 0)
        >>> sort_bytes(release_key(99, 99, "e")) < b < sort_bytes(release_key(100, 0, ""))
        True
    """
    return (low - lateness_ms + _SHIFT).to_bytes(8, "big")


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


@dataclass
class Duplicates:
    """Byte-identical records a release buffer kept once (loud, not silent); one per stage.

    Only a second write of a record (the same bytes at the same place in the order) at
    another offset makes one: a batch read again after an abort, or after a restart, finds
    the store as it was before that batch (its writes are undone with its offsets), not its
    own copy. The one source seen of such writes, a restarted worker writing training
    examples a second time (session 17), is why they are counted (``count``, in
    ``worker.progress``) and logged as ``release.duplicate`` (info) the first time per
    partition and then at most once a minute per partition, with the total.
    """

    count: int = 0
    logged: dict[int, float] = field(default_factory=dict)  # partition -> monotonic time
    every_s: float = 60.0

    def note(self, store: str, partition: int, offset: int, kept: int, at: int) -> None:
        """Count the duplicate at ``offset`` of the record kept from offset ``kept``."""
        self.count += 1
        now = time.monotonic()
        last = self.logged.get(partition)
        if last is None or now - last >= self.every_s:
            self.logged[partition] = now
            log.info("release.duplicate", store=store, partition=partition, offset=offset,
                     kept_offset=kept, at=at, action="kept once", total=self.count)  # fmt: skip


class StoredRelease:
    """One by-lead partition's unreleased records and its sources' promises, in a store.

    Args:
        ctx: the partition's task context (the store is read once, here).
        store: the store's name.
        sources: how many inbound partitions promise (every one must, before a release).
        lateness_ms: the allowed lateness D (``LEADFLOW_ORDER_LATENESS_MS``).
        trainers: how many trainers (partitions of ``training-examples``) promise model
            switches; 0: no model markers, nothing waits for them.
        switch_records: M, the gate of the model switch: a record is scored with the
            snapshots whose switch position is at or below the position of the M-th record
            released before it on this partition (0: its own position).
        peers: how many by-lead partitions promise their forwards (the forward frontier:
            every one must, before a release); 0: no frontier (forwards are applied on
            arrival).
        duplicates: counts and logs the records :meth:`add` keeps once (the stage's, for
            ``worker.progress``; a buffer of its own when not given).
    """

    def __init__(
        self,
        ctx: TaskContext,
        store: str,
        sources: int,
        lateness_ms: int,
        trainers: int = 0,
        switch_records: int = 0,
        peers: int = 0,
        duplicates: Duplicates | None = None,
    ) -> None:
        if switch_records < 0:
            raise ValueError(f"switch_records must be >= 0, got {switch_records}")
        self.store = store
        self.partition = ctx.partition
        self.duplicates = Duplicates() if duplicates is None else duplicates
        self.lateness_ms = lateness_ms
        self.switch_records = switch_records
        self.marks = LowWatermark(sources)
        self.trainers = trainers
        self.models = LowWatermark(trainers)
        for name, marks in ((MARKS, self.marks), (MODEL_MARKS, self.models)):
            raw = ctx.get(store, name)
            if raw:
                for source, mark in json.loads(raw).items():
                    if int(source) < marks.sources:
                        marks.promise(int(source), int(mark))
        raw = ctx.get(store, FRONTIER)
        frontier = json.loads(raw) if raw else {}
        self.released: int | None = frontier.get("released")  # position of the last release
        self.promised: int | None = frontier.get("promised")  # last promise to the trainer
        # Positions of the last M released records, oldest first (the switch gate).
        recent = [int(at) for at in frontier.get("recent", [])]
        self.recent: list[int] = recent[-switch_records:] if switch_records else []
        self._heap = [key[len(PENDING) :] for key, _ in ctx.items(store, PENDING)]
        heapq.heapify(self._heap)
        self._switches = [key[len(SWITCHES) :] for key, _ in ctx.items(store, SWITCHES)]
        heapq.heapify(self._switches)
        self.peers = peers
        self.hops = {key[len(HOPS) :]: int(v) for key, v in ctx.items(store, HOPS)}
        raw = ctx.get(store, VIEWS)
        self.views: dict[int, tuple[bytes | None, ...]] = {
            int(q): _unpack(marks) for q, marks in (json.loads(raw) if raw else {}).items()
        }
        self._gate: bytes | None = gate(self.views, peers) if peers else None
        self._gate_stale = False  # views moved since the gate was computed
        raw = ctx.get(store, COUNTS)
        counts = json.loads(raw) if raw else {}
        self.sent = {int(q): int(n) for q, n in counts.get("sent", {}).items()}
        self.read = {int(q): int(n) for q, n in counts.get("read", {}).items()}
        self._counted = False
        self.last: bytes | None = None  # release key of the last release (this task's life)
        self._moved = False
        self._frontier_moved = False
        self.watermark: int | None = None  # the highest low watermark a release used

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def low(self) -> int | None:
        """The low watermark over every source (``None`` until each has promised)."""
        return self.marks.low

    @property
    def head(self) -> bytes | None:
        """The sort bytes of the next record, ripe or not (``None``: nothing buffered)."""
        return self._heap[0] if self._heap else None

    def promise(self, source: int, mark: int) -> None:
        """Take one source's promise (an older one changes nothing)."""
        before = self.marks.marks.get(source)
        self.marks.promise(source, mark)
        if self.marks.marks[source] != before:
            self._moved = True

    def promise_models(self, source: int, mark: int) -> None:
        """Take one trainer's promise: every model switch below ``mark`` is sent."""
        before = self.models.marks.get(source)
        self.models.promise(source, mark)
        if self.models.marks[source] != before:
            self._moved = True

    def take_front(
        self, source: int, marks: tuple[bytes | None, ...], *, newest: bool = False
    ) -> bool:
        """Take a by-lead partition's forward promises; ``True`` if a view moved.

        Per hop count the higher promise stands: each one is true for good ("no more such
        forwards will come"), and a promise handed over in memory may be newer than a marker
        from the same partition read after it. ``newest``: ``marks`` is the partition's
        promise as of now (handed over in memory), no lower than any it made before, so it
        replaces the view without the comparison per hop count.

        Example:
            >>> buf = StoredRelease.__new__(StoredRelease)
            >>> buf.views, buf.peers, buf._moved = {}, 1, False
            >>> buf.take_front(0, (b"b", None)), buf.take_front(0, (b"a", b"c")), buf.views
            (True, True, {0: (b'b', b'c')})
            >>> buf.take_front(0, (b"a", None)), buf.front
            (False, b'b')
        """
        before = self.views.get(source)
        if before == marks:
            return False
        if not newest and before is not None and len(before) == len(marks):
            marks = tuple(_higher(a, b) for a, b in zip(before, marks, strict=True))
            if before == marks:
                return False
        self.views[source] = marks
        self._gate_stale = True  # recomputed when next read: a hand-over takes many at once
        self._moved = True
        return True

    def count_sent(self, target: int) -> int:
        """Count a forward sent to by-lead partition ``target``; its number (1, 2, ...)."""
        self.sent[target] = self.sent.get(target, 0) + 1
        self._counted = True
        return self.sent[target]

    def count_read(self, source: int, number: int) -> int:
        """Count forward ``number`` read from ``source``; the gap to the one expected (0: none).

        A gap means a forward read twice or one never read: counted and logged by the
        caller. The count keeps the highest number read.
        """
        expected = self.read.get(source, 0) + 1
        self.read[source] = max(self.read.get(source, 0), number)
        self._counted = True
        return number - expected

    @property
    def front(self) -> bytes | None:
        """The forward frontier: no forward sorting before it can still come here."""
        if self._gate_stale:
            self._gate = gate(self.views, self.peers)
            self._gate_stale = False
        return self._gate

    def add_switch(self, ctx: TaskContext, sort: bytes, held: Held) -> bool:
        """Keep a model marker (:func:`switch_sort`) until a gate passes it.

        ``False`` if it waits already.

        No watermark check: the trainer's promise, not the inbound one, covers it.
        """
        if ctx.get(self.store, SWITCHES + sort) is not None:
            return False
        heapq.heappush(self._switches, sort)
        ctx.put(self.store, SWITCHES + sort, held.encode())
        return True

    def gate(self, head: bytes) -> int | None:
        """The switch gate of the record ``head`` if it were released next.

        The position of the M-th record released before it (its own for M = 0); ``None``:
        fewer than M records were released on this partition, so no snapshot scores it yet.

        Example:
            >>> from leadflow.processors.ordering import release_key
            >>> sort = sort_bytes(release_key(500, 500, "e"))
            >>> buf = StoredRelease.__new__(StoredRelease)
            >>> buf.switch_records, buf.recent = 0, []
            >>> buf.gate(sort)
            500
            >>> buf.switch_records, buf.recent = 2, [300]
            >>> buf.gate(sort) is None
            True
            >>> buf.recent = [300, 400]
            >>> buf.gate(sort)
            300
        """
        return switch_gate(self.recent, at_of(head), self.switch_records)

    def due_switch(self, head: bytes) -> bytes | None:
        """The next model marker to apply before the record ``head``, else ``None``.

        Its switch position is at or below the record's :meth:`gate`.
        """
        if not self._switches:
            return None
        gate = self.gate(head)
        if gate is None or at_of(self._switches[0]) > gate:
            return None
        return self._switches[0]

    def pop_switch(self, ctx: TaskContext, sort: bytes) -> Held:
        """Take the model marker :meth:`due_switch` named out of the store."""
        assert self._switches
        assert self._switches[0] == sort
        heapq.heappop(self._switches)
        raw = ctx.get(self.store, SWITCHES + sort)
        ctx.put(self.store, SWITCHES + sort, None)
        assert raw is not None, "index and store disagree"
        return Held.decode(raw)

    @property
    def position(self) -> int | None:
        """The partition's position: examples of records applied on arrival carry it."""
        if self.released is None:
            return self.promised
        return self.released if self.promised is None else max(self.released, self.promised)

    def promise_trainer(self, holding: bool, also: int | None = None) -> int | None:
        """What to promise the trainer now, if it moved (``processors.ordering.lead_promise``).

        ``also``: the position of something else still to apply here (a clock step).
        """
        head = at_of(self._heap[0]) if self._heap else None
        if also is not None:
            head = also if head is None else min(head, also)
        if self.peers:
            # A forward still to come is released at its own key: it sorts at the frontier
            # or after it (nothing can be promised before every partition spoke).
            front = self.front
            if front is None:
                return None
            at = at_of(front)
            head = at if head is None else min(head, at)
        promise = lead_promise(
            self.promised,
            head=head,
            low=self.low,
            lateness_ms=self.lateness_ms,
            released=self.released,
            holding=holding,
        )
        if promise is None or promise == self.promised:
            return None
        self.promised = promise
        self._frontier_moved = True
        return promise

    def add(self, ctx: TaskContext, sort: bytes, held: Held, hops: int = 0) -> bool:
        """Buffer a record until it is ripe; ``False`` if the same bytes wait already.

        Such a duplicate is kept once, counted and logged (:class:`Duplicates`).

        ``hops`` > 0: a record a redirect forwarded with its release key; the frontier, not
        the inbound watermark, covers it.

        Raises:
            WatermarkViolation: the record is already ripe under the promises taken: a record
                sorting after it may have been released before it (a broken promise: the
                caller decides; the record is buffered all the same). For a forwarded record:
                a record sorting after it was released already.
        """
        waiting = ctx.get(self.store, PENDING + sort)
        if waiting is not None:
            kept = Held.decode(waiting).offset
            self.duplicates.note(self.store, self.partition, held.offset, kept, at_of(sort))
            return False
        heapq.heappush(self._heap, sort)
        ctx.put(self.store, PENDING + sort, held.encode())
        if hops:
            self.hops[sort] = hops
            ctx.put(self.store, HOPS + sort, str(hops).encode())
            if self.last is not None and key_bytes(sort) < self.last:
                raise WatermarkViolation(
                    f"forwarded record at {at_of(sort)} arrived after a later one was released"
                )
            return True
        late = self.late(sort)
        if late is not None:
            raise late
        return True

    def late(self, sort: bytes) -> WatermarkViolation | None:
        """The broken promise if the record ``sort`` came now, else ``None``.

        It is ripe already under the promises taken, so a record sorting after it may have
        been released before it. For a caller that must not buffer such a record at all.
        """
        low = self.low
        if low is not None and at_of(sort) + self.lateness_ms < low:
            return WatermarkViolation(
                f"record at {at_of(sort)} arrived after watermark {low} was promised"
            )
        return None

    def hops_of(self, sort: bytes) -> int:
        """How many redirects forwarded the unreleased record ``sort`` (0: none)."""
        return self.hops.get(sort, 0)

    def peek_ripe(self) -> bytes | None:
        """The sort bytes of the next record if it is ripe, else ``None``."""
        low = self.low
        if low is None or not self._heap:
            return None
        head = self._heap[0]
        at = at_of(head)
        front = self.front if self.peers else None
        if self.peers and (front is None or key_bytes(head) > front):
            return None  # a forward sorting before it may still come
        if self.trainers:
            gate = self.gate(head)
            models = self.models.low
            if gate is not None and (models is None or gate >= models):
                return None  # a model marker at or before its gate may still come
        return head if at + self.lateness_ms < low else None

    def pop(self, ctx: TaskContext, sort: bytes) -> Held:
        """Take the record :meth:`peek_ripe` named out of the buffer."""
        assert self._heap
        assert self._heap[0] == sort
        heapq.heappop(self._heap)
        raw = ctx.get(self.store, PENDING + sort)
        ctx.put(self.store, PENDING + sort, None)
        assert raw is not None, "index and store disagree"
        if self.hops.pop(sort, None) is not None:
            ctx.put(self.store, HOPS + sort, None)
        if self.peers:
            self.last = key_bytes(sort)
        self.watermark = self.low
        at = at_of(sort)
        if self.released is None or at > self.released:
            self.released = at
            self._frontier_moved = True
        if self.switch_records:
            self.recent.append(at)
            del self.recent[: -self.switch_records]
            self._frontier_moved = True
        return Held.decode(raw)

    def flush(self, ctx: TaskContext) -> None:
        """Store the promises and the frontier if they moved (once per batch)."""
        if self._moved:
            for name, marks in ((MARKS, self.marks), (MODEL_MARKS, self.models)):
                if marks.marks:
                    value = {str(s): m for s, m in sorted(marks.marks.items())}
                    ctx.put(self.store, name, json.dumps(value, separators=(",", ":")).encode())
            if self.views:
                views = {str(q): _pack(m) for q, m in sorted(self.views.items())}
                ctx.put(self.store, VIEWS, json.dumps(views, separators=(",", ":")).encode())
            self._moved = False
        if self._counted:
            counts = {
                "sent": {str(q): n for q, n in sorted(self.sent.items())},
                "read": {str(q): n for q, n in sorted(self.read.items())},
            }
            ctx.put(self.store, COUNTS, json.dumps(counts, separators=(",", ":")).encode())
            self._counted = False
        if self._frontier_moved:
            frontier: dict[str, object] = {"promised": self.promised, "released": self.released}
            if self.switch_records:
                frontier["recent"] = self.recent
            ctx.put(self.store, FRONTIER, json.dumps(frontier, separators=(",", ":")).encode())
            self._frontier_moved = False


def _higher(a: bytes | None, b: bytes | None) -> bytes | None:
    """The higher of two promises (``None``: nothing promised)."""
    if a is None:
        return b
    return a if b is None or a >= b else b


def _pack(marks: tuple[bytes | None, ...]) -> list[str | None]:
    """Promises as JSON: hex per hop count."""
    return [None if m is None else m.hex() for m in marks]


def _unpack(raw: list[str | None]) -> tuple[bytes | None, ...]:
    return tuple(None if m is None else bytes.fromhex(m) for m in raw)
