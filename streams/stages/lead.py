"""The lead stage: ``leadflow.events.by-lead`` -> the derived contract topics.

Per partition of ``events.by-lead``:

- store ``leads``: the lead's state under the record key ``lead_key(workspace, lead id)``
  (``processors.lead_state``); every by-lead record (event, merge request, merge transfer)
  goes through ``processors.merges.lead_record_step``;
- store ``routing``: per workspace, the partition's round-robin cursors and its event-time
  clock (the newest ``occurred_at`` of that workspace released on this partition), so one
  workspace's traffic never moves another's owners or deadlines;
- store ``release``: the records of the identity stage that wait for their turn, and every
  inbound partition's promise (``streams/engine/release.py``).

**Release order.** A record from the identity stage carries ``R'`` (header ``leadflow.r``);
it waits in the release buffer and is applied once every inbound partition has promised
past it (the identity stage's markers), one at a time in ``processors.ordering.record_key``
order: the sequence is the sorted log whatever the interleaving, batch boundaries, crashes
or worker count. While a lead waits for a merged lead's state (``awaiting``) the partition
releases nothing (``processors/merges.py``, "Holding").

Deadlines (SLA, negative-label horizon) fire on the clock of the lead's workspace on the
lead's partition, right after the released record or *clock step* that moved it past them
(not while the partition holds). Clock steps (``streams/stages/sla_clock.py``) carry the
workspace's event time from the other by-lead partitions: the identity stage sends them,
they wait in the partition's order like records and move the clock when their turn comes.
Every lead of the partition lives in the partition's own store, so a due deadline is
applied where it is found, in the same transaction: the points where deadlines fire are a
function of the log.

**Quiet checks are not written.** Many deadlines that fire are a lead's daily decay check
that moves nothing (no score emitted, no window sampled): it only moves ``rescore_due_at``
by a day. Writing that state cost an encode, a store write and a changelog record per lead
per day of event time (879 of the 4,233 lead-state writes on the bench's input,
docs/benchmarks.md, session 8). Such a check is kept in memory (``LeadTask.quiet``: the
stored bytes it applies to and the new due time) and the store keeps the older state. A
quiet check is a pure function of the state and its due time and changes nothing else, so
a state read from the store is *caught up*: every check due by the workspace's clock that
would be quiet is applied on read, on write and when a task is built (``_caught_up``). A
task rebuilt after a crash, an abort or a rebalance therefore holds exactly the states and
deadline hints the task before it held, and the stored bytes are a function of the log up
to such checks.

Records for other leads go back to ``events.by-lead`` keyed by their lead. A merged lead's
transfer to its survivor is a *direct* record, applied when it arrives (as are records
written before the release order: no ``leadflow.r``). **Forwards** (issue 14): an event,
or a survivor's merge request, that a redirect forwards when it is released keeps its
release key (header ``leadflow.fwd``) and its hop count (``leadflow.hops``) and waits in
the survivor partition's buffer for its turn, so records that reached a merged lead from
other keys (a second device with the same email, lead-keyed events for the old id) are
applied in event-time order. A partition releases a record only once every by-lead
partition has promised that no forward sorting before it can still come: after each
batch whose promises moved, a *forward marker* with per-hop promises goes to every by-lead
partition (``processors/frontier.py``, ``streams/engine/frontier.py``; the reference is
``demo/inprocess.py`` with ``markers=True``). With ``LeadDeps.forwards`` = 0 (tests of one
stage alone) forwards are applied on arrival, as before.

**The model switch** (with ``trainers > 0``; ``processors/ordering.py``, "the model switch").
Every training example it sends carries the position of the record it came from (header
``leadflow.at``), and at the end of a batch in which its promise moved it tells every
partition of ``training-examples`` "no example below P will come from by-lead partition q"
(marker ``lead``). The trainer's *model markers* (a signed snapshot and the position it
takes over at) wait in the release buffer like records and, once released, become the
workspace's model on this partition (store ``routing``, key ``["<workspace>","model"]``); the
trainers' promises (marker ``trainer``) hold back every record at or after a position a
switch may still come for. So which snapshot scores a record is a function of the log.
"""

from __future__ import annotations

