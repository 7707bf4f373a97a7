"""`leadflow dlq show|replay` on the real broker, with letters the real projector wrote."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition

from leadflow.cli.main import cli
from leadflow.processors.events import Context, Event, Kind
from leadflow.schemas.codec import codec_from_settings
from leadflow.sinks.projector import Projector
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, create_topics


def _produce(settings: Settings, key: bytes | None, value: bytes) -> str:
    where: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        where.append(f"{msg.topic()}:{msg.partition()}:{msg.offset()}")

    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    producer.produce(EVENTS.name, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    return where[0]


def _record_at(settings: Settings, topic: str, partition: int, offset: int) -> Any:
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"t-{uuid.uuid4()}",
         "enable.auto.commit": False}
    )  # fmt: skip
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                return message
    finally:
        consumer.close()
    raise AssertionError("record not found")


@pytest.fixture
def invoke(kafka: Settings, tmp_path: Any) -> Any:
    env = {
        "LEADFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "LEADFLOW_DATA_DIR": str(tmp_path),
        "LEADFLOW_LOG_FORMAT": "json",
    }

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=env)

    return run


def test_show_and_replay_a_dead_letter(
    kafka: Settings, clickhouse_session: Any, clickhouse_db: str, invoke: Any
) -> None:
    create_topics(kafka)
    codec = codec_from_settings(kafka)
    anon = f"dlq-{uuid.uuid4().hex[:8]}"
    event = Event(
        f"{anon}-e1", Kind.VISIT, "ws-dlq", 1_767_225_600_000, 1_767_225_600_000,
        anonymous_id=anon, context=Context(path="/pricing"),
    )  # fmt: skip
    keyless = _produce(kafka, None, codec.encode(event))
    garbage = _produce(kafka, anon.encode(), b"garbage " + anon.encode())
    group = f"dlq-cli-{anon}"
    Projector(kafka, clickhouse_session, clickhouse_db, group_id=group).run_until_idle(120)

    shown = invoke("dlq", "show", "--format", "json", "--limit", "100000")
    assert shown.exit_code == 0, shown.output
    assert "warning" not in shown.stderr  # every partition read to its end
    letters = [x for x in json.loads(shown.output) if x["by"] == f"projector:{group}"]
    by_source = {x["source"]: x for x in letters}
    assert by_source[keyless]["reason"] == "missing_key"
    assert by_source[keyless]["key"] == ""
    assert by_source[garbage]["reason"] == "bad_magic"
    table = invoke("dlq", "show", "--reason", "missing_key")
    assert table.exit_code == 0
    assert "missing_key" in table.output
    assert "bad_magic" not in table.output

    # No key: the operator must say which; garbage: refused, it would bounce again.
    no_key = invoke("dlq", "replay", "--source", keyless)
    assert no_key.exit_code == 2
    assert "had no key: give --key" in no_key.output
    refused = invoke("dlq", "replay", "--source", garbage)
    assert refused.exit_code == 1
    assert "does not decode (bad_magic)" in refused.output
    bad = invoke("dlq", "replay", "--source", "nowhere:1:2")
    assert bad.exit_code == 2

    person = event.person_key  # ["ws-dlq","<device>"]: the key names the workspace too
    replayed = invoke("dlq", "replay", "--source", keyless, "--key", person)
    assert replayed.exit_code == 0, replayed.output
    assert f"replayed {keyless} to {EVENTS.name} with key '{person}'" in replayed.output

    # The replayed record: same bytes, now keyed; the projector takes it as a row.
    before = clickhouse_session.query(
        f"SELECT count() FROM {clickhouse_db}.v_events WHERE event_id = %(e)s",
        parameters={"e": event.event_id},
    ).result_rows[0][0]
    stats = Projector(kafka, clickhouse_session, clickhouse_db, group_id=group).run_until_idle(60)
    after = clickhouse_session.query(
        f"SELECT count() FROM {clickhouse_db}.v_events WHERE event_id = %(e)s",
        parameters={"e": event.event_id},
    ).result_rows[0][0]
    assert (before, after) == (0, 1)
    assert stats.dead_lettered == 0
    topic, partition, offset = keyless.split(":")
    original = _record_at(kafka, topic, int(partition), int(offset))
    assert original.key() is None
