"""The forward frontier's records on ``leadflow.events.by-lead`` (``processors/frontier.py``).

- A record a redirect forwards carries header ``leadflow.fwd`` = the hex of the release key
  it keeps (:func:`~leadflow.streams.engine.release.key_bytes` of the released record) and
  ``leadflow.hops``; the survivor's partition buffers it under that key.
- A **forward marker** (header ``leadflow.marker`` = ``forward``): value = JSON
  ``{"<by-lead partition>": [<hex or null per hop count>, ...]}``, "no more hop-``h``
  forwards sorting before ``p[h]`` will come from that partition". A list shorter than
  ``MAX_HOPS`` repeats its last entry (most promises are equal at every hop).

One :class:`FrontMarkers` per worker process sends its lead tasks' promises once per batch,
one marker per by-lead partition, in the batch's transaction and after its forwards: the
identity stage's :class:`~leadflow.streams.stages.identity.Markers`, with hop vectors.

**Promises handed over in memory** (issue 17, session 24; :func:`hand_over`). A marker
reaches its targets a transaction later, so a record waited one lead-stage round for the
promises of partitions its own worker owns. At the end of each batch the worker now also
hands its lead tasks' promises to each other in memory, in the batch's transaction. A
marker's place in the log is part of its meaning: it covers the forwards sent after it,
and its target reads every forward sent before it first. A promise handed over in memory
has no such place, so it is taken only where the target has read every forward its source
ever sent it: each forward carries header ``leadflow.fwd.from`` = ``"<source>:<n>"`` (the
n-th forward that source sent to this target, counted in the source's store when it is
sent) and the target counts what it read (``streams/engine/release.py``, store key ``c``).
Both counts commit with the forwards and the offsets, so an abort or a rebuild finds them
matching what the log holds. A forward is sent to the partition :func:`worker_partition`
names, the one its key hashes to, so the count names where it lands.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from leadflow.processors.derived import MergeRequest
from leadflow.processors.frontier import first_forwards, promise, relays
from leadflow.processors.merges import MAX_HOPS
from leadflow.streams.control import MARKER, ControlRecordError
from leadflow.streams.engine.release import StoredRelease, key_bytes
from leadflow.streams.engine.stage import TaskContext
from leadflow.streams.topics import EVENTS_BY_LEAD

FORWARD_MARKER = "forward"  # lead stage -> events.by-lead: per-hop forward promises
FORWARD_SORT = "leadflow.fwd"  # the release key a forwarded record keeps (hex)
FORWARD_FROM = "leadflow.fwd.from"  # "<source partition>:<n>": the n-th it sent this target
HAND_OVER_ROUNDS = 3  # a release may move its partition's promises: a few rounds, then stop

Marks = tuple[bytes | None, ...]


def forward_from(source: int, number: int) -> bytes:
    """The ``leadflow.fwd.from`` value of the ``number``-th forward ``source`` sent a target.

    Example:
        >>> forward_from(3, 12), parse_forward_from(forward_from(3, 12))
        (b'3:12', (3, 12))
    """
    return f"{source}:{number}".encode()


def parse_forward_from(value: bytes) -> tuple[int, int]:
    """Source partition and number of a ``leadflow.fwd.from`` header.

    Raises:
        ControlRecordError: not what :func:`forward_from` writes.
    """
    try:
        source, number = value.decode().split(":")
        parsed = int(source), int(number)
    except (ValueError, UnicodeDecodeError):
        raise ControlRecordError(f"{FORWARD_FROM}={value[:40]!r} is not <source>:<n>") from None
    if parsed[0] < 0 or parsed[1] < 1:
        raise ControlRecordError(f"{FORWARD_FROM}={value[:40]!r} is out of range")
    return parsed


def encode_fronts(promises: Mapping[int, Marks]) -> bytes:
    """A forward marker's value.

    Example:
        >>> encode_fronts({1: (b"a", b"b", b"b"), 0: (None, None)})
        b'{"0":[null],"1":["61","62"]}'
    """
    out: dict[str, list[str | None]] = {}
    for source, marks in sorted(promises.items()):
        packed = [None if m is None else m.hex() for m in marks]
        while len(packed) > 1 and packed[-1] == packed[-2]:
            packed.pop()
        out[str(source)] = packed
    return json.dumps(out, separators=(",", ":")).encode()


def parse_fronts(value: bytes) -> dict[int, Marks]:
    """The promises of a forward marker, ``MAX_HOPS`` per partition.

    Example:
        >>> parse_fronts(b'{"1":["61","62"]}')[1][:3]
        (b'a', b'b', b'b')

    Raises:
        ControlRecordError: not what :func:`encode_fronts` writes.
    """
    try:
        raw = json.loads(value)
        out: dict[int, Marks] = {}
        for source, packed in raw.items():
            marks = [None if m is None else bytes.fromhex(m) for m in packed]
            if not 1 <= len(marks) <= MAX_HOPS:
                raise ValueError(f"{len(marks)} promises")
            out[int(source)] = (*marks, *[marks[-1]] * (MAX_HOPS - len(marks)))
        return out
    except (ValueError, AttributeError, TypeError) as exc:
        raise ControlRecordError(f"forward marker {value[:60]!r}: {exc}") from None


@dataclass
class FrontMarkers:
    """One worker process's lead tasks' forward promises, sent once per batch.

    A task that took a record notes how to compute its promises; the first ``flush`` of a
    batch (after every record of the batch, so after every release) computes them once per
    noted task and sends one marker per by-lead partition with every promise that moved. A
    task (re)built from its committed store is noted again with nothing promised, so
    nothing of an aborted batch is ever promised (it is recomputed from what committed).
    """

    targets: int  # partitions of events.by-lead: each gets every marker
    noted: dict[int, Callable[[], Marks]] = field(default_factory=dict)
    promised: dict[int, Marks] = field(default_factory=dict)
    sent: int = 0  # marker records sent (one per target per batch that moved): a cost

    def note(self, partition: int, promises: Callable[[], Marks]) -> None:
        """``partition`` took a record in the open batch: its promises may have moved."""
        self.noted[partition] = promises

    def reset(self, partition: int, promises: Callable[[], Marks]) -> None:
        """A task was (re)built for ``partition``: what it promises next is sent."""
        self.promised.pop(partition, None)
        self.noted[partition] = promises

    def flush(self, ctx: TaskContext) -> None:
        """Send the promises that moved to every by-lead partition (once per batch)."""
        moved: dict[int, Marks] = {}
        for partition, promises in self.noted.items():
            marks = promises()
            if self.promised.get(partition) != marks:
                moved[partition] = marks
        self.noted.clear()
        if not moved:
            return
        value = encode_fronts(moved)
        headers = {MARKER: FORWARD_MARKER.encode()}
        for target in range(self.targets):
            ctx.send(EVENTS_BY_LEAD, None, value, dict(headers), partition=target)
        self.sent += self.targets
        self.promised.update(moved)


class Forwardable:
    """What one by-lead partition may still forward, for its promises.

    Its buffered records (lead, hop count, and whether each is a merge request for the lead
    it absorbs or for its survivor), its redirects (merged leads) and its *targets*
    (leads whose survivor-side request it released: only they receive forwards). The
    caller rebuilds it on every task build: redirects from the lead states, targets from
    the release store (``RELEASE`` keys ``t`` + lead), buffered records from the buffer.
    """

    def __init__(self, redirects: Iterable[str] = (), targets: Iterable[str] = ()) -> None:
        self.redirects = set(redirects)
        self.targets = set(targets)
        self.chains = self.redirects & self.targets  # survivors that merged away later
        self.held: dict[bytes, tuple[str, int, bool]] = {}  # sort -> lead, hops, absorbs
        self.leads: Counter[str] = Counter()  # leads of buffered records
        self.absorbing: Counter[str] = Counter()  # leads of buffered merged-side requests
        self.surviving: Counter[str] = Counter()  # leads of buffered survivor-side requests
        self._survives: set[bytes] = set()  # their sort bytes

    def add(self, sort: bytes, lead: str, hops: int, record: object) -> None:
        """Index a buffered record."""
        absorbs = isinstance(record, MergeRequest) and record.lead_id == record.absorbed_id
        survives = isinstance(record, MergeRequest) and record.lead_id == record.survivor_id
        self.held[sort] = (lead, hops, absorbs)
        self.leads[lead] += 1
        if absorbs:
            self.absorbing[lead] += 1
        if survives or hops:  # a forwarded record's lead is a survivor as well
            self.surviving[lead] += 1
            self._survives.add(sort)

    def remove(self, sort: bytes) -> None:
        """A buffered record was released."""
        entry = self.held.pop(sort, None)
        if entry is None:
            return
        lead, _, absorbs = entry
        survives = sort in self._survives
        self._survives.discard(sort)
        for counter, yes in ((self.leads, True), (self.absorbing, absorbs),
                             (self.surviving, survives)):  # fmt: skip
            if yes:
                counter[lead] -= 1
                if counter[lead] <= 0:
                    del counter[lead]

    def redirect(self, lead: str) -> None:
        """``lead`` merged away: it forwards what it is given from now on."""
        self.redirects.add(lead)
        if lead in self.targets:
            self.chains.add(lead)

    def target(self, lead: str) -> bool:
        """``lead``'s survivor-side request was released here; ``True`` if it is new."""
        if lead in self.targets:
            return False
        self.targets.add(lead)
        if lead in self.redirects:
            self.chains.add(lead)
        return True

    def first(self) -> dict[int, bytes]:
        """Per hop count, the release key of the first buffered record that may be forwarded."""
        if not self.absorbing and not any(lead in self.redirects for lead in self.leads):
            return {}  # the usual case: no redirect and no merge waits here
        rows = [(key_bytes(sort), *self.held[sort]) for sort in sorted(self.held)]
        return first_forwards(rows, self.redirects)

    def relays(self) -> bool:
        """Whether a forward received before the inbound bound may be forwarded again."""
        return relays(
            bool(self.chains), self.surviving, self.absorbing, self.targets, self.redirects
        )

    def promises(self, bound: bytes | None, views: Mapping[int, Marks], peers: int) -> Marks:
        """The partition's promises (``processors/frontier.py``)."""
        return promise(bound, self.first(), views, peers, self.relays())


