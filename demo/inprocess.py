"""The pipeline in one process: collector log -> identity -> events.by-lead -> lead, simulated.

The reference for what the worker must compute (issue 14, issue 17): the pure processors
run as the engine runs them, with every source of nondeterminism made explicit and driven
by a *schedule*:

- inbound events sit on ``partitions`` partitions by person key; each carries ``R'``
  (``received_at`` made monotonic per partition); after each record the identity stage
  tells every by-lead partition "no record with ``R' <`` the next one will come from me"
  (the collector's heartbeats and the identity stage's markers; a drained source promises
  everything);
- by-lead records wait in a :class:`~leadflow.processors.ordering.ReleaseBuffer` per
  partition and are released in key order once ripe; a partition whose lead waits for a
  merged lead's state releases nothing until that state arrives (``processors/merges``,
  "Holding"), and deadlines fire on the partition's own event-time clock (the newest
  ``occurred_at`` it released);
- direct records (merge transfers, forwards) travel in FIFO queues per (source, target)
  partition and are applied when the schedule delivers them; except that an event a
  redirect forwards (a record for a merged lead that sorted after its merge) keeps its
  release key and waits in the survivor partition's buffer for its turn (see "Forwards").

**Forwards** (issue 14). Records reach a merged lead from keys the merge's device does not
know (a second device with the same email, a CRM or lead-keyed event for the old id, a
device whose user id an alias absorbed) and are forwarded to the survivor when the merged
lead's partition releases them: at a time that depends on that partition's progress. So
a forwarded event is buffered at the survivor's partition under the key it had, and a
partition releases a record (key ``k``) only once no forward sorting before ``k`` can still
come: the **forward frontier** is the minimum over

- every partition's inbound bound (records not yet routed sort at or after ``L - D``),
- every buffered record that may still be forwarded (its lead is a redirect, or the merged
  side of a merge request for it sorts before it in the same buffer),
- every forward in flight;

and ``k`` must not sort after it. This is the instant form of lead-stage frontier markers;
with ``markers=True`` the reference runs that protocol instead: after its releases a
partition whose promise moved sends every partition (through the direct queues, behind its
forwards) a marker "no more hop-``h`` forwards sorting before ``p[h]``" for h = 1..8. Hop 1
is bounded by its inbound bound and its first buffered record that may be forwarded; hop
``h + 1`` by its first such hop-``h`` record and the hop-``h`` promises it has taken (what is
still on its way to it), so promises never wait on one of the same hop: no cycle. A
partition releases ``k`` once every partition has spoken and no promise it took sorts
before ``k``.
The released sequence is then the canonical one for every lead, forwarded records
included. A forwarded event is dropped by its merged lead if the identity stage re-sent it
(``processors/identity.py``, "In-flight records"): only that is conservative here.

The schedule picks, at every step, which enabled action runs next: deliver the next record
of inbound partition *s*, or the next direct record of queue *q*. Any schedule must give
the same derived events (tests/unit/demo/test_inprocess.py). With ``ordered=False`` the
lead stage applies records as they arrive, as the faust worker did before the release
order: the "before".
"""

from __future__ import annotations

import heapq
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from leadflow.processors.deadlines import next_deadline
from leadflow.processors.derived import IdentityLinked, LeadMerged, MergeRequest, OwnerAssigned
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event, lead_key
from leadflow.processors.frontier import first_forwards, gate, promise
from leadflow.processors.identity import IdentityState, identity_link, identity_route
from leadflow.processors.lead_state import Derived, LeadState
from leadflow.processors.merges import (
    Direct,
    LeadRecord,
    lead_advance,
    lead_record_step,
)
from leadflow.processors.model import ScoreModel
from leadflow.processors.ordering import (
    DEFAULT_LATENESS_MS,
    LowWatermark,
    ReleaseBuffer,
    ReleaseKey,
    monotonic_received,
    record_key,
    ripe,
)
from leadflow.processors.policy import Policy
from leadflow.processors.routing import RoutingState
from leadflow.schemas.codec import SingleObjectCodec

_CODEC = SingleObjectCodec()
END = 2**62  # a drained source's promise: nothing more will come
_LOWEST = -(2**63)


