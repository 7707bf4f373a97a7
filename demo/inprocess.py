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
  partition and are applied when the schedule delivers them.

The schedule picks, at every step, which enabled action runs next: deliver the next record
of inbound partition *s*, or the next direct record of queue *q*. Any schedule must give
the same derived events (tests/unit/demo/test_inprocess.py). With ``ordered=False`` the
lead stage applies records as they arrive, as the faust worker does: the "before".
"""

from __future__ import annotations

import heapq
import zlib
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from leadflow.processors.deadlines import next_deadline
from leadflow.processors.derived import IdentityLinked, LeadMerged, MergeRequest, OwnerAssigned
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event, lead_key
from leadflow.processors.identity import IdentityState, identity_link, identity_route
from leadflow.processors.lead_state import Derived, LeadState
from leadflow.processors.merges import Direct, LeadRecord, lead_advance, lead_record_step
from leadflow.processors.model import ScoreModel
from leadflow.processors.ordering import (
    DEFAULT_LATENESS_MS,
    LowWatermark,
    ReleaseBuffer,
    monotonic_received,
    record_key,
)
from leadflow.processors.policy import Policy
from leadflow.processors.routing import RoutingState
from leadflow.schemas.codec import SingleObjectCodec

_CODEC = SingleObjectCodec()
END = 2**62  # a drained source's promise: nothing more will come


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

    buffer: ReleaseBuffer[tuple[LeadRecord, int]]
    marks: LowWatermark
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
            _Partition(ReleaseBuffer(config.lateness_ms), LowWatermark(sources=n)) for _ in range(n)
        ]
        self.direct: dict[tuple[int, int], deque[Direct]] = defaultdict(deque)
        self.result = Result()
        for source, queue in enumerate(self.inbound):
            first = queue[0].received_at if queue else END
            for part in self.parts:
                part.marks.promise(source, first)

    # -- driving ---------------------------------------------------------------------------

    def go(self, schedule: Iterator[int]) -> Result:
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
        for index, part in enumerate(self.parts):
            low = part.marks.low
            # One record at a time: a record that starts a wait holds the rest.
            while low is not None and not part.waiting:
                released = part.buffer.pop_ripe(low)
                if released is None:
                    break
                record, hops = released
                self.result.released[index] += 1
                part.clock = max(part.clock, record.occurred_at)
                self._apply(index, record, hops)
                self._fire_deadlines(index)

    def _deliver(self, pair: tuple[int, int]) -> None:
        item = self.direct[pair].popleft()
        self._apply(pair[1], item.record, item.hops)

    def _apply(self, index: int, record: LeadRecord, hops: int) -> None:
        part = self.parts[index]
        assert record.lead_id is not None
        key = lead_key(record.workspace_id, record.lead_id)
        try:
            outcome = lead_record_step(
                self.leads.get(key), record, self.c.policy, self.c.model,
                routing=part.routing, hops=hops,
            )  # fmt: skip
        except LeadflowError as exc:
            ident = record.event_id if isinstance(record, Event) else record.merge_id
            self.result.dead_letters.append((ident, str(exc)))
            return
        for event, error in outcome.failed:
            self.result.dead_letters.append((event.event_id, str(error)))
        self._absorb(index, key, outcome.state, outcome.derived)
        for item in outcome.direct:
            target = partition_of(item.key, len(self.parts))
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
