"""The projector against the real broker: exact counts, dead letters, re-delivery, replay.

Rows are counted for this test's own workspace id, so other tests producing to the same
contract topics in the same session cannot disturb the numbers.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from leadflow.processors.events import Event, Kind
from leadflow.schemas.codec import codec_from_settings
from leadflow.sinks import projector as projector_module
from leadflow.sinks import reports
from leadflow.sinks.projector import PROJECTED_TOPICS, Projector
from leadflow.sinks.replay import replay
from leadflow.streams.settings import Settings
from leadflow.streams.topics import DLQ, EVENTS, LEAD_SCORED, LEAD_STAGE_CHANGED, create_topics
from tests.integration.sinks import scenario
from tests.unit.recorded_log import Recorded

RANGE = {"date_from": date(2025, 12, 1), "date_to": date(2026, 3, 1)}


def _objects(workspace: str) -> list[Any]:
    return [dataclasses.replace(o, workspace_id=workspace) for o in scenario.everything()]  # type: ignore[type-var]


def topic_and_key(obj: Any) -> tuple[str, str]:
    """The topic and key the pipeline writes a scenario object under."""
    if isinstance(obj, Event):
        return EVENTS.name, obj.person_key
    if type(obj).__name__ == "StageChanged":
        return LEAD_STAGE_CHANGED.name, obj.lead_id
    return LEAD_SCORED.name, obj.lead_id


def _produce(settings: Settings, objects: list[Any], garbage: bytes | None = None) -> None:
    codec = codec_from_settings(settings)
    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    for obj in objects:
        topic, key = topic_and_key(obj)
        producer.produce(topic, value=codec.encode(obj), key=key.encode())
    if garbage is not None:
        workspace = objects[0].workspace_id
        key = json.dumps([workspace, "bad"]).encode()  # a scoped key names the workspace
        producer.produce(EVENTS.name, value=garbage, key=key, headers=[("origin", b"test")])
    assert producer.flush(30) == 0


def _counts(client: Any, db: str, workspace: str) -> dict[str, int]:
    out = {}
    for view in ("v_events", "v_identities", "v_stage_transitions", "v_scores", "v_deals",
                 "v_costs", "v_lead_state"):  # fmt: skip
        out[view] = client.query(
            f"SELECT count() FROM {db}.{view} WHERE workspace_id = {{w:String}}",
            parameters={"w": workspace},
        ).result_rows[0][0]
    return out


def _dead_letters(settings: Settings, marker: bytes) -> list[dict[str, bytes]]:
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"dlq-{uuid.uuid4()}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe([DLQ.name])
    found = []
    try:
        for _ in range(30):
            for message in consumer.consume(100, timeout=1.0):
                if message.error() is None and message.value() == marker:
                    found.append({k: v for k, v in (message.headers() or [])})
            if found:
                break
    finally:
        consumer.close()
    return found


EXPECTED = {
    "v_events": 12, "v_identities": 2, "v_stage_transitions": 8, "v_scores": 3, "v_deals": 1,
    "v_costs": 2, "v_lead_state": 2,
}  # fmt: skip


def test_project_redeliver_and_replay(
    kafka: Settings, clickhouse_session: Any, clickhouse_db: str
) -> None:
    create_topics(kafka)
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    garbage = b"not avro " + workspace.encode()
    # With a lost deal that carries no amount (the replay below rebuilds it as NULL).
    lost = scenario.ev("x1", Kind.DEAL_LOST, 10, lead="L2", payload={"reason": "price"})
    objects = [*_objects(workspace), dataclasses.replace(lost, workspace_id=workspace)]
    expected = {**EXPECTED, "v_events": 13, "v_deals": 2}
    _produce(kafka, objects, garbage)

    group = f"projector-{workspace}"
    first = Projector(kafka, clickhouse_session, clickhouse_db, group_id=group, batch_size=5)
    stats = first.run_until_idle(max_seconds=120)
    assert stats.records >= len(objects) + 1
    assert stats.dead_lettered >= 1
    assert _counts(clickhouse_session, clickhouse_db, workspace) == expected
    # Its own dead letter was projected too (headers only): workspace from the key, reason.
    refused = clickhouse_session.query(
        f"SELECT stage, source_topic, reason != '', bytes FROM {clickhouse_db}.v_dead_letters "
        "WHERE workspace_id = {w:String}",
        parameters={"w": workspace},
    ).result_rows
    assert [tuple(r) for r in refused] == [("projector", EVENTS.name, True, len(garbage))]
    # The projector refreshed the attribution paths when it ran dry: L1, L2 and the
    # anonymous a3 have their journeys before any report asked.
    journeys = clickhouse_session.query(
        f"SELECT person_id FROM {clickhouse_db}.journeys FINAL WHERE workspace_id = {{w:String}} "
        "ORDER BY person_id",
        parameters={"w": workspace},
    ).result_rows
    assert [r[0] for r in journeys] == ["L1", "L2", "anon:a3"]
    linear = reports.attribution(
        clickhouse_session,
        clickhouse_db,
        model="linear",
        conversion="won",
        workspace=workspace,
        **RANGE,
    )
    assert {r[0]: round(r[1], 9) for r in linear.rows} == {
        "organic_search": 0.2, "paid_search": 0.2, "direct": 0.4, "email": 0.2,
    }  # fmt: skip

    letters = _dead_letters(kafka, garbage)
    assert len(letters) == 1
    assert letters[0]["origin"] == b"test"  # original headers kept
    assert letters[0]["source.topic"] == EVENTS.name.encode()
    assert letters[0]["reason"]
    assert letters[0]["error"]

    # Same group again: everything was committed, nothing is re-read.
    again = Projector(kafka, clickhouse_session, clickhouse_db, group_id=group)
    assert again.run_until_idle(max_seconds=60).records == 0

    # Every record delivered a second time: counts and numbers do not move.
    _produce(kafka, objects)
    redelivered = Projector(kafka, clickhouse_session, clickhouse_db, group_id=group)
    assert redelivered.run_until_idle(max_seconds=120).records >= len(objects)
    assert _counts(clickhouse_session, clickhouse_db, workspace) == expected
    after = reports.attribution(
        clickhouse_session,
        clickhouse_db,
        model="linear",
        conversion="won",
        workspace=workspace,
        **RANGE,
    )
    assert after.rows == linear.rows

    # A replay from offset 0 (a fresh group) over the same database changes nothing either.
    from_zero = Projector(kafka, clickhouse_session, clickhouse_db, group_id=f"{group}-replay")
    assert from_zero.run_until_idle(max_seconds=120).records >= 2 * len(objects)
    assert _counts(clickhouse_session, clickhouse_db, workspace) == expected

    # The lost deal as the projector stored it before migration 8: 0. The migration rewrote
    # no row; a replay projects the topic again, so it is NULL after.
    lost_amount = (
        f"SELECT amount FROM {{db}}.deals FINAL WHERE workspace_id = '{workspace}'"
        " AND outcome = 'lost'"
    )
    clickhouse_session.command(
        f"ALTER TABLE {clickhouse_db}.deals UPDATE amount = 0 WHERE workspace_id = "
        f"'{workspace}' AND outcome = 'lost' SETTINGS mutations_sync = 2"
    )
    assert clickhouse_session.query(lost_amount.format(db=clickhouse_db)).result_rows == [(0.0,)]

    # leadflow replay: rebuild from offset 0 into <db>_r1 and swap it in.
    progress: list[int] = []
    result = replay(
        kafka, clickhouse_session, clickhouse_db, max_seconds=120,
        on_batch=lambda s: progress.append(s.records),
    )  # fmt: skip
    try:
        assert result.previous_data_in == f"{clickhouse_db}_r1"
        assert result.stats.records >= 2 * len(objects)
        assert progress == sorted(progress)
        assert progress[-1] == result.stats.records
        assert _counts(clickhouse_session, clickhouse_db, workspace) == expected
        rebuilt = reports.attribution(
            clickhouse_session,
            clickhouse_db,
            model="linear",
            conversion="won",
            workspace=workspace,
            **RANGE,
        )
        assert rebuilt.rows == linear.rows
        # The previous tables (same numbers) were swapped into the version database.
        old = result.previous_data_in
        assert clickhouse_session.query(
            f"SELECT count() FROM {old}.stage_transitions FINAL WHERE workspace_id = {{w:String}}",
            parameters={"w": workspace},
        ).result_rows == [(8,)]
        rebuilt_lost = clickhouse_session.query(lost_amount.format(db=clickhouse_db))
        assert rebuilt_lost.result_rows == [(None,)]
        assert clickhouse_session.query(lost_amount.format(db=old)).result_rows == [(0.0,)]
    finally:
        clickhouse_session.command(f"DROP DATABASE IF EXISTS {result.previous_data_in}")


class DownFirst:
    """The session client, except that the first ``failures`` inserts fail (ClickHouse down)."""

    def __init__(self, client: Any, failures: int) -> None:
        self.client = client
        self.failures = failures

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Connection refused")
        return self.client.insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_clickhouse_down_backs_off_then_catches_up(
    kafka: Settings,
    clickhouse_session: Any,
    clickhouse_db: str,
    counts_checked: Callable[[str], None],
) -> None:
    create_topics(kafka)
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    objects = _objects(workspace)
    _produce(kafka, objects)
    waits: list[float] = []
    projector = Projector(
        kafka, DownFirst(clickhouse_session, failures=5), clickhouse_db,
        group_id=f"down-{workspace}", sleep=waits.append,
    )  # fmt: skip
    stats = projector.run_until_idle(max_seconds=120)
    assert stats.insert_retries == 5
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert _counts(clickhouse_session, clickhouse_db, workspace) == EXPECTED
    # Everything was committed once ClickHouse came back: the group has nothing left to read.
    again = Projector(kafka, clickhouse_session, clickhouse_db, group_id=f"down-{workspace}")
    assert again.run_until_idle(max_seconds=60).records == 0
    counts_checked(
        f"5 failed inserts, backoff {waits}; then counts {EXPECTED}; 0 records left uncommitted"
    )


def test_a_missing_topic_is_named_and_counted_not_taken_for_an_end(
    kafka: Settings, clickhouse_session: Any, clickhouse_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the broker answers for a subscribed topic that was never created (or deleted):
    # the projector goes on with the others, but says so instead of looking caught up.
    create_topics(kafka)
    missing = f"leadflow.missing-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(projector_module, "PROJECTED_TOPICS", (*PROJECTED_TOPICS, missing))
    recorded = Recorded()
    monkeypatch.setattr(projector_module, "log", recorded)
    projector = Projector(kafka, clickhouse_session, clickhouse_db, group_id=f"g-{missing}")
    stats = projector.run_until_idle(max_seconds=60)
    assert stats.unknown_topic_errors >= 1
    named = {
        f["topic"]
        for event, f in recorded.events("warning")
        if event == "projector.unknown_topic_or_partition"
    }
    assert named == {missing}


# A projector in a process of its own, killed -9 once it holds its partitions: no LeaveGroup.
_MEMBER = """
import sys, time
from leadflow.sinks.projector import Projector
from leadflow.streams.settings import Settings

