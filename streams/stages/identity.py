"""The identity stage: ``leadflow.events`` (keyed by device) -> ``leadflow.events.by-lead``.

A store keyed by the inbound key (``Event.person_key``: device or lead in its workspace)
holds the device's lead (once known) and its buffered pre-identification touches; the
identify or form submit that names the device releases the buffer, re-keyed by
``lead_key``, with the original event ids, and asks for the merges it implies (one
``MergeRequest`` per lead, sent before the event that caused it) (``processors.identity``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from leadflow.processors.bounds import BoundsTable, check_bounds
from leadflow.processors.derived import MergeRequest
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event, lead_key
from leadflow.processors.identity import (
    check_record_key,
    decode_identity_state,
    encode_identity_state,
    identity_link,
    identity_route,
)
from leadflow.processors.ordering import DEFAULT_LATENESS_MS, monotonic_received, record_key
from leadflow.processors.receive_bound import DEFAULT_MAX_AHEAD_MS, bounded_received
from leadflow.processors.sla_clock import ClockStep
from leadflow.schemas.codec import Codec
from leadflow.streams.control import RECEIVED, heartbeat_value, marker_record
from leadflow.streams.engine.stage import Record, Stage, TaskContext
from leadflow.streams.logs import get_logger
from leadflow.streams.stages.decoded import DecodedStore
from leadflow.streams.stages.routes import route
from leadflow.streams.stages.sla_clock import ClockSteps, StepSource
from leadflow.streams.topics import EVENTS, EVENTS_BY_LEAD, TopicSpec

log = get_logger(__name__)

STORE = "identities"
CLOCK = "received"  # the partition's R' (a store of its own: "identities" holds states only)
# Decoded device states a task keeps (least recently read first out): a device's events
# come in visits. A state is a few hundred bytes, up to ~50 KB for a device holding
# MAX_BUFFERED events and MAX_RECENT sends: 256 per partition task is at most ~13 MB.
DEVICE_CACHE = 256
CLOCK_KEY = b"r"
MARKER_STAGE = "identity"


@dataclass
class Markers:
    """The promises of one worker process's identity tasks, sent once per batch.

    Every task notes its partition's ``R'`` here as it moves; the first ``on_batch_end`` of a
    batch sends ONE marker per by-lead partition carrying every noted ``R'`` (all of a
    batch's records are processed before any ``on_batch_end``), in the batch's transaction.
    A task (re)built from its committed store notes the committed ``R'``: after an abort
    every task is rebuilt, so nothing of the aborted batch is ever promised.

    The lead stage (positions, to ``training-examples``) and the trainer (model switches,
    to ``events.by-lead``) send their promises the same way, with their own ``topic`` and
    ``stage``.
    """

    targets: int  # partitions of the topic: each gets every marker
    topic: TopicSpec = EVENTS_BY_LEAD
    stage: str = MARKER_STAGE
    pending: dict[int, int] = field(default_factory=dict)
    promised: dict[int, int] = field(default_factory=dict)

    def note(self, partition: int, received: int) -> None:
        """``partition``'s R' is now ``received`` (within the open batch)."""
        if self.promised.get(partition) != received:
            self.pending[partition] = received

    def reset(self, partition: int, committed: int | None) -> None:
        """A task was (re)built for ``partition`` from its committed ``R'``."""
        self.pending.pop(partition, None)
        self.promised.pop(partition, None)
        if committed is not None:
            self.pending[partition] = committed

    def flush(self, ctx: TaskContext) -> None:
        """Send what the batch noted to every by-lead partition (once per batch)."""
        if not self.pending:
            return
        value, headers = marker_record(self.stage, self.pending)
        for target in range(self.targets):
            ctx.send(self.topic, None, value, dict(headers), partition=target)
        self.promised.update(self.pending)
        self.pending.clear()


@dataclass
class AheadStamps:
    """Receive stamps and heartbeats bounded by their record's timestamp (loud, not silent).

    One per process. Counted every time a task bounds one (a batch processed again after
    an abort counts again); logged as ``identity.receive_ahead`` (warning) the first time
    per input partition and then at most once a minute per partition, with the count.
    """

    max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS
    count: int = 0
    logged: dict[int, float] = field(default_factory=dict)  # partition -> monotonic time
    every_s: float = 60.0

    def bound(self, record: Record, stamp: int, what: str) -> int:
        """``stamp`` as it counts for ``R'`` (processors/receive_bound.py); note a bounded one."""
        bounded = bounded_received(stamp, record.timestamp, self.max_ahead_ms)
        if bounded == stamp:
            return stamp
        self.count += 1
        now = time.monotonic()
        last = self.logged.get(record.partition)
        if last is None or now - last >= self.every_s:
            self.logged[record.partition] = now
            log.warning(
                "identity.receive_ahead",
                partition=record.partition,
                offset=record.offset,
                what=what,
                stamp=stamp,
                record_timestamp=record.timestamp,
                counts_as=bounded,
                max_ahead_ms=self.max_ahead_ms,
                total=self.count,
            )
        return bounded

    def counts(self) -> Mapping[str, int]:
        """For ``worker.progress``: how many stamps were bounded since the process started."""
        return {"receive_ahead": self.count}


