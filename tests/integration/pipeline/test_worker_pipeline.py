"""Events in, derived events out, through a real `leadflow worker` on the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer

from leadflow.processors.derived import BecameMQL, BecameSQL, SlaBreached, Stage, StageChanged
from leadflow.processors.events import Event, Kind, lead_key
from leadflow.processors.identity import derive_lead_id
from leadflow.processors.model import ScoreModel
from leadflow.processors.policy_load import load_default_policy
from leadflow.streams.control import MARKER, MODEL_MARKER, SWITCH, VERSION
from leadflow.streams.local_kafka import scratch_broker
from leadflow.streams.settings import Settings
from leadflow.streams.topics import (
    DLQ,
    EVENTS_BY_LEAD,
    LEAD_BECAME_MQL,
    LEAD_BECAME_SQL,
    LEAD_SCORED,
    LEAD_STAGE_CHANGED,
    SLA_BREACHED,
    create_topics,
    worker_partition,
)

from .conftest import WorkerProcess, read, send
from .journeys import HOUR, T0, Journey


@pytest.fixture(scope="module")
def worker(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """The module's worker, with the model switch gate at 0 records: a model marker is
    applied right before the first record at or after its switch position (these journeys
    release a few records per partition, fewer than the default gate of 100)."""
    process = WorkerProcess(
        topics, tmp_path_factory.mktemp("worker"), env={"LEADFLOW_MODEL_SWITCH_RECORDS": "0"}
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def recycled(records: list[object]) -> bool:
    return any(isinstance(r, StageChanged) and r.to_stage is Stage.RECYCLED for r in records)


# What marks each phase of Journey.to_sql_twice as processed.
PHASE_DONE: list[tuple[str, Callable[[list[object]], bool]]] = [
    (LEAD_BECAME_SQL.name, lambda records: len(records) >= 1),
    (LEAD_STAGE_CHANGED.name, recycled),
    (LEAD_BECAME_SQL.name, lambda records: len(records) >= 2),
]


def play(settings: Settings, journey: Journey, phases: list[list[Event]]) -> None:
    """Send each phase once the previous one has been processed, as time passing would."""
    for phase, (topic, done) in zip(phases, PHASE_DONE, strict=True):
        send(settings, phase)
        deadline = time.monotonic() + 90
        while not done(read(settings, topic, journey.workspace, expect=0, settle=1.0)):
            assert time.monotonic() < deadline, f"phase not processed: waiting on {topic}"


def handoffs(settings: Settings, workspace: str, expect: int) -> list[BecameSQL]:
    records = read(settings, LEAD_BECAME_SQL.name, workspace, expect=expect)
    assert all(isinstance(r, BecameSQL) for r in records)
    return sorted(records, key=lambda r: r.became_sql_at)  # type: ignore[union-attr]


def test_recycled_lead_becomes_sql_twice_with_pre_identification_first_touch(
    topics: Settings, worker: WorkerProcess
) -> None:
    journey = Journey("ws-recycle")
    play(topics, journey, journey.to_sql_twice())

    first, second = handoffs(topics, journey.workspace, expect=2)
    assert (first.sql_count, second.sql_count) == (1, 2)
    assert first.transition_id != second.transition_id
    assert first.lead_id == second.lead_id == journey.lead
    assert first.became_sql_at == journey.at(60)
    assert second.became_sql_at == journey.at(602)
    # The anonymous pricing visits before the form count: first touch and engagement.
    assert first.first_touch is not None
    assert first.first_touch.event_id == f"{journey.workspace}-v1"
    assert (first.first_touch.channel, first.first_touch.campaign) == ("paid_search", "spring")
    assert first.engagement.pricing_views == 3
    assert first.engagement.demo_requested
    assert first.contact.company == "Acme"
    assert first.owner_id is not None
    stages = [step.stage for step in second.stage_history]
    assert stages.count(Stage.SQL) == 2
    assert Stage.RECYCLED in stages


def test_duplicates_and_reordering_change_nothing(topics: Settings, worker: WorkerProcess) -> None:
    plain, noisy = Journey("ws-plain"), Journey("ws-noisy")
    play(topics, plain, plain.to_sql_twice())
    first, *rest = noisy.to_sql_twice()
    # The anonymous visits arrive in reverse order, and every event arrives twice.
    first = [*reversed(first[:3]), *first[3:]]
    play(
        topics, noisy, [[e for event in phase for e in (event, event)] for phase in [first, *rest]]
    )

    expected = handoffs(topics, plain.workspace, expect=2)
    got = handoffs(topics, noisy.workspace, expect=2)
    assert len(got) == len(expected) == 2
    for a, b in zip(expected, got, strict=True):
        assert (b.sql_count, b.became_sql_at, b.reason) == (a.sql_count, a.became_sql_at, a.reason)
        assert (b.fit_score, b.engagement_score) == (a.fit_score, a.engagement_score)
        assert b.engagement == a.engagement
        assert b.first_touch is not None
        assert a.first_touch is not None
        assert b.first_touch.event_id == f"{noisy.workspace}-v1"
        assert a.first_touch.event_id == f"{plain.workspace}-v1"
    transitions = read(topics, LEAD_STAGE_CHANGED.name, noisy.workspace, expect=1)
    ids = [t.transition_id for t in transitions if isinstance(t, StageChanged)]
    assert len(ids) == len(set(ids)), "a duplicate event produced a second transition"


def test_unreviewed_mql_raises_sla_breached_at_the_due_event_time(
    topics: Settings, worker: WorkerProcess
) -> None:
    journey = Journey("ws-sla")
    send(topics, journey.unreviewed_mql())

    mqls = read(topics, LEAD_BECAME_MQL.name, journey.workspace, expect=1)
    assert len(mqls) == 1
    mql = mqls[0]
    assert isinstance(mql, BecameMQL)
    assert mql.occurred_at == journey.at(3)
    assert mql.sla_due_at == journey.at(3) + 24 * HOUR

    breaches = read(topics, SLA_BREACHED.name, journey.workspace, expect=1)
    assert len(breaches) == 1
    breach = breaches[0]
    assert isinstance(breach, SlaBreached)
    assert breach.due_at == mql.sla_due_at
    assert breach.mql_transition_id == mql.transition_id


def forge_model_marker(settings: Settings, key: bytes, workspace: str) -> None:
    """A model marker for `workspace` signed with `key`, on every by-lead partition, as the
    trainer sends them (docs/architecture.md, "The model switch in the log"): switch
    position 0, so it is released before any record of the test."""
    producer = Producer({"bootstrap.servers": settings.bootstrap, "acks": "all"})
    snapshot = ScoreModel(load_default_policy(), workspace).snapshot(key)
    headers = {MARKER: MODEL_MARKER.encode(), SWITCH: b"0", VERSION: b"1"}
    for partition in range(settings.topic_partitions):
        producer.produce(EVENTS_BY_LEAD.name, key=workspace.encode(), value=snapshot,
                         headers=headers, partition=partition)  # fmt: skip
    assert producer.flush(30) == 0


def dead_letters_mentioning(settings: Settings, needle: bytes) -> int:
    """Dead letters whose raw bytes contain `needle` (other tests' letters do not decode)."""
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap, "group.id": f"dlq-{time.monotonic_ns()}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe([DLQ.name])
    found, deadline = 0, time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None and needle in (message.value() or b""):
                    found += 1
    finally:
        consumer.close()
    return found


def test_a_snapshot_signed_with_another_key_is_refused_and_scoring_goes_on(
    topics: Settings, worker: WorkerProcess
) -> None:
    journey = Journey("ws-foreign-model")
    forge_model_marker(topics, b"someone else's key", journey.workspace)
    play(topics, journey, journey.to_sql_twice())

    assert len(handoffs(topics, journey.workspace, expect=2)) == 2
    assert dead_letters_mentioning(topics, journey.workspace.encode()) == 0
    assert worker.log_events("model.snapshot_rejected")
    # Scored by the workspace's prior meanwhile, never left without a model score.
    scores = read(topics, LEAD_SCORED.name, journey.workspace, expect=1)
    assert all(getattr(s, "model_score", None) is not None for s in scores)


def by_lead_partition(workspace: str, lead_id: str, partitions: int) -> int:
    """The partition of `events.by-lead` the worker's producer puts a lead on."""
    return worker_partition(lead_key(workspace, lead_id).encode(), partitions)


def neighbour(journey: Journey, i: int) -> Journey:
    """Another person of the same workspace (deadlines run on the workspace's clock)."""
    other = Journey(journey.workspace, start=journey.start)
    other.anon = f"{journey.workspace}-device-{i}"
    other.email = f"bob{i}@{journey.workspace}.example.com"
    other.lead = derive_lead_id(journey.workspace, other.email)
    return other


# The SLA tests below move event time decades ahead with receive stamps of 2048. A stamp
# counts for R' as at most its record's Kafka timestamp plus LEADFLOW_ORDER_MAX_AHEAD_MS
# (processors/receive_bound.py), so their worker allows that much, on a broker of their own:
# the session broker's R' stays at the clock for the modules after this one (with the
# default bound, its heartbeats could never again pass an R' of 2048).
FAR_AHEAD_MS = 300_000 * HOUR


@pytest.fixture(scope="module")
def far(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A broker and a worker that lets receive stamps run decades ahead of the log."""
    home = tmp_path_factory.mktemp("far")
    with scratch_broker(base_settings, home / "kafka") as (_, settings):
        create_topics(settings)
        process = WorkerProcess(
            settings, home / "worker", env={"LEADFLOW_ORDER_MAX_AHEAD_MS": str(FAR_AHEAD_MS)}
        )
        process.data_dir.mkdir()
        process.start()
        try:
            yield settings
        finally:
            process.stop()


def _sla_after_traffic_of(topics: Settings, tag: str, *, same_partition: bool) -> None:
    """A quiet MQL; another lead of its workspace moves event time past its SLA."""
    later = T0 + 200_000 * HOUR
    quiet = Journey(f"ws-sla-quiet-{tag}", start=later)
    ws, n = quiet.workspace, topics.topic_partitions
    partition = by_lead_partition(ws, quiet.lead, n)
    other = next(
        j
        for j in (neighbour(quiet, i) for i in range(100))
        if (by_lead_partition(ws, j.lead, n) == partition) is same_partition
    )
    # The quiet lead becomes MQL and then says nothing more; only the other lead's
    # traffic carries event time past the quiet lead's SLA.
    send(topics, quiet.unreviewed_mql()[:-1])
    mql = read(topics, LEAD_BECAME_MQL.name, quiet.workspace, expect=1)[0]
    assert isinstance(mql, BecameMQL)
    send(
        topics, [other.ev("busy-v1", Kind.VISIT, 40, device=False, path="/blog", channel="direct")]
    )

    breaches = read(topics, SLA_BREACHED.name, quiet.workspace, expect=1)
    assert [b.due_at for b in breaches if isinstance(b, SlaBreached)] == [mql.sla_due_at]


def test_sla_fires_when_event_time_moves_on_the_leads_partition(far: Settings) -> None:
    _sla_after_traffic_of(far, "same", same_partition=True)


# The quiet lead's partition has no traffic of the workspace: the identity stage's clock
# steps carry the other partition's event time to it (processors/sla_clock.py).
def test_sla_fires_when_event_time_moves_on_another_partition(far: Settings) -> None:
    _sla_after_traffic_of(far, "other", same_partition=False)