import heapq
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from leadflow.processors import derived as d
from leadflow.processors.deadlines import next_deadline, quiet_through
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event, scoped_key
from leadflow.processors.evolve import evolve
from leadflow.processors.lead_state import Derived, LeadState, decode_lead_state, encode_lead_state
from leadflow.processors.merges import (
    Direct,
    LeadOutcome,
    LeadRecord,
    check_lead_record_key,
    lead_advance,
    lead_record_step,
)
from leadflow.processors.model import ScoreModel, SnapshotError
from leadflow.processors.ordering import DEFAULT_LATENESS_MS, WatermarkViolation, record_key
from leadflow.processors.pii import PiiFacts, keep_sealed
from leadflow.processors.policy import Policy
from leadflow.processors.routing import RoutingState
from leadflow.schemas.codec import Codec
from leadflow.streams.control import (
    IDENTITY_MARKER,
    LEAD_MARKER,
    MARKER,
    MODEL_MARKER,
    POSITION,
    RECEIVED,
    SWITCH,
    TRAINER_MARKER,
    VERSION,
    ControlRecordError,
    header,
    int_header,
    take_marker,
)
from leadflow.streams.engine.frontier import (
    FORWARD_FROM,
    FORWARD_MARKER,
    FORWARD_SORT,
    Forwardable,
    FrontMarkers,
    forward_from,
    hand_over,
    parse_forward_from,
    parse_fronts,
)
from leadflow.streams.engine.loop import PARKED_EVENT, RESUMED_BY, dlq_headers
from leadflow.streams.engine.release import (
    PENDING,
    TARGETS,
    Duplicates,
    Held,
    StoredRelease,
    bound_bytes,
    key_bytes,
    sort_bytes,
    switch_sort,
)
from leadflow.streams.engine.stage import Record, Stage, Task, TaskContext, Unavailable
from leadflow.streams.logs import get_logger
from leadflow.streams.pii.keyring import KeyringError
from leadflow.streams.pii.vault import Vault
from leadflow.streams.stages.decoded import DecodedStore
from leadflow.streams.stages.identity import Markers
from leadflow.streams.stages.routes import route
from leadflow.streams.stages.sla_clock import CLOCK_MARKER, PendingSteps, decode_steps
from leadflow.streams.topics import DLQ, EVENTS_BY_LEAD, TRAINING_EXAMPLES, worker_partition

log = get_logger(__name__)

# Decoded lead states a task keeps (least recently read first out): ~15 KB each in memory,
# so 256 per partition task is ~4 MB, ~48 MB for a worker owning 12 partitions.
STATE_CACHE = 256

LEADS = "leads"
PARTITION = "routing"  # the faust worker's name for this changelog, kept
RELEASE = "release"  # unreleased records and the inbound partitions' promises
HOPS_HEADER = "leadflow.hops"
WAIT_REPORT_SECONDS = 30.0  # how often a partition logs its records' release wait


def cursors_key(workspace_id: str) -> bytes:
    """The routing store key of one workspace's round-robin cursors."""
    return scoped_key(workspace_id, "cursors").encode()


def model_key(workspace_id: str) -> bytes:
    """The routing store key of the snapshot one workspace's leads are scored with here."""
    return scoped_key(workspace_id, "model").encode()


def clock_key(workspace_id: str) -> bytes:
    """The routing store key of one workspace's event-time clock on the partition."""
    return scoped_key(workspace_id, "clock").encode()


def hops_of(headers: Mapping[str, bytes]) -> int:
    """How many redirects forwarded a by-lead record (0 when not forwarded).

    Example:
        >>> hops_of({"leadflow.hops": b"2"}), hops_of({})
        (2, 0)
    """
    raw = headers.get(HOPS_HEADER)
    try:
        return int(raw) if raw else 0
    except ValueError:
        raise LeadflowError(f"header {HOPS_HEADER}={raw!r} is not a number") from None


@dataclass(frozen=True)
class LeadDeps:
    """What every lead task shares: codec, policy, each workspace's model, the PII vault.

    With ``trainers > 0`` (the worker) ``model`` is only the prior: a workspace's leads are
    scored with the snapshot its model markers switched to on the partition, verified with
    ``model_key``. With 0 (tests of the lead stage alone) ``model`` is used as it is.
    """

    codec: Codec
    policy: Policy
    model: Callable[[str], ScoreModel]  # workspace id -> the model its leads are scored with
    vault: Vault | None
    sources: int = 1  # partitions of leadflow.events: each must promise before a release
    lateness_ms: int = DEFAULT_LATENESS_MS  # the allowed lateness D
    trainers: int = 0  # partitions of leadflow.training-examples: each promises switches
    model_key: bytes = b""  # verifies the snapshots of model markers
    switch_records: int = 0  # M: the switch gate (LEADFLOW_MODEL_SWITCH_RECORDS)
    forwards: int = 0  # partitions of events.by-lead promising forwards (0: applied on arrival)
    # Where the producer puts a by-lead key (forwards are sent to the partition it names).
    partition_of: Callable[[bytes, int], int] = worker_partition
    # What the process's lead tasks count (worker.progress): watermark violations, parked
    # events dead-lettered when their lead resumed, records written twice buffered once.
    counts: Counter[str] = field(default_factory=Counter, compare=False)
    duplicates: Duplicates = field(default_factory=Duplicates, compare=False)

    def counters(self) -> dict[str, int]:
        """The lead tasks' counts and the vault's, for ``worker.progress``."""
        counts = {"watermark_violations": 0, "parked_dead_letters": 0, "fronts_in_memory": 0,
                  "fronts_waiting_for_forward": 0, "forward_count_gaps": 0, **self.counts,
                  "release_duplicates": self.duplicates.count}  # fmt: skip
        return counts | (self.vault.counts() if self.vault is not None else {})


