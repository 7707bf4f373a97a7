"""Bad Kafka records in front of the projector: a dead letter each, with a reason header;
offsets committed past them; nothing of them in ClickHouse; the good records around them
projected exactly once.

The worker's side of the same corpus is tests/integration/pipeline/test_poison.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from leadflow.processors.derived import LeadScored, Stage
from leadflow.processors.events import Context, Event, Kind
from leadflow.schemas.codec import SINGLE_OBJECT_MAGIC, SingleObjectCodec
from leadflow.sinks.projector import Projector
from leadflow.streams.settings import Settings
from leadflow.streams.topics import DLQ, EVENTS, LEAD_SCORED, create_topics
from tests.integration.sinks.scenario import T0

CODEC = SingleObjectCodec()
NO_KEY = b"<no key>"


def _event(workspace: str, kind: Kind = Kind.VISIT, **fields: Any) -> Event:
    envelope: dict[str, Any] = {
        "event_id": f"{workspace}-{uuid.uuid4().hex[:8]}",
        "kind": kind,
        "workspace_id": workspace,
        "occurred_at": T0,
        "received_at": T0,
        "anonymous_id": f"{workspace}-device",
        "lead_id": None,
        "context": Context(),
        "payload": {},
    }
    envelope.update(fields)
    return Event(**envelope)


def corpus(workspace: str) -> dict[str, tuple[str, bytes | None, bytes, str]]:
    """``case: (topic, key, value, reason header)``; values are unique to this run."""
    tag = workspace.encode()
    good = CODEC.encode(_event(workspace))
    device = f"{workspace}-device".encode()
    scored = LeadScored(f"{workspace}-s", workspace, "L1", T0, 1.0, 2.0, None, None, (), "e",
                        Stage.LEAD)  # fmt: skip
    bad_cost = _event(
        workspace, Kind.CAMPAIGN_COST, anonymous_id=None,
        payload={"date": "2026-13-45", "channel": "paid_search", "campaign": None,
                 "amount": 10.0, "currency": "USD"},
    )  # fmt: skip
    return {
        "garbage bytes": (EVENTS.name, device, b"garbage " + tag, "bad_magic"),
        "empty value": (EVENTS.name, device, b"", "empty"),
        "wrong fingerprint": (
            EVENTS.name, device, SINGLE_OBJECT_MAGIC + uuid.uuid4().bytes[:8] + good[10:],
            "unknown_fingerprint",
        ),
        "truncated avro": (EVENTS.name, device, good[: len(good) // 2], "corrupt_body"),
        "trailing bytes": (EVENTS.name, device, good + b"\x00" + tag, "trailing_bytes"),
        "derived record on the event log": (
            EVENTS.name, b"L1", CODEC.encode(scored), "wrong_record_type",
        ),
        "inbound event on a derived topic": (
            LEAD_SCORED.name, b"L1", CODEC.encode(_event(workspace)), "wrong_record_type",
        ),
        "missing key": (EVENTS.name, NO_KEY, CODEC.encode(_event(workspace)), "missing_key"),
        "another person's key": (
            EVENTS.name, b"someone-else", CODEC.encode(_event(workspace)), "wrong_key",
        ),
        "event naming no person": (
            EVENTS.name, device, CODEC.encode(_event(workspace, anonymous_id=None)), "no_person",
        ),
        "campaign cost with an impossible date": (
            EVENTS.name, bad_cost.person_key.encode(), CODEC.encode(bad_cost), "invalid_event",
        ),
    }  # fmt: skip


Coordinates = tuple[str, int, int]  # topic, partition, offset of the original record


def _dead_letters(settings: Settings, sources: set[Coordinates]) -> list[dict[str, Any]]:
    """Every DLQ record whose source is one of ``sources`` (another test's projector with a
    fresh group may dead-letter the same record again, so reading settles for a while)."""
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"bad-input-{uuid.uuid4()}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe([DLQ.name])
    found: list[dict[str, Any]] = []
    deadline, settle = time.monotonic() + 60, None
    try:
        while time.monotonic() < (settle or deadline):
            for message in consumer.consume(200, timeout=0.5):
                if message.error() is not None:
                    continue
                headers = {k: v for k, v in (message.headers() or []) if v is not None}
                if headers.get("stage") != b"projector" or "source.topic" not in headers:
                    continue
                source = (
                    headers["source.topic"].decode(),
                    int(headers["source.partition"]),
                    int(headers["source.offset"]),
                )
                if source in sources:
                    found.append(
                        {"key": message.key(), "value": message.value(), "source": source,
                         **headers}
                    )  # fmt: skip
            if settle is None and {f["source"] for f in found} >= sources:
                settle = time.monotonic() + 2.0  # a duplicate dead letter would show
    finally:
        consumer.close()
    return found


def _rows(client: Any, db: str, workspace: str) -> dict[str, int]:
    out = {}
    for table in ("events", "scores", "costs"):
        out[table] = client.query(
            f"SELECT count() FROM {db}.{table} WHERE workspace_id = {{w:String}}",
            parameters={"w": workspace},
        ).result_rows[0][0]
    return out


@pytest.fixture(scope="module")
def projected(kafka: Settings, clickhouse_session: Any) -> tuple[Any, ...]:
    """Produce one good visit, the whole corpus, another good visit; project; collect."""
    create_topics(kafka)
    workspace = f"ws-bad-{uuid.uuid4().hex[:8]}"
    cases = corpus(workspace)
    before, after = _event(workspace), _event(workspace)
    producer = Producer({**kafka.kafka_client_config(), "acks": "all"})
    producer.produce(EVENTS.name, key=before.person_key.encode(), value=CODEC.encode(before))
    sources: dict[str, Coordinates] = {}
    for case, (topic, key, value, _reason) in cases.items():

        def delivered(err: Any, msg: Any, case: str = case) -> None:
            assert err is None, err
            sources[case] = (msg.topic(), msg.partition(), msg.offset())

        producer.produce(
            topic, key=None if key == NO_KEY else key, value=value, on_delivery=delivered
        )
    producer.produce(EVENTS.name, key=after.person_key.encode(), value=CODEC.encode(after))
    assert producer.flush(30) == 0
    assert len(sources) == len(cases)
    db = f"bad_input_{uuid.uuid4().hex[:8]}"
    group = f"bad-input-{workspace}"
    try:
        stats = Projector(kafka, clickhouse_session, db, group_id=group).run_until_idle(120)
        assert stats.dead_lettered >= len(cases)
        # Offsets were committed past every bad record: the group has nothing left.
        again = Projector(kafka, clickhouse_session, db, group_id=group).run_until_idle(60)
        assert again.records == 0
        rows = _rows(clickhouse_session, db, workspace)
    finally:
        clickhouse_session.command(f"DROP DATABASE IF EXISTS {db}")
    letters = _dead_letters(kafka, set(sources.values()))
    by_case = {case: [x for x in letters if x["source"] == src] for case, src in sources.items()}
    return cases, by_case, rows, group


def test_only_the_good_records_reach_clickhouse(
    projected: Any, counts_checked: Callable[[str], None]
) -> None:
    cases, by_case, rows, _group = projected
    assert rows == {"events": 2, "scores": 0, "costs": 0}
    assert set(by_case) == set(cases)
    counts_checked(
        f"{len(cases)} bad records, each dead-lettered exactly once by this projector group "
        f"with its reason (per-case tests); ClickHouse rows are the 2 good records: {rows}"
    )


@pytest.mark.parametrize("case", sorted(corpus("x")))
def test_each_bad_record_is_one_dead_letter_with_its_reason(projected: Any, case: str) -> None:
    cases, by_case, _rows, group = projected
    topic, key, value, reason = cases[case]
    # Exactly one from this run's projector group. Other tests' projectors with fresh
    # groups re-read the whole topic, so with the whole suite more letters with the same
    # source exist, from other groups, each identical to this one.
    letters = by_case[case]
    assert [x["group"].decode() for x in letters].count(group) == 1
    for letter in letters:
        assert letter["value"] == value
        assert letter["reason"].decode() == reason
        assert letter["error"]  # the human-readable detail
        assert letter["source.topic"].decode() == topic
        assert letter["key"] == (None if key == NO_KEY else key)