class Promising(Protocol):
    """A lead task, as :func:`hand_over` sees it."""

    @property
    def release(self) -> StoredRelease:
        """Its release buffer: the views it took and its forward counts."""
        ...

    def promises_now(self) -> Marks:
        """Its forward promises as of now."""
        ...

    def release_now(self, ctx: TaskContext) -> None:
        """Release what the views taken made ripe."""
        ...


@dataclass
class HandOver:
    """What :func:`hand_over` did in one batch."""

    touched: list[int] = field(default_factory=list)  # partitions whose views moved
    taken: int = 0  # promises a target took in memory
    waiting: int = 0  # promises not taken: a forward from that source was still unread


def hand_over(
    tasks: Mapping[int, tuple[Promising, TaskContext]], rounds: int = HAND_OVER_ROUNDS
) -> HandOver:
    """Hand one process's lead tasks' promises to each other in memory, at a batch's end.

    ``tasks``: every lead task the process owns, by partition. Target ``p`` takes source
    ``q``'s promises only when it has read every forward ``q`` sent it (the counts in the
    module docstring). Each target whose views moved releases what became ripe; a release
    may move its own promises, so this runs up to ``rounds`` times, until nothing moves.
    What it misses, the markers in the log bring a round later, as before.
    """
    done = HandOver()
    last: dict[int, Marks] = {}
    for round_ in range(rounds):
        promises = {q: task.promises_now() for q, (task, _) in tasks.items()}
        if promises == last:
            break  # the releases moved no promise: nothing new to take
        last = promises
        moved = False
        for p, (task, ctx) in sorted(tasks.items()):
            took = False
            for q, marks in promises.items():
                if task.release.read.get(q, 0) != tasks[q][0].release.sent.get(p, 0):
                    done.waiting += round_ == 0
                    continue
                if task.release.take_front(q, marks, newest=True):
                    done.taken += 1
                    took = True
            if took:
                task.release_now(ctx)
                moved = True
                if p not in done.touched:
                    done.touched.append(p)
        if not moved:
            break
    return done