settings = Settings(kafka_bootstrap=sys.argv[1], kafka_session_timeout_seconds=6)
consumer = Projector(settings, None, "unused", group_id=sys.argv[2])._open()
while not consumer.assignment():
    consumer.poll(0.2)
print("assigned", flush=True)
while True:
    consumer.poll(0.2)
"""


def test_a_restart_after_a_kill_waits_for_the_session_setting_not_45_s(
    kafka: Settings, clickhouse_session: Any, clickhouse_db: str
) -> None:
    """The group holds a killed member's partitions for its session, also from its restart.

    librdkafka's default session is 45 s, which is how long ClickHouse took nothing after a
    projector was killed (session 15); the projector now joins with
    ``LEADFLOW_KAFKA_SESSION_TIMEOUT_SECONDS`` (6 s here).
    """
    create_topics(kafka)
    group = f"projector-kill-{uuid.uuid4().hex[:8]}"
    member = subprocess.Popen(
        [sys.executable, "-c", _MEMBER, kafka.bootstrap, group],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert member.stdout is not None
        assert member.stdout.readline().strip() == "assigned"
    finally:
        member.kill()
        member.wait()
    killed = time.monotonic()
    settings = kafka.model_copy(update={"kafka_session_timeout_seconds": 6.0})
    restarted = Projector(settings, clickhouse_session, clickhouse_db, group_id=group)
    consumer = restarted._open()
    try:
        while not consumer.assignment():
            consumer.poll(0.2)
            # Not a speed target: the old 45 s session against 6 s, with room for a slow machine.
            assert time.monotonic() - killed < 25, "the dead member's session held the partitions"
        assert time.monotonic() - killed >= 5.0  # the dead member's session was waited out
    finally:
        restarted.close()
