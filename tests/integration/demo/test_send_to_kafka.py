"""A small simulation into the real broker: straight to Kafka, and through a real collector."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from leadflow.demo.simulator.generator import SimConfig, iso, simulate
from leadflow.demo.simulator.send import kafka_sender, send_http, send_kafka
from leadflow.processors.events import Event
from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.control import is_control
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, create_topics
from tests.integration.collector.conftest import end_offsets, make_collector, serve


@pytest.fixture(scope="module")
def topics(kafka: Settings) -> Settings:
    create_topics(kafka)
    return kafka


def consume(settings: Settings, since: dict[int, int], count: int) -> Iterator[tuple[bytes, Event]]:
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "simulator-tests",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(EVENTS.name, p, o) for p, o in since.items()])
    codec = codec_from_settings(settings)
    found = 0
    deadline = time.monotonic() + 60
    try:
        while found < count and time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is None or record.error() or is_control(record.headers()):
                continue  # the trailing heartbeats are not events
            event = codec.decode(record.value())
            assert isinstance(event, Event)
            found += 1
            yield record.key(), event
    finally:
        consumer.close()
    assert found == count, f"expected {count} records, found {found}"


def test_bulk_send_straight_to_kafka(topics: Settings) -> None:
    messages = list(simulate(SimConfig(people=150, days=45, seed=21)))
    before = end_offsets(topics)
    report = send_kafka(messages, settings=topics, workspace_id="ws-sim")
    assert report.sent == len(messages)
    events = {event.event_id: (key, event) for key, event in consume(topics, before, len(messages))}
    assert set(events) == {m["messageId"] for m in messages}
    for message in messages:
        key, event = events[message["messageId"]]
        assert key == event.person_key.encode()
        assert event.workspace_id == "ws-sim"
        assert iso(event.occurred_at) == message["timestamp"]  # event time survives exactly
        assert event.lead_id == message.get("userId")
        assert event.anonymous_id == message.get("anonymousId")
    after = end_offsets(topics)
    # Nothing extra but the closing heartbeat on every partition (streams/control.py).
    assert sum(after.values()) - sum(before.values()) == len(messages) + len(after)


def test_sends_share_a_producer_and_each_is_complete(topics: Settings) -> None:
    # Two sends through one producer (what bench.pipeline does to keep it warm): each
    # delivers all of its records, and the second one's are there too.
    messages = list(simulate(SimConfig(people=40, days=20, seed=23)))
    producer = kafka_sender(topics)
    before = end_offsets(topics)
    first = send_kafka(messages, settings=topics, workspace_id="ws-a", producer=producer)
    second = send_kafka(messages, settings=topics, workspace_id="ws-b", producer=producer)
    assert first.sent == second.sent == len(messages)
    found = [event for _, event in consume(topics, before, 2 * len(messages))]
    ids = {m["messageId"] for m in messages}
    assert {e.event_id for e in found if e.workspace_id == "ws-a"} == ids
    assert {e.event_id for e in found if e.workspace_id == "ws-b"} == ids


def test_default_path_through_a_real_collector(topics: Settings, tmp_path_factory) -> None:
    collector, key = make_collector(topics, tmp_path_factory.mktemp("sim") / "keys.json")
    messages = list(simulate(SimConfig(people=80, days=30, seed=22)))
    before = end_offsets(topics)
    with serve(collector) as url:
        report = send_http(messages, collector_url=url, write_key=key)
    assert report.sent == len(messages)
    events = {e.event_id: e for _, e in consume(topics, before, len(messages))}
    assert set(events) == {m["messageId"] for m in messages}
    for message in messages:
        event = events[message["messageId"]]
        assert event.workspace_id == "ws-acme"
        # sentAt is stamped at send time, so the skew correction moves event time by the
        # request's latency only (milliseconds), never by the months of compressed time.
        assert abs(event.occurred_at - _ms(message["timestamp"])) < 60_000
    channels = {e.context.channel for e in events.values() if e.kind.value == "visit"}
    assert {"paid_search", "organic_search", "direct"} <= channels


def _ms(timestamp: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)