class _Buffer(ReleaseBuffer[tuple[LeadRecord, int]]):
    """The release buffer, with a look at what it holds (for the forward frontier)."""

    def head(self) -> tuple[ReleaseKey, bytes] | None:
        """The key and tiebreak of the record that would be released next."""
        return (self._heap[0][0], self._heap[0][1]) if self._heap else None

    def take(self, low_watermark: int) -> tuple[LeadRecord, int]:
        """Release the next record (the caller checked that it is ripe)."""
        if self.watermark is None or low_watermark > self.watermark:
            self.watermark = low_watermark
        return heapq.heappop(self._heap)[3]

    def held(self) -> list[tuple[ReleaseKey, LeadRecord, int]]:
        """Every buffered record with its key and hop count."""
        return [(k, item[0], item[1]) for k, _, _, item in self._heap]


Promise = tuple[ReleaseKey | None, ...]
"""A partition's forward promises, per hop count 1..MAX_HOPS (``None``: nothing yet)."""


@dataclass(frozen=True, slots=True)
class _Front:
    """A lead-stage frontier marker.

    ``source`` forwards nothing more at hop ``h`` sorting before ``marks[h - 1]``.
    """

    source: int
    marks: Promise


@dataclass(frozen=True, slots=True)
class _Forward:
    """An event a redirect forwarded, with the release key it had (it keeps its place)."""

    sort: ReleaseKey
    record: Event | MergeRequest
    hops: int


def partition_of(key: str, partitions: int) -> int:
    """The partition of a record key (any stable hash will do for the simulation)."""
    return zlib.crc32(key.encode()) % partitions


@dataclass
class Result:
    """What a run produced.

    Attributes:
        derived: per by-lead partition, the derived events in emission order.
        links: device links (``leadflow.identities``) in emission order.
        dead_letters: records that broke an invariant, with the reason.
        states: the final lead states by lead key.
        released: records the lead stage released from its buffers (per partition).
        held: how many times a partition held its releases for a merge.
    """

    derived: dict[int, list[Derived]] = field(default_factory=lambda: defaultdict(list))
    links: list[IdentityLinked] = field(default_factory=list)
    dead_letters: list[tuple[str, str]] = field(default_factory=list)
    states: dict[str, LeadState] = field(default_factory=dict)
    released: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    held: int = 0

    def all_derived(self) -> list[Derived]:
        """Every derived event, partition by partition."""
        return [d for p in sorted(self.derived) for d in self.derived[p]]

    def by_lead(self) -> dict[str, list[Derived]]:
        """Derived events grouped by lead id, each lead's in emission order."""
        out: dict[str, list[Derived]] = defaultdict(list)
        for d in self.all_derived():
            out[d.lead_id].append(d)
        return dict(out)

    def live_leads(self) -> set[str]:
        """Leads with a state that is not a redirect (each a person)."""
        return {s.lead_id for s in self.states.values() if s.merged_into is None and s.seen}

    def redirects(self) -> dict[str, str]:
        """Every merged lead id and its survivor (announced or not)."""
        return {s.lead_id: s.merged_into for s in self.states.values() if s.merged_into}

    def merged(self) -> list[LeadMerged]:
        """The merges, in emission order."""
        return [d for d in self.all_derived() if isinstance(d, LeadMerged)]


@dataclass
class _Partition:
    """One by-lead partition of the lead stage."""

    buffer: _Buffer
    marks: LowWatermark
    forwarded: list[tuple[ReleaseKey, bytes, int, Event | MergeRequest, int]] = field(
        default_factory=list
    )
    last: ReleaseKey | None = None  # the key of the last record released
    views: dict[int, Promise] = field(default_factory=dict)  # markers taken, per partition
    # Lead keys of the buffered records, and of the merged side of buffered merge requests:
    # a partition with no redirect and no merge among them may forward nothing (fast path).
    held_leads: Counter[str] = field(default_factory=Counter)
    merging: Counter[str] = field(default_factory=Counter)
    promised: Promise | None = None  # the last marker this partition sent
    routing: RoutingState = field(default_factory=RoutingState)
    clock: int = 0
    deadlines: list[tuple[int, str]] = field(default_factory=list)
    waiting: set[str] = field(default_factory=set)


