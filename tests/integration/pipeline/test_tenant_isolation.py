"""Issue 19 (HIGH, MEDIUM): two workspaces using the same ids are two unrelated people.

Found on a local stack: workspace B's identify for device ``shared-dev-1`` (used by A too)
re-linked A's device to B's lead, a lead of B's appeared in A holding A's page views, and
ClickHouse got an A row whose source event was B's; the first workspace to use a lead id
("1", "crm-4711") owned it and the other's events were dead-lettered. State was keyed by the
device or lead id alone.

The test runs A's journey twice through the real worker and the real projector: alone, on a
broker of its own, and interleaved with B's journey (same device id, same user ids, same lead
ids, an erasure in B) on the session broker. Everything A produced must be byte-identical:
every record of every topic the worker writes (key and value), and A's rows in every
ClickHouse table. B's journey must have happened too (it is not just dead-lettered).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from leadflow.processors.events import Context, Event, Kind
from leadflow.sinks.projector import Projector
from leadflow.sinks.tables import LEAD_STATE, PROJECTED_TABLES
from leadflow.streams.control import MARKER, header
from leadflow.streams.kafka_offsets import EndNotReached, read_to_end, topic_ends
from leadflow.streams.local_kafka import LocalKafka, install
from leadflow.streams.settings import Settings
from leadflow.streams.stages.sla_clock import CLOCK_MARKER, decode_steps
from leadflow.streams.topics import (
    DLQ,
    EVENTS_BY_LEAD,
    IDENTITIES,
    LEAD_BECAME_MQL,
    LEAD_BECAME_SQL,
    LEAD_OWNER_ASSIGNED,
    LEAD_SCORED,
    LEAD_STAGE_CHANGED,
    NURTURE_ACTIONS,
    SLA_BREACHED,
    TRAINING_EXAMPLES,
    create_topics,
)
from tests.conftest import free_port

from .conftest import CODEC, WorkerProcess, send
from .journeys import HOUR, ICP, T0

U = uuid.uuid4().hex[:8]
A, B = f"iso-a-{U}", f"iso-b-{U}"
SHARED_DEVICE, SHARED_USER, SHARED_LEAD = "shared-dev-1", "crm-4711", "1"
# Every topic the worker writes; A's records on each must not depend on B.
OUTPUTS = (
    EVENTS_BY_LEAD,
    IDENTITIES,
    LEAD_SCORED,
    LEAD_STAGE_CHANGED,
    LEAD_BECAME_MQL,
    LEAD_BECAME_SQL,
    LEAD_OWNER_ASSIGNED,
    SLA_BREACHED,
    NURTURE_ACTIONS,
    TRAINING_EXAMPLES,
    DLQ,
)


def ev(ws: str, eid: str, kind: Kind, hours: float, *, anon: str | None = None,
       lead: str | None = None, channel: str | None = None, path: str | None = None,
       **payload: Any) -> Event:  # fmt: skip
    return Event(
        event_id=f"{ws}-{eid}",
        kind=kind,
        workspace_id=ws,
        occurred_at=T0 + int(hours * HOUR),
        received_at=T0 + int(hours * HOUR),
        anonymous_id=anon,
        lead_id=lead,
        context=Context(path=path, channel=channel),
        payload=payload,
    )


def journey_a() -> list[list[Event]]:
    """A's person on the shared device, A's CRM lead under the shared user id and lead "1"."""
    d, user = SHARED_DEVICE, SHARED_USER
    return [
        [
            ev(A, "v1", Kind.VISIT, 0, anon=d, channel="paid_search", path="/pricing"),
            ev(A, "v2", Kind.VISIT, 20, anon=d, channel="direct", path="/pricing"),
            ev(A, "i1", Kind.IDENTIFY, 21, lead=SHARED_LEAD, **ICP, email="cto@a.example"),
        ],
        [
            ev(A, "i2", Kind.IDENTIFY, 30, anon=d, lead=user, **ICP, email="ada@a.example"),
            ev(A, "f1", Kind.FORM_SUBMITTED, 31, anon=d, lead=user, channel="direct",
               **ICP, email="ada@a.example"),
            ev(A, "v3", Kind.VISIT, 32, anon=d, channel="direct", path="/pricing"),
        ],
        [
            ev(A, "d1", Kind.DEMO_REQUESTED, 40, lead=user, channel="direct"),
            ev(A, "s1", Kind.STAGE_CHANGED, 41, lead=SHARED_LEAD, action="disqualify",
               reason="student", actor="rep", answers={}),
        ],
        [
            ev(A, "w1", Kind.DEAL_WON, 80, lead=user, deal_id="DA", amount=12000.0,
               currency="USD"),
            ev(A, "c1", Kind.EMAIL_CLICKED, 81, lead=user, campaign="nurture"),
        ],
    ]  # fmt: skip


def journey_b() -> list[list[Event]]:
    """B uses the same device, user and lead ids for other people, and erases one of them."""
    d, user = SHARED_DEVICE, SHARED_USER
    return [
        [
            # The attack: B identifies A's device id as its own lead.
            ev(B, "i1", Kind.IDENTIFY, 1, anon=d, lead="b-lead-77", email="bob@b.example"),
            ev(B, "v1", Kind.VISIT, 2, anon=d, channel="email", path="/careers"),
            ev(B, "i2", Kind.IDENTIFY, 22, lead=SHARED_LEAD, company="B Corp", title="Intern"),
        ],
        [
            ev(B, "i3", Kind.IDENTIFY, 30, anon="b-dev-2", lead=user, company="B Corp",
               title="CEO", company_size=20, email="ceo@b.example"),
            ev(B, "v2", Kind.VISIT, 33, anon=d, channel="email", path="/blog"),
        ],
        [
            ev(B, "s1", Kind.STAGE_CHANGED, 42, lead=SHARED_LEAD, action="disqualify",
               reason="competitor", actor="rep", answers={}),
            ev(B, "l1", Kind.DEAL_LOST, 43, lead=user, deal_id="DB", reason="budget",
               amount=10.0, currency="USD"),
        ],
        [
            ev(B, "e1", Kind.ERASURE_REQUESTED, 79, lead=user, subject_email=None,
               requested_by="b-dpo"),
        ],
    ]  # fmt: skip


def interleave(a: list[Event], b: list[Event]) -> list[Event]:
    out: list[Event] = []
    for i in range(max(len(a), len(b))):
        out += [*b[i : i + 1], *a[i : i + 1]]  # B first: the attack precedes A's events
    return out


def _ends(settings: Settings) -> dict[tuple[str, int], int]:
    """The end of every partition of every output topic."""
    return {tp: high for tp, (_, high) in topic_ends(settings, [t.name for t in OUTPUTS]).items()}


def _settle(settings: Settings, quiet: float = 8.0, limit: float = 180.0) -> None:
    """Wait until no output topic grew for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    last, since = _ends(settings), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the worker did not settle"
        time.sleep(1.0)
        now = _ends(settings)
        if now != last:
            last, since = now, time.monotonic()


