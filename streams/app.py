"""The faust app: topics, tables and the agents that wire processors to them.

Agents are thin: decode, call a pure processor, store the new state, send what it derived.
Everything that can go wrong with a record (it does not decode, or it breaks a domain
invariant) sends the original bytes to the dead-letter topic with the reason in headers,
and the stream goes on.

Runtime choices (see docs/architecture.md): agent concurrency stays 1 (faust #606 loses a
message on restart otherwise); derived events carry deterministic ids so that a
re-emission after a crash is recognisable downstream whatever the processing guarantee.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import signal
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust

from leadflow.processors import derived as d
from leadflow.processors.bounds import BoundsTable, check_bounds
from leadflow.processors.deadlines import next_deadline
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event, lead_key
from leadflow.processors.identity import (
    check_record_key,
    decode_identity_state,
    encode_identity_state,
    identity_link,
    identity_route,
)
from leadflow.processors.lead_state import LeadState, decode_lead_state, encode_lead_state
from leadflow.processors.merges import (
    Direct,
    check_lead_record_key,
    lead_advance,
    lead_record_step,
)
from leadflow.processors.model import ModelRegistry, ScoreModel, SnapshotError
from leadflow.processors.pii import PiiFacts, keep_sealed
from leadflow.processors.policy import Policy
from leadflow.processors.routing import RoutingState
from leadflow.schemas.codec import Codec
from leadflow.streams import topics as t
from leadflow.streams.logs import get_logger
from leadflow.streams.model_feed import latest_snapshots
from leadflow.streams.pii.vault import Vault
from leadflow.streams.security import faust_credentials
from leadflow.streams.settings import Guarantee, Settings
from leadflow.streams.stall import StallWatch, Verdict, owed

log = get_logger(__name__)

_T = TypeVar("_T")

APP_ID = "leadflow"
ROUTING_KEY = b"cursors"
HOPS_HEADER = "leadflow.hops"

# Which contract topic each derived event goes to, and what it is keyed by.
ROUTES: dict[type, tuple[t.TopicSpec, str]] = {
    d.LeadScored: (t.LEAD_SCORED, "lead_id"),
    d.StageChanged: (t.LEAD_STAGE_CHANGED, "lead_id"),
    d.BecameMQL: (t.LEAD_BECAME_MQL, "lead_id"),
    d.BecameSQL: (t.LEAD_BECAME_SQL, "lead_id"),
    d.OwnerAssigned: (t.LEAD_OWNER_ASSIGNED, "lead_id"),
    d.SlaBreached: (t.SLA_BREACHED, "lead_id"),
    d.NurtureAction: (t.NURTURE_ACTIONS, "lead_id"),
    # One trainer per workspace: all of a workspace's examples land on one partition.
    d.TrainingExample: (t.TRAINING_EXAMPLES, "workspace_id"),
    d.IdentityLinked: (t.IDENTITIES, "anonymous_id"),
    d.LeadMerged: (t.LEAD_MERGED, "lead_id"),
}


def dlq_headers(exc: Exception, topic: str, partition: int, offset: int) -> dict[str, bytes]:
    """Why a record went to the dead-letter topic, and where it came from.

    Example:
        >>> dlq_headers(ValueError("bad"), "leadflow.events", 3, 42)["leadflow.reason"]
        b'ValueError: bad'
    """
    return {
        "leadflow.reason": f"{type(exc).__name__}: {exc}".encode()[:1000],
        "leadflow.source.topic": topic.encode(),
        "leadflow.source.partition": str(partition).encode(),
        "leadflow.source.offset": str(offset).encode(),
    }


@dataclass
class Deadlines:
    """Leads waiting for event time to pass a deadline (SLA, label horizon), soonest first.

    Event time advances with the newest ``occurred_at`` the worker has seen (its watermark),
    never with the wall clock, so a replay fires the same deadlines at the same points.
    """

    watermark: int = 0
    heap: list[tuple[int, str, str]] = field(default_factory=list)  # (due, workspace, lead)
    scanned: bool = False
    # Leads already sent a tick at the current watermark: a lead whose deadline stays
    # due after its tick must not tick again until event time moves.
    ticked: set[tuple[str, str]] = field(default_factory=set)

    def push(self, state: LeadState) -> None:
        """Remember the lead's next deadline, if it has one."""
        due = next_deadline(state)
        if due is not None:
            heapq.heappush(self.heap, (due, state.workspace_id, state.lead_id))

    def advance(self, occurred_at: int) -> None:
        """Move the watermark forward (never back)."""
        if occurred_at > self.watermark:
            self.watermark = occurred_at
            self.ticked.clear()

    def due(self) -> list[tuple[str, str]]:
        """``(workspace, lead id)`` whose deadline the watermark has passed (once per watermark)."""
        leads: list[tuple[str, str]] = []
        while self.heap and self.heap[0][0] <= self.watermark:
            _, workspace, lead_id = heapq.heappop(self.heap)
            if (workspace, lead_id) not in self.ticked:
                self.ticked.add((workspace, lead_id))
                leads.append((workspace, lead_id))
        return leads