class IdentityTask:
    """Identity for one partition of ``leadflow.events``.

    Every by-lead record it sends carries ``R'`` (header ``leadflow.r``): the running
    maximum of the partition's ``received_at`` values and heartbeats, each counted as at most
    its record's Kafka timestamp plus ``max_ahead_ms`` (:class:`AheadStamps`,
    ``processors/receive_bound.py``), stored with the state. At the end of a batch in which
    ``R'`` moved every by-lead partition hears
    "nothing with ``R' <`` this will come from partition *s*" (:class:`Markers`, in the
    same transaction as the records it follows).
    """

    def __init__(
        self,
        codec: Codec,
        bounds: BoundsTable,
        ctx: TaskContext,
        markers: Markers,
        lateness_ms: int = DEFAULT_LATENESS_MS,
        ahead: AheadStamps | None = None,
        steps: ClockSteps | None = None,
        step_ms: int = 0,
    ) -> None:
        self.codec = codec
        # A receive stamp or heartbeat counts as at most its record's timestamp plus the
        # allowed skew: a writer ahead of the log cannot hold R' in the future.
        self.ahead = ahead if ahead is not None else AheadStamps()
        # The lead stage's D: records a merge would otherwise forward are re-sent in order.
        self.lateness_ms = lateness_ms
        # Amounts and counts per workspace: an absurd one is a dead letter here, before any
        # state or report sees it (the collector refuses it too; this catches direct producers).
        self.bounds = bounds
        self.markers = markers
        self.devices = DecodedStore(
            STORE, encode_identity_state, decode_identity_state, DEVICE_CACHE
        )
        raw = ctx.get(CLOCK, CLOCK_KEY)
        self.received: int | None = int(raw) if raw else None
        markers.reset(ctx.partition, self.received)
        # Clock steps (processors/sla_clock.py): a workspace's event time reaches the
        # by-lead partitions its leads have no traffic on. 0 (the default here): none.
        self.steps = steps or ClockSteps(0)
        self.steps.reset(ctx.partition)
        self.step_source = StepSource(CLOCK, step_ms if steps is not None else 0)

    def _advance(self, ctx: TaskContext, received: int) -> int:
        moved = monotonic_received(self.received, received)
        if moved != self.received:
            self.received = moved
            ctx.put(CLOCK, CLOCK_KEY, str(moved).encode())
            self.markers.note(ctx.partition, moved)
        return moved

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        """Fold one inbound event into its device's identity; forward what it releases."""
        try:
            beat = heartbeat_value(record.headers)
            if beat is not None:
                self._advance(ctx, self.ahead.bound(record, beat, "heartbeat"))
                return
            inbound = self.codec.decode(record.value)
            if not isinstance(inbound, Event):
                raise LeadflowError(f"{type(inbound).__name__} is not an Event")
            check_record_key(record.key, inbound)
            check_bounds(inbound, self.bounds)
            assert record.key is not None  # check_record_key refuses a missing key
            stored = self.devices.get(ctx, record.key)
            state = stored[1] if stored else None
            received = self.ahead.bound(record, inbound.received_at, "received_at")
            new_state, routed = identity_route(
                state,
                inbound,
                received=monotonic_received(self.received, received),
                lateness_ms=self.lateness_ms,
            )
        except LeadflowError as exc:
            ctx.dead_letter(record, exc)
            return
        r_moved = self._advance(ctx, received)
        r_prime = str(r_moved).encode()
        link = identity_link(state, new_state, inbound)
        if link is not None:
            topic, key = route(link)
            ctx.send(topic, key, self.codec.encode(link))
        # Merge requests first: they sort before the event that caused them.
        records: list[Event | MergeRequest] = [*routed.merges, *routed.events]
        for out in records:
            assert out.lead_id is not None  # identity_route's contract
            ctx.send(EVENTS_BY_LEAD, lead_key(out.workspace_id, out.lead_id).encode(),
                     self.codec.encode(out), {RECEIVED: r_prime})  # fmt: skip
        for event in routed.events:
            step = self.step_source.step(ctx, event.workspace_id, event.occurred_at)
            if step is not None:
                at = record_key(event, r_moved, self.lateness_ms)
                self.steps.note(ctx.partition, ClockStep(event.workspace_id, step, at))
        if new_state is not None and new_state != state:
            self.devices.put(record.key, new_state)

    def on_batch_end(self, ctx: TaskContext) -> None:
        """Put the devices written, send the clock steps, then promise ``R'`` (once per batch).

        Steps first: a step reaches a by-lead partition before the promise that passes it.
        """
        self.devices.save(ctx)
        self.steps.flush(ctx)
        self.markers.flush(ctx)


def identity_stage(
    codec: Codec,
    bounds: BoundsTable,
    targets: int,
    lateness_ms: int = DEFAULT_LATENESS_MS,
    max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS,
    step_ms: int = 0,
) -> Stage:
    """The identity stage over ``leadflow.events``.

    ``targets``: the by-lead partitions; ``lateness_ms``: the lead stage's allowed lateness D;
    ``max_ahead_ms``: how far a receive stamp may be ahead of its record's timestamp
    (``LEADFLOW_ORDER_MAX_AHEAD_MS``, processors/receive_bound.py); ``step_ms``: the clock
    step (``LEADFLOW_DEADLINE_CLOCK_STEP_MS``, processors/sla_clock.py; 0: no steps).
    """
    markers = Markers(targets)  # one per process: its tasks share each batch's transaction
    steps = ClockSteps(targets)  # the same: sent once per batch, before the markers
    ahead = AheadStamps(max_ahead_ms)
    return Stage(
        "identity",
        EVENTS,
        (STORE, CLOCK),
        lambda ctx: IdentityTask(codec, bounds, ctx, markers, lateness_ms, ahead, steps, step_ms),
        counters=ahead.counts,
    )