def _workspace_of(key: bytes | None, record: object) -> str | None:
    found = getattr(record, "workspace_id", None)
    if found is not None:
        return str(found)
    # A deadline tick names only its lead: the record key (the lead's scoped key) says whose.
    text = (key or b"").decode(errors="replace")
    return A if f'"{A}"' in text else B if f'"{B}"' in text else None


def _steps_of(value: bytes, workspace: str) -> list[bytes]:
    """``workspace``'s clock steps in a clock record, each without its release position.

    One clock record carries the steps of every workspace of a batch, and a step's ``at``
    is its record's ``R'``: a position in the inbound partition, which every workspace
    routed through that partition shares (docs/privacy.md). What the workspace decides
    (its hour, the event that stepped, its event time) must not depend on another.
    """
    return [
        json.dumps([s.workspace, s.value, s.key.occurred_at, s.key.event_id, s.key.rank]).encode()
        for s in decode_steps(value)
        if s.workspace == workspace
    ]


def records_of(settings: Settings, workspace: str) -> list[tuple[str, bytes, bytes]]:
    """Every record the worker wrote for ``workspace``: (topic, key, value), sorted.

    A clock record counts as one record per step of ``workspace`` (:func:`_steps_of`).
    """
    ends = _ends(settings)
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"iso-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            # The engine's outputs are transactional: a partition ends with a commit marker
            # no message reaches, so its end is the EOF event, not the last offset read.
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end])
    # Until EOF: a partition ends with a commit marker no message reaches.
    pending: dict[tuple[str, int], int | None] = {tp: None for tp, end in ends.items() if end}
    found: list[tuple[str, bytes, bytes]] = []
    messages = read_to_end(
        consumer, pending, deadline=time.monotonic() + 60, on_error=lambda _m: None
    )
    try:
        for msg in messages:
            key, value = msg.key(), msg.value() or b""
            if header(msg.headers(), MARKER) == CLOCK_MARKER.encode():
                found += [(str(msg.topic()), b"clock", s) for s in _steps_of(value, workspace)]
                continue
            try:
                record: object = CODEC.decode(value)
            except Exception:  # a dead letter's raw value: its original event says whose
                record = None
            ws = _workspace_of(key, record) if record is not None else None
            if ws is None and workspace.encode() in value:
                ws = workspace
            if ws == workspace:
                found.append((str(msg.topic()), key or b"", value))
    except EndNotReached as exc:
        raise AssertionError(f"not read to the end: {exc.pending}") from exc
    finally:
        consumer.close()
    return sorted(found)