@dataclass
class _Clock:
    """One workspace's event-time clock on the partition and its leads' next deadlines."""

    at: int = 0
    heap: list[tuple[int, bytes]] = field(default_factory=list)  # (due, lead state key) hints


class LeadTask:
    """Lead state, scoring and deadlines for one partition of ``events.by-lead``.

    Built after the partition's stores are restored: it reads every workspace's clock and
    indexes every lead's next deadline. A lead has at most one live hint, ``due[key]``: a
    write that moves its deadline pushes a new one and the old one is skipped when popped,
    without decoding the state. So deadlines fire in order of each lead's current deadline,
    in a long-running task as in one just rebuilt from the store (a stale hint firing its
    lead early would make the order, and the owners it assigns, depend on the task's age).
    """

    def __init__(
        self,
        deps: LeadDeps,
        ctx: TaskContext,
        markers: Markers | None = None,
        fronts: FrontMarkers | None = None,
    ) -> None:
        self.deps = deps
        # The process's promises to the trainers (one marker per trainer partition per batch).
        self.markers = markers or Markers(deps.trainers, TRAINING_EXAMPLES, LEAD_MARKER)
        # ... and its forward promises to every by-lead partition.
        self.fronts = fronts or FrontMarkers(deps.forwards)
        self.clocks: dict[str, _Clock] = {}
        self.due: dict[bytes, int] = {}  # lead state key -> the due of its one live hint
        # Lead state key -> (what the checks apply to: the stored bytes, or the state written
        # in this batch; rescore_due_at after the quiet checks applied to it).
        self.quiet: dict[bytes, tuple[bytes | LeadState, int | None]] = {}
        self.leads = DecodedStore(LEADS, encode_lead_state, decode_lead_state, STATE_CACHE)
        self.quiet_checks = 0  # catch-ups since the last report (a metric only)
        self.waiting: set[bytes] = set()  # leads waiting for a merged lead's state
        redirects: list[str] = []
        for key, value in ctx.items(LEADS):
            state = decode_lead_state(value)
            due = next_deadline(state)
            if due is not None:
                self._clock(ctx, state.workspace_id).heap.append((due, key))
                self.due[key] = due
            if state.awaiting:
                self.waiting.add(key)
            if state.merged_into is not None:
                redirects.append(key.decode())
        for clock in self.clocks.values():
            heapq.heapify(clock.heap)
        self.moved: set[str] = set()
        self.release = StoredRelease(
            ctx,
            RELEASE,
            deps.sources,
            deps.lateness_ms,
            trainers=deps.trainers,
            switch_records=deps.switch_records,
            peers=deps.forwards,
            duplicates=deps.duplicates,
        )
        self.steps = PendingSteps(ctx, PARTITION)  # clock steps waiting for their turn
        self.models: dict[str, ScoreModel] = {}  # switched to on this partition (store: routing)
        if deps.trainers:
            for key, raw in ctx.items(PARTITION):
                workspace, name = json.loads(key)
                if name == "model":
                    model = self._restore(raw, workspace)
                    if model is not None:
                        self.models[workspace] = model
        self.position: int | None = None  # of the record being applied (examples carry it)
        if deps.trainers:
            self.markers.reset(ctx.partition, self.release.promised)
        self._decoded: dict[bytes, LeadRecord] = {}  # buffered records, decoded on arrival
        # What this partition may still forward (its promises); rebuilt from the stores.
        targets = [k[len(TARGETS) :].decode() for k, _ in ctx.items(RELEASE, TARGETS)]
        self.forwardable = Forwardable(redirects, targets)
        if deps.forwards:
            for key, raw in ctx.items(RELEASE, PENDING):
                sort = key[len(PENDING) :]
                held = Held.decode(raw)
                try:
                    obj: object = deps.codec.decode(held.value)
                except LeadflowError:
                    obj = None  # dead-lettered when released
                self.forwardable.add(sort, held.key.decode(), self.release.hops_of(sort), obj)
            self.fronts.reset(ctx.partition, self.promises_now)
        self._cause: Record | None = None  # the last record taken (what a release names)
        # How long records waited for their turn (a metric only: outputs never see it).
        self._arrived: dict[bytes, float] = {}
        self._waits: list[float] = []
        self._report_at = time.monotonic() + WAIT_REPORT_SECONDS
        # The store keeps no quiet check: move every hint past the ones its clock reached,
        # as the task before this one had (see "Quiet checks are not written").
        for ws, clock in sorted(self.clocks.items()):
            self._fire_due(ctx, None, ws, clock, fire=False)

    def _clock(self, ctx: TaskContext, workspace_id: str) -> _Clock:
        clock = self.clocks.get(workspace_id)
        if clock is None:
            raw = ctx.get(PARTITION, clock_key(workspace_id))
            clock = self.clocks[workspace_id] = _Clock(int(raw) if raw else 0)
        return clock

    def model(self, workspace_id: str) -> ScoreModel:
        """The model a workspace's leads are scored with now, on this partition."""
        if self.deps.trainers:
            model = self.models.get(workspace_id)
            if model is not None:
                return model
        return self.deps.model(workspace_id)

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        """Take one by-lead record: a marker, a record to release in order, or a direct one."""
        headers = record.headers
        self._cause = record
        if MARKER in headers:
            self._take_marker(ctx, record)
        elif RECEIVED in headers and HOPS_HEADER not in headers:
            self._buffer(ctx, record)
        elif FORWARD_SORT in headers and self.deps.forwards:
            self._count_forward(record)
            self._buffer(ctx, record, forwarded=True)
        else:
            # A direct record (a transfer, an event forwarded through a redirect) is applied
            # on arrival; so is a record written before the release order (no R').
            obj = self._decode(ctx, record)
            if obj is not None:
                self.position = self.release.position
                self._step(ctx, record, obj, clock=not isinstance(obj, d.LeadTransfer)
                           and HOPS_HEADER not in headers)  # fmt: skip
        self._release(ctx, record)
        self._released(ctx)

    def release_now(self, ctx: TaskContext) -> None:
        """Release what promises handed over in memory made ripe (``frontier.hand_over``)."""
        cause = self._cause or Record(EVENTS_BY_LEAD.name, ctx.partition, -1, None, b"")
        self._release(ctx, cause)
        self._released(ctx)

    def _released(self, ctx: TaskContext) -> None:
        """Note the promises a release may have moved (forwards, the trainers')."""
        if self.deps.forwards:
            self.fronts.note(ctx.partition, self.promises_now)
        if self.deps.trainers:
            # A pending clock step's deadlines send examples at its position.
            promise = self.release.promise_trainer(bool(self.waiting), self.steps.head_at)
            if promise is not None:
                self.markers.note(ctx.partition, promise)

    def on_batch_end(self, ctx: TaskContext) -> None:
        """Store the leads, clocks and promises that moved; promise the trainers (per batch)."""
        self._save(ctx)
        for ws in sorted(self.moved):
            ctx.put(PARTITION, clock_key(ws), str(self.clocks[ws].at).encode())
        self.moved.clear()
        self.steps.flush(ctx)
        if self.deps.trainers:
            self.markers.flush(ctx)
        if self.deps.forwards:
            self.fronts.flush(ctx)
        self.release.flush(ctx)
        now = time.monotonic()
        if now >= self._report_at:
            self._report_at = now + WAIT_REPORT_SECONDS
            self._report(ctx.partition)

    def _report(self, partition: int) -> None:
        """Log how long released records waited in the buffer since the last report."""
        waits, self._waits = sorted(self._waits), []
        if not waits and not len(self.release):
            return
        log.info(
            "lead.release_wait",
            partition=partition,
            released=len(waits),
            p50_ms=round(waits[len(waits) // 2] * 1000, 1) if waits else None,
            p99_ms=round(waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000, 1)
            if waits
            else None,
            max_ms=round(waits[-1] * 1000, 1) if waits else None,
            waiting=len(self.release),
            low_watermark=self.release.low,
            holding=len(self.waiting),
            forward_markers=self.fronts.sent,  # marker records this process sent so far
            quiet_checks=self.quiet_checks,  # leads whose quiet decay checks were kept in memory
            redundant_steps=self.steps.redundant,  # clock step copies not kept (since built)
        )
        self.quiet_checks = 0

    # -- release order ---------------------------------------------------------------------

    def _take_marker(self, ctx: TaskContext, record: Record) -> None:
        stage = header(record.headers, MARKER)
        if stage == MODEL_MARKER.encode():
            self._buffer_switch(ctx, record)
            return
        if stage == CLOCK_MARKER.encode():
            try:
                self.steps.add(decode_steps(record.value), lambda ws: self._clock(ctx, ws).at)
            except LeadflowError as exc:
                ctx.dead_letter(record, exc)
            return
        if stage == FORWARD_MARKER.encode():
            self._take_fronts(ctx, record)
            return
        take_marker(
            record.headers,
            record.value,
            {
                IDENTITY_MARKER: (self.release.promise, self.deps.sources),
                # Without trainers (lead-stage tests) the feed's models score: not waited for.
                TRAINER_MARKER: (self.release.promise_models, self.deps.trainers)
                if self.deps.trainers
                else None,
            },
            reject=lambda exc: ctx.dead_letter(record, exc),
            who="lead",
        )

    def _take_fronts(self, ctx: TaskContext, record: Record) -> None:
        """Take by-lead partitions' forward promises (``streams/engine/frontier.py``)."""
        if not self.deps.forwards:
            return  # a stage alone (tests): forwards are applied on arrival
        try:
            fronts = parse_fronts(record.value)
        except LeadflowError as exc:
            ctx.dead_letter(record, exc)
            return
        for source, marks in fronts.items():
            if source < self.deps.forwards:
                self.release.take_front(source, marks)
            else:
                log.warning("lead.marker_unknown_source", stage=FORWARD_MARKER, source=source,
                            sources=self.deps.forwards)  # fmt: skip

    def _count_forward(self, record: Record) -> None:
        """Count a forward read from its source (what in-memory promises wait for)."""
        raw = record.headers.get(FORWARD_FROM)
        if raw is None:
            return  # sent before forwards were counted
        try:
            source, number = parse_forward_from(raw)
        except LeadflowError as exc:
            # The record itself still has its place (leadflow.fwd); only the count is lost,
            # so no promise from that source is ever taken in memory again: loud, not fatal.
            self.deps.counts["forward_count_gaps"] += 1
            log.error("lead.forward_count_invalid", offset=record.offset, error=str(exc))
            return
        gap = self.release.count_read(source, number)
        if gap:
            self.deps.counts["forward_count_gaps"] += 1
            log.error("lead.forward_count_gap", offset=record.offset, source=source,
                      number=number, gap=gap)  # fmt: skip

    def promises_now(self) -> tuple[bytes | None, ...]:
        """This partition's forward promises now (``processors/frontier.py``)."""
        low = self.release.low
        bound = None if low is None else bound_bytes(low, self.deps.lateness_ms)
        return self.forwardable.promises(bound, self.release.views, self.deps.forwards)

    def _buffer_switch(self, ctx: TaskContext, record: Record) -> None:
        """Keep a model marker until its switch position is released."""
        if not self.deps.trainers:
            return
        try:
            at = int_header(record.headers, SWITCH)
            version = int_header(record.headers, VERSION)
            if at is None or version is None or not record.key:
                raise ControlRecordError("a model marker needs a key, a switch and a version")
            sort = switch_sort(at, record.key.decode(), version)
        except (LeadflowError, UnicodeDecodeError) as exc:
            ctx.dead_letter(record, LeadflowError(f"model marker: {exc}"))
            return
        self.release.add_switch(ctx, sort, Held(record.key, record.value, record.offset))

    def _switch(self, ctx: TaskContext, held: Held) -> None:
        """A released model marker: its snapshot scores the workspace's leads from here on."""
        workspace = held.key.decode()
        model = self._restore(held.value, workspace)
        if model is None:
            return  # logged; the previous model stays (the same on every replay)
        self.models[workspace] = model
        ctx.put(PARTITION, model_key(workspace), held.value)
        log.info("lead.model_switch", partition=ctx.partition, workspace_id=workspace,
                 version=model.version, at=self.release.released)  # fmt: skip

    def _restore(self, raw: bytes, workspace: str | None) -> ScoreModel | None:
        try:
            model = ScoreModel.restore(raw, self.deps.model_key)
        except SnapshotError as exc:
            log.error("model.snapshot_rejected", workspace_id=workspace, reason=str(exc))
            return None
        if workspace is not None and model.workspace_id != workspace:
            log.error("model.snapshot_rejected", workspace_id=workspace,
                      reason=f"snapshot of workspace {model.workspace_id!r}")  # fmt: skip
            return None
        return model

    def _buffer(self, ctx: TaskContext, record: Record, *, forwarded: bool = False) -> None:
        """Check a record from the identity stage (or a forward) and keep it until it is ripe."""
        obj = self._decode(ctx, record)
        if obj is None:
            return
        if not isinstance(obj, Event | d.MergeRequest):
            what = FORWARD_SORT if forwarded else RECEIVED
            ctx.dead_letter(record, LeadflowError(f"{type(obj).__name__} carries {what}"))
            return
        assert record.key is not None  # _decode checked it
        hops = 0
        try:
            if forwarded:
                hops = hops_of(record.headers)
                if hops < 1:
                    raise LeadflowError(f"a forward needs {HOPS_HEADER} >= 1")
                kept = bytes.fromhex(record.headers[FORWARD_SORT].decode())
                if key_bytes(kept) != kept:
                    raise LeadflowError(f"{FORWARD_SORT} is not a release key")
                sort = kept + record.value
            else:
                received = int(record.headers[RECEIVED])
                sort = sort_bytes(record_key(obj, received, self.deps.lateness_ms), record.value)
        except (ValueError, LeadflowError) as exc:
            ctx.dead_letter(record, LeadflowError(f"no place in the release order: {exc}"))
            return
        try:
            if self.release.add(ctx, sort, Held(record.key, record.value, record.offset), hops):
                self._decoded[sort] = obj
                self._arrived[sort] = time.monotonic()
                if self.deps.forwards:
                    self.forwardable.add(sort, record.key.decode(), hops, obj)
        except WatermarkViolation as exc:
            # Its source promised past it: the order is broken already. Kept (released
            # next), counted, logged loudly: a bug or a foreign writer of leadflow.events.
            self._decoded[sort] = obj
            if self.deps.forwards:
                self.forwardable.add(sort, record.key.decode(), hops, obj)
            self.deps.counts["watermark_violations"] += 1
            log.error("lead.watermark_violation", offset=record.offset, error=str(exc),
                      forwarded=forwarded)  # fmt: skip

    def _release(self, ctx: TaskContext, cause: Record) -> None:
        """Apply ripe records and clock steps in key order; stop while a lead waits."""
        while not self.waiting:
            sort = self.release.peek_ripe()
            if self._step_clock(ctx, cause, self.release.head):
                continue  # a step sorted before the head: it may hold or ripen nothing new
            if sort is None:
                return
            while (switch := self.release.due_switch(sort)) is not None:
                self._switch(ctx, self.release.pop_switch(ctx, switch))
            hops = self.release.hops_of(sort)
            held = self.release.pop(ctx, sort)
            self.forwardable.remove(sort)
            self.position = self.release.released
            arrived = self._arrived.pop(sort, None)
            if arrived is not None:
                self._waits.append(time.monotonic() - arrived)
            headers = {HOPS_HEADER: str(hops).encode()} if hops else {}
            record = Record(cause.topic, cause.partition, held.offset, held.key, held.value,
                            headers)  # fmt: skip
            obj = self._decoded.pop(sort, None) or self._decode(ctx, record)
            if obj is None:
                continue
            survivor = isinstance(obj, d.MergeRequest) and obj.lead_id == obj.survivor_id
            if self.deps.forwards and survivor and self.forwardable.target(held.key.decode()):
                ctx.put(RELEASE, TARGETS + held.key, b"")  # forwards may come to it
            self._step(ctx, record, obj, clock=True, sort=key_bytes(sort))

    def _step_clock(self, ctx: TaskContext, cause: Record, head: bytes | None) -> bool:
        """Apply the next clock step if it is ripe and sorts before the record ``head``."""
        first = self.steps.head
        if self.deps.forwards and first is not None:
            front = self.release.front
            if front is None or key_bytes(first) > front:
                return False  # a forward sorting before it may still come, as for a record
        step = self.steps.pop_before(head, self.release.low, self.deps.lateness_ms)
        if step is None:
            return False
        at, ws, value = step
        clock = self._clock(ctx, ws)
        if value > clock.at:
            clock.at = value
            self.moved.add(ws)
            # What it fires is stamped at the step's place in the order (examples carry it).
            self.position = at
            self._fire_due(ctx, cause, ws, clock)
        return True

    # -- one record ------------------------------------------------------------------------

    def _decode(self, ctx: TaskContext, record: Record) -> LeadRecord | None:
        """The by-lead record, checked against its key; ``None`` if dead-lettered or skipped."""
        try:
            obj = self.deps.codec.decode(record.value)
            if isinstance(obj, d.DeadlineTick):
                return None  # written by the faust worker; deadlines now fire on the clock
            if not isinstance(obj, Event | d.MergeRequest | d.LeadTransfer):
                raise LeadflowError(f"{type(obj).__name__} is not a by-lead record")
            check_lead_record_key(record.key, obj)
        except LeadflowError as exc:
            ctx.dead_letter(record, exc)
            return None
        return obj

    def _step(
        self,
        ctx: TaskContext,
        record: Record,
        obj: LeadRecord,
        *,
        clock: bool,
        sort: bytes | None = None,
    ) -> None:
        """Apply one record to its lead; with ``clock``, move the event-time clock.

        Released records (and records written before the release order) move the clock and
        fire what it made due; a direct record does not move it. ``sort``: the release key
        of a released record (what it forwards keeps it).
        """
        assert record.key is not None
        try:
            state = self._read(ctx, record.key)
            facts: PiiFacts | None = None
            if isinstance(obj, Event):
                obj, facts = self._keep_pii_sealed(obj)
            ws = obj.workspace_id
            outcome = lead_record_step(
                state,
                obj,
                self.deps.policy,
                self.model(ws),
                routing=self._routing(ctx, ws),
                facts=facts,
                hops=hops_of(record.headers),
                forward_requests=bool(self.deps.forwards),
                offset=record.offset,
            )
        except LeadflowError as exc:
            ctx.dead_letter(record, exc)
            return
        self._apply(ctx, record, record.key, outcome, sort)
        if not clock:
            return
        at = self._clock(ctx, ws)
        if obj.occurred_at > at.at:
            at.at = obj.occurred_at
            self.moved.add(ws)
        self._fire_due(ctx, record, ws, at, fire=not self.waiting)

    def _fire_due(
        self, ctx: TaskContext, record: Record | None, ws: str, clock: _Clock, *, fire: bool = True
    ) -> None:
        """Fire the deadlines the clock reached; without ``fire`` only their quiet checks.

        ``fire`` is off while the partition holds for a merge (deadlines wait for the records
        parked before them) and when a task is built: a lead's hint is then moved past its
        quiet checks, but what emits waits, its hint still due.
        """
        deferred: list[tuple[int, bytes]] = []
        while clock.heap and clock.heap[0][0] <= clock.at:
            hint, key = heapq.heappop(clock.heap)
            if self.due.get(key) != hint:
                continue  # a later write moved or cleared this lead's deadline
            del self.due[key]
            stored = self.leads.get(ctx, key)
            if stored is None:
                continue  # erased since
            caught = self._caught_up(key, stored[0], self._overlaid(key, *stored), clock.at)
            due = next_deadline(caught)
            if due is None:
                continue
            if due > clock.at:
                self._hint(clock, key, due)
                continue
            if not fire or record is None:
                deferred.append((due, key))
                continue
            outcome = self._advance(ctx, caught, clock.at)
            if outcome.state == caught and not outcome.derived and not outcome.direct:
                continue  # nothing to do now (a lead waiting for a merge defers it)
            self._apply(ctx, record, key, outcome)
        for due, key in deferred:
            self._hint(clock, key, due)

    def _advance(self, ctx: TaskContext, state: LeadState, at: int) -> LeadOutcome:
        ws = state.workspace_id
        return lead_advance(
            state, at, self.deps.policy, routing=self._routing(ctx, ws), model=self.model(ws)
        )

    def _quiet_through(self, state: LeadState, at: int) -> LeadState:
        """``state`` past its quiet checks due by ``at`` (``deadlines.quiet_through``), counted."""
        caught = quiet_through(state, at, self.deps.policy)
        if caught is not state:
            self.quiet_checks += 1
        return caught

    def _caught_up(
        self, key: bytes, written: bytes | LeadState, state: LeadState, at: int
    ) -> LeadState:
        """``state`` (written as ``written``) past its quiet checks due by ``at``, in memory."""
        caught = self._quiet_through(state, at)
        if caught is not state:
            self.quiet[key] = (written, caught.rescore_due_at)
        return caught

    def _read(self, ctx: TaskContext, key: bytes) -> LeadState | None:
        """The lead's state as this task holds it: written, its quiet checks caught up."""
        stored = self.leads.get(ctx, key)
        if stored is None:
            return None
        state = self._overlaid(key, *stored)
        clock = self._clock(ctx, state.workspace_id)
        caught = self._caught_up(key, stored[0], state, clock.at)
        if caught is not state:
            due = next_deadline(caught)
            if due is None:
                self.due.pop(key, None)
            else:
                self._hint(clock, key, due)
        return caught

    def _overlaid(self, key: bytes, written: bytes | LeadState, state: LeadState) -> LeadState:
        """The written ``state`` with the quiet checks this task applied to it."""
        quiet = self.quiet.get(key)
        if quiet is None:
            return state
        if quiet[0] is not written and quiet[0] != written:
            del self.quiet[key]  # written since (``_store`` forgets it; this is a safety net)
            return state
        return evolve(state, rescore_due_at=quiet[1])

    def _hint(self, clock: _Clock, key: bytes, due: int) -> None:
        if self.due.get(key) != due:
            heapq.heappush(clock.heap, (due, key))
            self.due[key] = due

    def _apply(
        self,
        ctx: TaskContext,
        record: Record,
        key: bytes,
        outcome: LeadOutcome,
        sort: bytes | None = None,
    ) -> None:
        """Dead-letter what failed, send derived and direct records, store the state."""
        for parked, error in outcome.failed:
            # A parked event that broke an invariant when its lead resumed after a merge.
            # ``record`` is what resumed the lead: the letter names the event's own record
            # (same partition: both are keyed by this lead), or several letters would share
            # one source and ``dlq replay --source`` would find the first only. A state
            # parked before offsets were kept has none: then the resuming record stands in,
            # and the headers say so.
            self.deps.counts["parked_dead_letters"] += 1
            failed = parked.event
            resumed = f"{record.topic}:{record.partition}:{record.offset}"
            offset = record.offset if parked.offset is None else parked.offset
            log.warning("dead_letter", lead=failed.lead_id, event_id=failed.event_id,
                        offset=offset, resumed_by=resumed, own_offset=parked.offset is not None,
                        reason=str(error))  # fmt: skip
            headers = dlq_headers(error, record.topic, record.partition, offset)
            headers[PARKED_EVENT] = failed.event_id.encode()
            headers[RESUMED_BY] = resumed.encode()
            ctx.send(DLQ, key, self.deps.codec.encode(failed), headers)
        self._emit(ctx, outcome.derived)
        for item in outcome.direct:
            self._send_direct(ctx, item, sort)
        if outcome.state is not None:
            self._store(ctx, key, outcome.state)
            if outcome.state.merged_into is not None:
                self.forwardable.redirect(key.decode())
            if outcome.state.awaiting:
                self.waiting.add(key)  # holds the partition (processors/merges.py, Holding)
            else:
                self.waiting.discard(key)

    def _send_direct(self, ctx: TaskContext, item: Direct, sort: bytes | None) -> None:
        """Send a record to another lead; a released record's forward keeps its key."""
        record = item.record
        headers: dict[str, bytes] | None = None
        key = item.key.encode()
        target: int | None = None  # by key, unless counted as a forward below
        if isinstance(record, Event | d.MergeRequest):
            headers = {HOPS_HEADER: str(item.hops).encode()}
            if sort is not None and self.deps.forwards:
                headers[FORWARD_SORT] = sort.hex().encode()
                target = self.deps.partition_of(key, self.deps.forwards)
                number = self.release.count_sent(target)
                headers[FORWARD_FROM] = forward_from(ctx.partition, number)
        ctx.send(EVENTS_BY_LEAD, key, self.deps.codec.encode(record), headers, partition=target)

    def _store(self, ctx: TaskContext, key: bytes, state: LeadState) -> None:
        clock = self._clock(ctx, state.workspace_id)
        # Hints are always past quiet checks; what is written here includes them.
        state = self._quiet_through(state, clock.at)
        self.leads.put(key, state)
        self.quiet.pop(key, None)
        due = next_deadline(state)
        if due is None:
            self.due.pop(key, None)
        else:
            self._hint(clock, key, due)

    def _save(self, ctx: TaskContext) -> None:
        """Put the leads written in this batch (one encode each, ``stages/decoded.py``).

        Quiet checks applied to a state since it was written now apply to its bytes.
        """
        for key, raw, state in self.leads.save(ctx):
            quiet = self.quiet.get(key)
            if quiet is not None and quiet[0] is state:
                self.quiet[key] = (raw, quiet[1])

    def _emit(self, ctx: TaskContext, out: list[Derived]) -> None:
        """Send the derived events; move the routing cursors their assignments moved."""
        for obj in out:
            topic, key = route(obj)
            headers = None
            if topic is TRAINING_EXAMPLES and self.deps.trainers and self.position is not None:
                headers = {POSITION: str(self.position).encode()}
            ctx.send(topic, key, self.deps.codec.encode(obj), headers)
            if isinstance(obj, d.OwnerAssigned):
                ws = obj.workspace_id
                cursors = self._routing(ctx, ws).cursors | {obj.pool: obj.cursor_after}
                ctx.put(PARTITION, cursors_key(ws), json.dumps(cursors, sort_keys=True).encode())

    @staticmethod
    def _routing(ctx: TaskContext, workspace_id: str) -> RoutingState:
        raw = ctx.get(PARTITION, cursors_key(workspace_id))
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
    markers = Markers(deps.trainers, TRAINING_EXAMPLES, LEAD_MARKER)  # one per process
    fronts = FrontMarkers(deps.forwards)
    return Stage(
        "lead",
        EVENTS_BY_LEAD,
        (LEADS, PARTITION, RELEASE),
        lambda ctx: LeadTask(deps, ctx, markers, fronts),
        counters=deps.counters,
        settle=lambda tasks: settle(deps, tasks),
    )


def settle(deps: LeadDeps, tasks: Mapping[int, tuple[Task, TaskContext]]) -> list[int]:
    """One process's lead tasks hand their forward promises over in memory (batch end).

    ``streams/engine/frontier.py``, "Promises handed over in memory"; returns the
    partitions whose views moved (they may have released records, and store the views).
    """
    if not deps.forwards:
        return []
    leads: dict[int, tuple[LeadTask, TaskContext]] = {}
    for partition, (task, ctx) in tasks.items():
        if not isinstance(task, LeadTask):
            raise TypeError(f"the lead stage's task of partition {partition} is {task!r}")
        leads[partition] = (task, ctx)
    done = hand_over(leads)
    deps.counts["fronts_in_memory"] += done.taken
    deps.counts["fronts_waiting_for_forward"] += done.waiting
    return done.touched
