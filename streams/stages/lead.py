"""The lead stage: ``leadflow.events.by-lead`` -> the derived contract topics.

Per partition of ``events.by-lead``:

- store ``leads``: lead id -> the lead's state (``processors.lead``);
- store ``routing``: the partition's round-robin cursors (``cursors``) and its event-time
  clock (``clock``: the newest ``occurred_at`` processed on this partition).

Deadlines (SLA, negative-label horizon) fire on the partition's own clock, right after the
record that moved it past them. Every lead of the partition lives in the partition's own
store, so a due deadline is applied where it is found, in the same transaction: no tick
records, and the points where deadlines fire are a function of the partition's records.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass

from leadflow.processors import derived as d
from leadflow.processors.deadlines import advance_time, next_deadline
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import Derived, LeadState, decode_lead_state, encode_lead_state
from leadflow.processors.model import ScoreModel
from leadflow.processors.pii import PiiFacts, keep_sealed
from leadflow.processors.policy import Policy
from leadflow.processors.routing import RoutingState
from leadflow.schemas.codec import Codec
from leadflow.streams.engine.keys import state_key
from leadflow.streams.engine.stage import Record, Stage, TaskContext, Unavailable
from leadflow.streams.logs import get_logger
from leadflow.streams.pii.keyring import KeyringError
from leadflow.streams.pii.vault import Vault
from leadflow.streams.stages.routes import route
from leadflow.streams.topics import EVENTS_BY_LEAD

log = get_logger(__name__)

LEADS = "leads"
PARTITION = "routing"  # the faust worker's name for this changelog, kept
CURSORS = b"cursors"
CLOCK = b"clock"


@dataclass(frozen=True)
class LeadDeps:
    """What every lead task shares: codec, policy, each workspace's model, the PII vault."""

    codec: Codec
    policy: Policy
    model: Callable[[str], ScoreModel]  # workspace id -> the model its leads are scored with
    vault: Vault | None


class LeadTask:
    """Lead state, scoring and deadlines for one partition of ``events.by-lead``.

    Built after the partition's stores are restored: it reads the clock and indexes every
    lead's next deadline (a heap of ``(due, lead id)`` hints; a hint is checked against
    the lead's state when it comes due, so stale ones are harmless).
    """

    def __init__(self, deps: LeadDeps, ctx: TaskContext) -> None:
        self.deps = deps
        raw_clock = ctx.get(PARTITION, CLOCK)
        self.clock = int(raw_clock) if raw_clock else 0
        self.heap: list[tuple[int, str]] = []
        for key, value in ctx.items(LEADS):
            due = next_deadline(decode_lead_state(value))
            if due is not None:
                self.heap.append((due, key.decode()))
        heapq.heapify(self.heap)

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        """Apply one by-lead record to its lead; then fire what the clock made due."""
        try:
            obj = self.deps.codec.decode(record.value)
            if isinstance(obj, d.DeadlineTick):
                return  # written by the faust worker; deadlines now fire on the clock
            if not isinstance(obj, Event):
                raise LeadflowError(f"{type(obj).__name__} is not an Event")
            if record.key is None:
                raise LeadflowError("a by-lead record without a key")
            raw = ctx.get(LEADS, record.key)
            state = decode_lead_state(raw) if raw else None
            event, facts = self._keep_pii_sealed(obj)
            new_state, out = lead_step(
                state,
                event,
                self.deps.policy,
                self.deps.model(event.workspace_id),
                routing=self._routing(ctx),
                facts=facts,
            )
        except LeadflowError as exc:
            ctx.dead_letter(record, exc)
            return
        self._emit(ctx, out)
        self._store(ctx, record.key.decode(), new_state)
        if event.occurred_at > self.clock:
            self.clock = event.occurred_at
            self._fire_due(ctx)

    def on_batch_end(self, ctx: TaskContext) -> None:
        """Store the clock once per batch (deadlines fired per record, as it moved)."""
        raw = ctx.get(PARTITION, CLOCK)
        if (int(raw) if raw else 0) != self.clock:
            ctx.put(PARTITION, CLOCK, str(self.clock).encode())

    def _fire_due(self, ctx: TaskContext) -> None:
        while self.heap and self.heap[0][0] <= self.clock:
            _, lead_id = heapq.heappop(self.heap)
            raw = ctx.get(LEADS, state_key(lead_id))
            if raw is None:
                continue  # erased since
            state = decode_lead_state(raw)
            due = next_deadline(state)
            if due is None:
                continue
            if due > self.clock:
                heapq.heappush(self.heap, (due, lead_id))  # moved on since the hint
                continue
            new_state, out = advance_time(
                state,
                self.clock,
                self.deps.policy,
                routing=self._routing(ctx),
                model=self.deps.model(state.workspace_id),
            )
            self._emit(ctx, out)
            self._store(ctx, lead_id, new_state)

    def _store(self, ctx: TaskContext, lead_id: str, state: LeadState) -> None:
        ctx.put(LEADS, state_key(lead_id), encode_lead_state(state))
        due = next_deadline(state)
        if due is not None:
            heapq.heappush(self.heap, (due, lead_id))

    def _emit(self, ctx: TaskContext, out: list[Derived]) -> None:
        """Send the derived events; move the routing cursors their assignments moved."""
        for obj in out:
            topic, key = route(obj)
            ctx.send(topic, key, self.deps.codec.encode(obj))
            if isinstance(obj, d.OwnerAssigned):
                cursors = self._routing(ctx).cursors | {obj.pool: obj.cursor_after}
                ctx.put(PARTITION, CURSORS, json.dumps(cursors, sort_keys=True).encode())

    @staticmethod
    def _routing(ctx: TaskContext) -> RoutingState:
        raw = ctx.get(PARTITION, CURSORS)
        return RoutingState(cursors=json.loads(raw) if raw else {})

    def _keep_pii_sealed(self, inbound: Event) -> tuple[Event, PiiFacts | None]:
        """The event with PII still sealed, and the facts scoring needs from its plaintext."""
        if self.deps.vault is None:
            return inbound, None
        try:
            opened = self.deps.vault.open(inbound)
        except KeyringError as exc:
            # The key topic is out of reach (a broker outage): not this record's fault.
            raise Unavailable(f"PII keys: {exc}") from exc
        return keep_sealed(inbound, opened)


def lead_stage(deps: LeadDeps) -> Stage:
    """The lead stage over ``leadflow.events.by-lead``."""
    return Stage("lead", EVENTS_BY_LEAD, (LEADS, PARTITION), lambda ctx: LeadTask(deps, ctx))