def clickhouse_rows(client: Any, database: str, workspace: str) -> dict[str, list[tuple]]:
    # What the projector writes from the log; the path caches carry refresh times.
    tables = [t.name for t in PROJECTED_TABLES if t is not LEAD_STATE] + ["v_lead_state"]
    rows = {
        name: [tuple(r) for r in client.query(
            f"SELECT * FROM {database}.{name} FINAL WHERE workspace_id = {{ws:String}} "
            "ORDER BY ALL" if name != "v_lead_state" else
            f"SELECT * FROM {database}.{name} WHERE workspace_id = {{ws:String}} ORDER BY ALL",
            parameters={"ws": workspace}).result_rows]
        for name in tables
    }  # fmt: skip
    # An identify's link reaches `identities` twice with one sort key (the raw event and the
    # worker's IdentityLinked); FINAL keeps whichever batch the projector inserted last, so
    # the provenance label source_kind depends on timing (docs/architecture.md, "What is a
    # function of the log"). The link itself does not.
    rows["identities"] = sorted({r[:-1] for r in rows["identities"]})
    return rows


def run(settings: Settings, phases: list[list[Event]], data_dir: Any) -> None:
    worker = WorkerProcess(settings, data_dir, env={"LEADFLOW_PII_ENCRYPTION": "false"})
    worker.start()
    try:
        for phase in phases:
            send(settings, phase)
            _settle(settings)
        assert not worker.exited(), worker.tail()
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def lone(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A broker of its own for A's journey alone (the same topics, nothing else on them)."""
    home = tmp_path_factory.mktemp("lone")
    port, controller = free_port(), free_port()
    broker = LocalKafka(home / "kafka", install(kafka), port, controller, heap="512m")
    broker.start()
    settings = kafka.model_copy(
        update={"kafka_bootstrap": None, "kafka_port": port,
                "kafka_controller_port": controller, "data_dir": home}
    )  # fmt: skip
    try:
        create_topics(settings)
        yield settings
    finally:
        broker.stop()


# Failed on the faust worker (one deadline clock for all workspaces); passes on the engine's
# per-(partition, workspace) clock with issue 14's workspace-scoped keys.
def test_two_workspaces_with_the_same_ids_are_two_people(
    kafka: Settings,
    lone: Settings,
    clickhouse_session: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    create_topics(kafka)
    a, b = journey_a(), journey_b()
    run(lone, a, tmp_path_factory.mktemp("worker-alone"))
    run(kafka, [interleave(pa, pb) for pa, pb in zip(a, b, strict=True)],
        tmp_path_factory.mktemp("worker-both"))  # fmt: skip

    alone, both = records_of(lone, A), records_of(kafka, A)
    assert alone, "A's journey produced nothing"
    assert [t for t, _, _ in alone if t == DLQ.name] == []  # nothing of A dead-lettered
    assert both == alone  # byte for byte, keys included
    mine_b = records_of(kafka, B)
    assert [t for t, _, _ in mine_b if t == DLQ.name] == []  # B is not locked out either
    assert {t for t, _, _ in mine_b} >= {EVENTS_BY_LEAD.name, IDENTITIES.name}

    dbs = {}
    for name, settings in (("alone", lone), ("both", kafka)):
        db = f"iso_{name}_{U}"
        clickhouse_session.command(f"DROP DATABASE IF EXISTS {db}")
        projector = Projector(settings, clickhouse_session, db, group_id=f"iso-{name}-{U}")
        projector.run_until_idle(max_seconds=180)
        dbs[name] = db
    try:
        rows_alone = clickhouse_rows(clickhouse_session, dbs["alone"], A)
        assert rows_alone["events"]
        assert rows_alone["identities"]
        assert clickhouse_rows(clickhouse_session, dbs["both"], A) == rows_alone
        # A's identities name only A's events as their source.
        where = "WHERE workspace_id = {ws:String}"
        sql = f"SELECT source_event_id FROM {dbs['both']}.identities {where}"
        ids = {r[0] for r in clickhouse_session.query(sql, parameters={"ws": A}).result_rows}
        assert all(i.startswith(f"{A}-") for i in ids), ids
    finally:
        for db in dbs.values():
            clickhouse_session.command(f"DROP DATABASE IF EXISTS {db}")