class LeadflowApp:
    """The faust app with leadflow's topics, tables and agents registered."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        policy: Policy,
        model_key: bytes,
        bounds: BoundsTable | None = None,
    ) -> None:
        self.settings = settings
        # Amounts and counts per workspace: an absurd one is a dead letter here, before any
        # state or report sees it (the collector refuses it too; this catches direct producers).
        self.bounds = bounds or BoundsTable()
        self.codec = codec
        self.policy = policy
        self.model_key = model_key
        # Scoring: the published model of each workspace (its prior until it has one).
        self.models_by_ws: dict[str, ScoreModel] = {}
        self.priors = ModelRegistry(lambda _ws: policy)
        self.deadlines = Deadlines()
        # PII arrives sealed and stays so (docs/privacy.md); only the lead agent opens it,
        # to derive non-personal facts (the email domain) for scoring.
        self.vault = Vault(settings) if settings.pii_encryption else None
        self.app = faust.App(
            APP_ID,
            broker=f"kafka://{settings.bootstrap}",
            broker_credentials=_credentials(settings),
            store="rocksdb://",
            datadir=str((settings.data_dir / "worker").resolve()),
            processing_guarantee=settings.processing_guarantee.value,
            topic_partitions=settings.topic_partitions,
            # Only faust's own assignor topic is declared with this: the contract topics and
            # the changelogs exist already (create_topics, replication from the cluster).
            topic_replication_factor=settings.topic_replication or 1,
            topic_allow_declare=True,
            # faust's web server served every table unauthenticated (GET /table/leads/<id>/:
            # company, title, email domain, owner, scores). Nothing here uses it: off.
            web_enabled=False,
            web_host="127.0.0.1",
            web_bind="127.0.0.1",
            web_port=settings.worker_web_port,
            key_serializer="raw",
            value_serializer="raw",
            producer_acks=-1,
            # Recovery of changelogs silently did nothing with 0 standbys before faust #682.
            table_standby_replicas=1,
            # A worker killed with -9 holds its partitions until its session expires: keep
            # that short so a restarted worker resumes in seconds, not a minute.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=3.0,
        )
        partitions = settings.topic_partitions
        topic = self.app.topic
        self.events = topic(t.EVENTS.name, key_type=bytes, value_type=bytes, partitions=partitions)
        self.by_lead = topic(
            t.EVENTS_BY_LEAD.name, key_type=bytes, value_type=bytes, partitions=partitions
        )
        self.dlq = topic(t.DLQ.name, key_type=bytes, value_type=bytes, partitions=partitions)
        self.training = topic(
            t.TRAINING_EXAMPLES.name, key_type=bytes, value_type=bytes, partitions=partitions
        )
        self.outputs = {
            spec.name: topic(spec.name, key_type=bytes, value_type=bytes, partitions=partitions)
            for spec, _ in ROUTES.values()
        }
        self.identities = self.app.Table(
            "identities", partitions=partitions, key_type=bytes, value_type=bytes
        )
        self.leads = self.app.Table(
            "leads", partitions=partitions, key_type=bytes, value_type=bytes
        )
        # Round-robin cursors. faust keeps a table's values per source partition, so each
        # partition advances its own cursors and a retried step sees the same cursor.
        self.routing = self.app.Table(
            "routing", partitions=partitions, key_type=bytes, value_type=bytes
        )
        self.models = topic(t.MODELS.name, key_type=bytes, value_type=bytes, partitions=partitions)
        self._snapshots: dict[bytes, bytes] = {}
        self.app.timer(interval=10.0, name="model-feed")(self._refresh_model)
        self.app.task(self._install_task_dump)
        self.processed = 0
        self.stall = StallWatch(after=settings.worker_stall_seconds)
        self.app.timer(interval=5.0, name="stall-watch")(self._watch_stall)
        self.app.agent(self.events, name="identity", concurrency=1)(self._identity_agent)
        self.app.agent(self.by_lead, name="lead", concurrency=1)(self._lead_agent)
        self.app.agent(self.training, name="trainer", concurrency=1)(self._trainer_agent)

    def changelog_topics(self) -> list[t.TopicSpec]:
        """Faust's changelog topics for the tables, to create before the worker starts.

        faust declares them itself, but concurrently with the agents, which then crash on
        a partition-count mismatch while the topic does not exist yet.
        """
        return [
            t.TopicSpec(
                f"{APP_ID}-{name}-changelog",
                "table key",
                f"faust changelog of {name}",
                compacted=True,
            )
            for name in ("identities", "leads", "routing")
        ]

    async def _send(self, obj: Any) -> Awaitable[Any]:
        """Publish a derived event; the returned awaitable completes when Kafka has it."""
        spec, key_field = ROUTES[type(obj)]
        return await self.outputs[spec.name].send(
            key=str(getattr(obj, key_field)).encode(), value=self.codec.encode(obj)
        )

    async def _dead_letter(self, exc: Exception, event: faust.EventT[bytes]) -> None:
        message = event.message
        log.warning("dead_letter", topic=message.topic, offset=message.offset, reason=str(exc))
        await self.dlq.send(
            key=message.key,
            value=message.value,
            headers=dlq_headers(exc, message.topic, message.partition, message.offset),
        )

    def _decode_as(self, value: bytes, expected: type[_T]) -> _T:
        """Decode a record and insist on its type (a wrong record is a dead letter)."""
        obj = self.codec.decode(value)
        if not isinstance(obj, expected):
            raise LeadflowError(f"{type(obj).__name__} is not a {expected.__name__}")
        return obj

    async def _identity_agent(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            self.processed += 1
            key = event.key
            try:
                inbound = self._decode_as(event.value, Event)
                check_record_key(key, inbound)
                check_bounds(inbound, self.bounds)
                raw_state = self.identities.get(key)
                state = decode_identity_state(raw_state) if raw_state else None
                new_state, routed = identity_route(state, inbound)
            except LeadflowError as exc:
                await self._dead_letter(exc, event)
                continue
            sent = []
            link = identity_link(state, new_state, inbound)
            if link is not None:
                sent.append(await self._send(link))
            # Merge requests first: they sort before the event that caused them.
            records: list[Event | d.MergeRequest] = [*routed.merges, *routed.events]
            for record in records:
                assert record.lead_id is not None
                sent.append(
                    await self.by_lead.send(
                        key=lead_key(record.workspace_id, record.lead_id).encode(),
                        value=self.codec.encode(record),
                    )
                )
            # State last: see _emit.
            await asyncio.gather(*sent)
            if new_state is not None:
                await self._store(self.identities, key, encode_identity_state(new_state))

    async def _lead_agent(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            self.processed += 1
            key = event.key
            try:
                record = self.codec.decode(event.value)
                raw_state = self.leads.get(key)
                state = decode_lead_state(raw_state) if raw_state else None
                if isinstance(record, d.DeadlineTick):
                    if state is None:
                        continue  # the lead's state is gone (erased): nothing is due
                    watermark = record.watermark
                    outcome = lead_advance(
                        state,
                        watermark,
                        self.policy,
                        routing=self._routing(),
                        model=self._current_model(state.workspace_id),
                    )
                elif isinstance(record, Event | d.MergeRequest | d.LeadTransfer):
                    check_lead_record_key(key, record)
                    facts = None
                    if isinstance(record, Event):
                        record, facts = await self._keep_pii_sealed(record)
                    watermark = record.occurred_at
                    outcome = lead_record_step(
                        state,
                        record,
                        self.policy,
                        self._current_model(record.workspace_id),
                        routing=self._routing(),
                        facts=facts,
                        hops=_hops(event),
                    )
                else:
                    raise LeadflowError(f"{type(record).__name__} is not a by-lead record")
            except LeadflowError as exc:
                await self._dead_letter(exc, event)
                continue
            for failed, error in outcome.failed:
                # A parked event that broke an invariant when its lead resumed after a merge.
                log.warning("dead_letter", lead=failed.lead_id, reason=str(error))
                message = event.message
                await self.dlq.send(
                    key=key,
                    value=self.codec.encode(failed),
                    headers=dlq_headers(error, message.topic, message.partition, message.offset),
                )
            await self._emit(outcome.derived)
            await self._send_direct(outcome.direct)
            if outcome.state is not None:
                await self._store(self.leads, key, encode_lead_state(outcome.state))
                await self._advance(outcome.state, watermark)

    async def _send_direct(self, direct: list[Direct]) -> None:
        """Records for other leads (merge transfers, forwards through a redirect).

        Applied on arrival by the lead agent (there is no release buffer under faust); the
        hop count travels in a header so a redirect cycle ends in the dead-letter topic.
        """
        sent = [
            await self.by_lead.send(
                key=item.key.encode(),
                value=self.codec.encode(item.record),
                headers={HOPS_HEADER: str(item.hops).encode()},
            )
            for item in direct
        ]
        await asyncio.gather(*sent)

    async def _advance(self, state: LeadState, watermark: int) -> None:
        """Send a tick to every lead whose deadline event time has passed.

        The tick goes through ``events.by-lead`` keyed by lead, so the deadline is applied
        on the lead's own partition, the only place its state may be read and written
        (see :class:`~leadflow.processors.derived.DeadlineTick`). It is durable like any
        record: a crash before it is applied replays it, after it changes nothing.
        """
        deadlines = self.deadlines
        if not deadlines.scanned:
            # After a restart the heap is empty; rebuild it once from the recovered table.
            deadlines.scanned = True
            for _, raw_value in list(self.leads.items()):
                deadlines.push(decode_lead_state(raw_value))
        deadlines.push(state)
        deadlines.advance(watermark)
        ticks = [
            await self.by_lead.send(
                key=lead_key(workspace, lead).encode(),
                value=self.codec.encode(d.DeadlineTick(lead, deadlines.watermark)),
            )
            for workspace, lead in deadlines.due()
        ]
        await asyncio.gather(*ticks)

    async def _store(self, table: Any, key: bytes, value: bytes) -> None:
        """Write a table entry; return once its changelog record is with the Kafka client.

        ``table[key] = value`` queues the changelog record in faust's own buffer, and the
        flush before each offset commit drains that buffer only best-effort (it gives up
        after 0.1 s): an offset could be committed while the state it relies on was
        still inside the process, and a kill -9 then lost it. Handed to the client before
        the event is acked, the record is under the client flush that precedes every
        commit. The local store is written too; after an unclean stop it is discarded
        and rebuilt from the changelog (streams/worker.py).
        """
        table.data[key] = value
        await table.changelog_topic.send(
            key=key,
            value=value,
            partition=table.partition_for_key(key),
            callback=table._on_changelog_sent,  # faust's own: records the persisted offset
        )

    async def _keep_pii_sealed(self, inbound: Event) -> tuple[Event, PiiFacts | None]:
        """The event with PII still sealed, and the facts scoring needs from its plaintext.

        The lead's state (and so its changelog) and the hand-off then hold only sealed
        PII, which erasure makes unreadable there too. Values whose key is shredded come
        back as None, as opening them would (a key topic failure is raised).
        """
        if self.vault is None:
            return inbound, None
        loop = asyncio.get_running_loop()
        opened = await loop.run_in_executor(None, self.vault.open, inbound)
        return keep_sealed(inbound, opened)

    def _routing(self) -> RoutingState:
        raw = self.routing.get(ROUTING_KEY)
        return RoutingState(cursors=json.loads(raw) if raw else {})

    async def _emit(self, out: list[Any]) -> None:
        """Send derived events and wait until Kafka has them all; then move routing cursors.

        Callers write the new state only after this returns. State marks the inbound event
        as seen, so a state written before its outputs were delivered would, after a kill -9,
        make the replayed event a no-op and lose the outputs (measured: 1 to 3 of 30 SQL
        hand-offs). In this order a crash either replays the event and re-emits the same
        deterministic ids, or finds everything delivered.
        """
        await asyncio.gather(*[await self._send(obj) for obj in out])
        for obj in out:
            if isinstance(obj, d.OwnerAssigned):
                cursors = self._routing().cursors | {obj.pool: obj.cursor_after}
                await self._store(
                    self.routing, ROUTING_KEY, json.dumps(cursors, sort_keys=True).encode()
                )

    async def _watch_stall(self) -> None:
        """Act on a worker that holds lag and processes nothing (streams/stall.py)."""
        tables: Any = self.app.tables
        if not tables.recovery.completed.is_set():
            return  # recovering tables is progress faust does not count as processing
        lag = await self._own_lag()
        verdict = self.stall.observe(time.monotonic(), lag=lag, processed=self.processed)
        if verdict is Verdict.RESEEK:
            log.warning("worker.stalled", lag=lag, action="seek to committed offsets")
            self._dump_tasks()
            await self.app.consumer.perform_seek()
        elif verdict is Verdict.EXIT:
            log.error("worker.stalled", lag=lag, action="exit 70 for the supervisor")
            # Like a crash: the next start discards local tables (streams/worker.py).
            os._exit(70)

    async def _own_lag(self) -> int:
        """Records on this worker's own input partitions past its committed offsets.

        Committed, not read: the stalled workers seen after a kill -9 had read offsets at
        the end of their partitions and processed nothing, so only the committed offsets
        showed what was still owed.
        """
        consumer: Any = self.app.consumer
        sources = {spec.name for spec in t.WORKER_INPUTS}
        tps = [tp for tp in consumer.assignment() if tp.topic in sources]
        if not tps:
            return 0
        ends = await consumer.highwaters(*tps)
        markers = self.settings.processing_guarantee is Guarantee.EXACTLY_ONCE
        lag = 0
        for tp in tps:
            committed = consumer._committed_offset.get(tp) or 0  # faust internals, read only
            lag += owed(ends.get(tp, 0), committed, markers=markers)
        return lag

    async def _install_task_dump(self) -> None:
        """``kill -USR1 <worker>`` logs where every task waits: the tool for a stuck worker."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._dump_tasks)

    def _dump_tasks(self) -> None:
        consumer: Any = self.app.consumer
        positions = {
            f"{tp.topic}:{tp.partition}": (
                consumer._read_offset.get(tp),
                consumer._committed_offset.get(tp),
            )
            for tp in consumer.assignment()
            if not tp.topic.endswith("-changelog")
        }
        log.warning(
            "worker.dump",
            read_and_committed=positions,
            assigned=len(consumer.assignment()),
            # faust internals, read only: what a stall report needs.
            paused=sorted(f"{tp.topic}:{tp.partition}" for tp in consumer._paused_partitions),
            active=len(consumer._active_partitions or ()),
            consumer_flow=consumer.flow_active,
            app_flow=self.app.flow_control.is_active(),
        )
        for task in asyncio.all_tasks():
            log.warning("worker.task", task=task.get_name(), awaits=list(_await_chain(task)))

    async def _refresh_model(self) -> None:
        """Pick up every workspace's newest snapshot (every worker scores alike)."""
        loop = asyncio.get_running_loop()
        snapshots = await loop.run_in_executor(None, latest_snapshots, self.settings)
        self._snapshots.update(snapshots)

    def _current_model(self, workspace_id: str) -> ScoreModel:
        """The workspace's published model; its prior (``model.prior``) until one is published."""
        raw = self._snapshots.get(workspace_id.encode())
        model = self.models_by_ws.get(workspace_id)
        if raw is not None and (model is None or model.version != ScoreModel.peek_version(raw)):
            try:
                restored = ScoreModel.restore(raw, self.model_key)
            except SnapshotError as exc:
                # A snapshot signed with another key is not this worker's to load, and not
                # the scored event's fault: keep the last good model (or the prior).
                log.error("model.snapshot_rejected", workspace_id=workspace_id, reason=str(exc))
                self._snapshots.pop(workspace_id.encode(), None)
            else:
                if restored.workspace_id == workspace_id:
                    self.models_by_ws[workspace_id] = model = restored
                else:
                    log.error(
                        "model.snapshot_rejected",
                        workspace_id=workspace_id,
                        reason=f"snapshot of workspace {restored.workspace_id!r}",
                    )
        if model is None:
            model = self.priors.get(workspace_id)
        return model

    async def _trainer_agent(self, stream: faust.StreamT[bytes]) -> None:
        # Each workspace's model is its own and learns only from its examples. Examples are
        # keyed by workspace, so one partition, hence one trainer, owns a workspace at a
        # time. The trainer keeps learning between snapshots, while scoring uses only what
        # was published, so every worker scores alike.
        models: dict[str, ScoreModel] = {}
        async for event in stream.events():
            self.processed += 1
            try:
                example = self._decode_as(event.value, d.TrainingExample)
                if event.key is not None and event.key != example.workspace_id.encode():
                    raise LeadflowError(
                        f"example of workspace {example.workspace_id!r} under key {event.key!r}"
                    )
            except LeadflowError as exc:
                await self._dead_letter(exc, event)
                continue
            ws = example.workspace_id
            model = models.get(ws)
            if model is None:
                model = models[ws] = await self._resume_training(ws)
            model.learn(example.features, example.label)
            if model.n_learned % self.policy.model.snapshot_every == 0:
                snapshot = model.snapshot(self.model_key, trained_through=example.labelled_at)
                self._snapshots[ws.encode()] = snapshot
                await self.models.send(key=ws.encode(), value=snapshot)
                health = model.health()
                log.info("model.snapshot", **health.as_log())
                if health.warnings:
                    log.warning("model.health", **health.as_log())

    async def _resume_training(self, workspace_id: str) -> ScoreModel:
        """Continue from the workspace's newest published snapshot, else start from the prior."""
        loop = asyncio.get_running_loop()
        snapshots = await loop.run_in_executor(None, latest_snapshots, self.settings)
        raw = snapshots.get(workspace_id.encode())
        if raw is None:
            return ScoreModel(self.policy, workspace_id)
        try:
            model = ScoreModel.restore(raw, self.model_key)
        except SnapshotError as exc:
            log.error(
                "model.snapshot_rejected",
                workspace_id=workspace_id,
                reason=str(exc),
                action="training from the prior",
            )
            return ScoreModel(self.policy, workspace_id)
        self._snapshots[workspace_id.encode()] = raw
        return model


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where a suspended task waits, outermost first (``Task.get_stack`` shows one frame)."""
    chain = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def _hops(event: faust.EventT[bytes]) -> int:
    """How many redirects forwarded this by-lead record (0 when not forwarded)."""
    headers: Any = event.headers or {}
    pairs = headers.items() if isinstance(headers, dict) else headers
    for name, value in pairs:
        if name == HOPS_HEADER and value:
            return int(value)
    return 0


def _credentials(settings: Settings) -> Any:
    # SASL and TLS from the one helper every Kafka client's security goes through.
    return faust_credentials(settings)