@dataclass
class InProcess:
    """One simulated worker over ``partitions`` inbound and by-lead partitions."""

    policy: Policy
    partitions: int = 4
    lateness_ms: int = DEFAULT_LATENESS_MS
    model: ScoreModel | None = None
    ordered: bool = True
    markers: bool = False

    def run(self, events: Iterable[Event], schedule: Iterable[int] = ()) -> Result:
        """Run ``events`` (in collector order) through identity and lead stages.

        ``schedule`` picks the next action among the enabled ones at each step (modulo
        their number); when it runs out, the first enabled action runs.
        """
        return _Run(self, list(events)).go(iter(schedule))


class _Run:
    def __init__(self, config: InProcess, events: list[Event]) -> None:
        self.c = config
        n = config.partitions
        self.inbound: list[deque[Event]] = [deque() for _ in range(n)]
        for event in events:
            self.inbound[partition_of(event.person_key, n)].append(event)
        self.r_prime: list[int | None] = [None] * n
        self.identities: dict[str, IdentityState] = {}
        self.leads: dict[str, LeadState] = {}
        self.parts = [
            _Partition(_Buffer(config.lateness_ms), LowWatermark(sources=n)) for _ in range(n)
        ]
        self.direct: dict[tuple[int, int], deque[Direct | _Forward | _Front]] = defaultdict(deque)
        self._forwards = 0  # a counter that orders byte-identical forwards
        self._in_flight = 0  # forwards in the direct queues
        # The frontier, cached until a record is added anywhere, a lead becomes a redirect
        # or a forward is sent (releases alone only raise it: the cache stays a bound).
        self._epoch = 0
        self._cached: tuple[int, ReleaseKey | None] | None = None
        self.redirects: set[str] = set()  # lead keys of merged leads
        self.result = Result()
        for source, queue in enumerate(self.inbound):
            first = queue[0].received_at if queue else END
            for part in self.parts:
                part.marks.promise(source, first)

    # -- driving ---------------------------------------------------------------------------

    def go(self, schedule: Iterator[int]) -> Result:
        if self.c.markers:
            self._send_markers()
        while True:
            actions = self._enabled()
            if not actions:
                break
            pick = next(schedule, 0)
            kind, where = actions[pick % len(actions)]
            if kind == "inbound":
                assert isinstance(where, int)
                self._identity(where)
            else:
                assert isinstance(where, tuple)
                self._deliver(where)
            self._release_all()
        self._release_all()
        if self.c.ordered:
            stuck = sum(len(p.buffer) + len(p.forwarded) for p in self.parts)
            assert not stuck, f"{stuck} records never released"
        self.result.states = dict(self.leads)
        return self.result

    def _enabled(self) -> list[tuple[str, int | tuple[int, int]]]:
        actions: list[tuple[str, int | tuple[int, int]]] = [
            ("inbound", s) for s, q in enumerate(self.inbound) if q
        ]
        actions.extend(("direct", pair) for pair, q in sorted(self.direct.items()) if q)
        return actions

    # -- identity stage --------------------------------------------------------------------

    def _identity(self, source: int) -> None:
        event = self.inbound[source].popleft()
        received = monotonic_received(self.r_prime[source], event.received_at)
        self.r_prime[source] = received
        key = event.person_key
        try:
            before = self.identities.get(key)
            state, routed = identity_route(
                before, event, received=received, lateness_ms=self.c.lateness_ms
            )
        except LeadflowError as exc:
            self.result.dead_letters.append((event.event_id, str(exc)))
        else:
            link = identity_link(before, state, event)
            if link is not None:
                self.result.links.append(link)
            if state is not None:
                self.identities[key] = state
            records: list[Event | MergeRequest] = [*routed.merges, *routed.events]
            for record in records:
                assert record.lead_id is not None
                target = partition_of(
                    lead_key(record.workspace_id, record.lead_id), len(self.parts)
                )
                if self.c.ordered:
                    part = self.parts[target]
                    sort = record_key(record, received, self.c.lateness_ms)
                    # Equal keys (two merges one event caused) go in the order of their
                    # bytes, as the engine's release store orders them.
                    part.buffer.add(sort, (record, 0), _CODEC.encode(record))
                    self._held(part, record, 1)
                else:  # the faust worker: applied on arrival, deadlines on its clock
                    part = self.parts[target]
                    part.clock = max(part.clock, record.occurred_at)
                    self._apply(target, record, 0)
                    self._fire_deadlines(target)
        nxt = self.inbound[source][0].received_at if self.inbound[source] else END
        promise = max(nxt, received) if self.inbound[source] else END
        for part in self.parts:
            part.marks.promise(source, promise)

    # -- lead stage ------------------------------------------------------------------------

    def _release_all(self) -> None:
        if not self.c.ordered:
            return
        moved = True
        while moved:
            moved = False
            for index, part in enumerate(self.parts):
                # One record at a time: a record that starts a wait holds the rest, and
                # what it forwards moves the frontier.
                while not part.waiting:
                    picked = self._next(index)
                    if picked is None:
                        break
                    sort, record, hops = picked
                    moved = True
                    self.result.released[index] += 1
                    part.clock = max(part.clock, record.occurred_at)
                    self._apply(index, record, hops, sort)
                    self._fire_deadlines(index)
        if self.c.markers:
            self._send_markers()

    def _next(self, index: int) -> tuple[ReleaseKey, LeadRecord, int] | None:
        """Take the partition's next record if it is ripe and no forward can precede it."""
        part = self.parts[index]
        low = part.marks.low
        if low is None:
            return None
        head = part.buffer.head()
        fwd = part.forwarded[0][:2] if part.forwarded else None
        if head is None and fwd is None:
            return None
        from_buffer = fwd is None or (head is not None and head <= fwd)
        sort = head[0] if from_buffer and head is not None else fwd[0] if fwd else None
        assert sort is not None
        if not ripe(sort, low, self.c.lateness_ms):
            return None
        if self.c.markers:
            front = self._gate(index)
        else:
            if self._cached is None or self._cached[0] != self._epoch:
                self._cached = (self._epoch, self._frontier())
            front = self._cached[1]
            if front is None or front < sort:  # the cache may be low: look again
                self._cached = (self._epoch, self._frontier())
                front = self._cached[1]
        if front is None or front < sort:
            return None
        if from_buffer:
            record, hops = part.buffer.take(low)
        else:
            _, _, _, record, hops = heapq.heappop(part.forwarded)
        self._held(part, record, -1)
        return sort, record, hops

    def _held(self, part: _Partition, record: LeadRecord, change: int) -> None:
        """Count a record into (1) or out of (-1) the partition's buffers."""
        assert record.lead_id is not None
        if change > 0:
            self._epoch += 1
        lead = lead_key(record.workspace_id, record.lead_id)
        for counter, yes in (
            (part.held_leads, True),
            (part.merging, isinstance(record, MergeRequest) and lead_key(
                record.workspace_id, record.absorbed_id) == lead),
        ):  # fmt: skip
            if yes:
                counter[lead] += change
                if not counter[lead]:
                    del counter[lead]

    def _frontier(self) -> ReleaseKey | None:
        """No forward sorting before this key can still reach any partition (module doc)."""
        lows = [p.marks.low for p in self.parts]
        if any(low is None for low in lows):
            return None
        bounds = [self._inbound_bound(p) for p in self.parts]
        for part in self.parts:
            bounds.extend(self._may_forward(part).values())
        if self._in_flight:
            for queue in self.direct.values():
                bounds.extend(item.sort for item in queue if isinstance(item, _Forward))
        return min(b for b in bounds if b is not None)

    def _inbound_bound(self, part: _Partition) -> ReleaseKey | None:
        """Every record the identity stage has still to send here sorts at or after this."""
        low = part.marks.low
        return None if low is None else ReleaseKey(low - self.c.lateness_ms, _LOWEST, "", -1)

    def _may_forward(self, part: _Partition) -> dict[int, ReleaseKey]:
        """Per hop count, the first buffered event that may still be forwarded.

        That is: its lead is a redirect, or the merged side of a merge request for it sorts
        before it (``processors/frontier.py``).
        """
        if not part.merging and not any(lead in self.redirects for lead in part.held_leads):
            return {}
        held = [*part.buffer.held(), *((k, r, h) for k, _, _, r, h in part.forwarded)]
        rows: list[tuple[ReleaseKey, str, int, bool]] = []
        for sort, record, hops in sorted(held, key=lambda x: x[0]):
            assert record.lead_id is not None
            side = isinstance(record, MergeRequest) and record.lead_id == record.absorbed_id
            rows.append((sort, lead_key(record.workspace_id, record.lead_id), hops, side))
        return first_forwards(rows, self.redirects)

    # -- lead-stage frontier markers (markers=True) ---------------------------------------

    def _promise(self, index: int) -> Promise:
        """What partition ``index`` can promise now, per hop count (``processors/frontier``)."""
        part = self.parts[index]
        return promise(
            self._inbound_bound(part), self._may_forward(part), part.views, len(self.parts)
        )

    def _gate(self, index: int) -> ReleaseKey | None:
        """The lowest promise this partition has taken (``None`` until every one spoke)."""
        return gate(self.parts[index].views, len(self.parts))

    def _send_markers(self) -> None:
        """Each partition whose promise moved tells every partition (after its forwards)."""
        for index, part in enumerate(self.parts):
            promise = self._promise(index)
            if promise == part.promised:
                continue
            part.promised = promise
            for target in range(len(self.parts)):
                queue = self.direct[(index, target)]
                if queue and isinstance(queue[-1], _Front):
                    queue.pop()  # a newer promise replaces one not yet taken
                queue.append(_Front(index, promise))

    def _deliver(self, pair: tuple[int, int]) -> None:
        item = self.direct[pair].popleft()
        if isinstance(item, _Front):
            self.parts[pair[1]].views[item.source] = item.marks
            return
        if isinstance(item, _Forward):
            part = self.parts[pair[1]]
            tiebreak = _CODEC.encode(item.record)
            if part.last is not None and item.sort < part.last:
                raise AssertionError(f"forward {item.sort.event_id} came after its place")
            self._forwards += 1
            self._in_flight -= 1
            self._held(part, item.record, 1)
            heapq.heappush(
                part.forwarded, (item.sort, tiebreak, self._forwards, item.record, item.hops)
            )
            return
        self._apply(pair[1], item.record, item.hops)

    def _apply(
        self, index: int, record: LeadRecord, hops: int, sort: ReleaseKey | None = None
    ) -> None:
        part = self.parts[index]
        if sort is not None:
            part.last = sort
        assert record.lead_id is not None
        key = lead_key(record.workspace_id, record.lead_id)
        try:
            outcome = lead_record_step(
                self.leads.get(key), record, self.c.policy, self.c.model,
                routing=part.routing, hops=hops, forward_requests=self.c.ordered,
            )  # fmt: skip
        except LeadflowError as exc:
            ident = record.event_id if isinstance(record, Event) else record.merge_id
            self.result.dead_letters.append((ident, str(exc)))
            return
        for parked, error in outcome.failed:
            self.result.dead_letters.append((parked.event.event_id, str(error)))
        self._absorb(index, key, outcome.state, outcome.derived)
        for item in outcome.direct:
            target = partition_of(item.key, len(self.parts))
            if sort is not None and isinstance(item.record, Event | MergeRequest):
                # A redirect forwards a released event: it keeps its place (module doc).
                forward = _Forward(sort, item.record, item.hops)
                self.direct[(index, target)].append(forward)
                self._in_flight += 1
                self._epoch += 1
            else:
                self.direct[(index, target)].append(item)

    def _absorb(
        self, index: int, key: str, state: LeadState | None, derived: list[Derived]
    ) -> None:
        part = self.parts[index]
        self.result.derived[index].extend(derived)
        for obj in derived:
            if isinstance(obj, OwnerAssigned):
                part.routing = RoutingState(part.routing.cursors | {obj.pool: obj.cursor_after})
        if state is None:
            return
        self.leads[key] = state
        if state.merged_into is not None and key not in self.redirects:
            self.redirects.add(key)
            self._epoch += 1
        if state.awaiting and key not in part.waiting:
            part.waiting.add(key)
            self.result.held += 1
        elif not state.awaiting:
            part.waiting.discard(key)
        due = next_deadline(state)
        if due is not None:
            heapq.heappush(part.deadlines, (due, key))

    def _fire_deadlines(self, index: int) -> None:
        part = self.parts[index]
        while part.deadlines and part.deadlines[0][0] <= part.clock and not part.waiting:
            due, key = heapq.heappop(part.deadlines)
            state = self.leads.get(key)
            if state is None or next_deadline(state) != due:
                continue  # stale: the lead moved on since
            outcome = lead_advance(
                state, part.clock, self.c.policy, routing=part.routing, model=self.c.model
            )
            self._absorb(index, key, outcome.state, outcome.derived)
