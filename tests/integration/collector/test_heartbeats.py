"""The collector's heartbeats: rounds until one passed every request, one late round, then none.

Each round costs the worker a chain of transactions (identity markers, forward markers);
rounds that release nothing were a 10 s tail of them after every burst (session 10,
docs/benchmarks.md). The floor a round carries must still pass every stamp handed out by
more than the allowed lateness, or a worker would hold the request's records.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from leadflow.processors.events import Event
from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.collector import producer as producer_module
from leadflow.streams.collector.app import Collector
from leadflow.streams.collector.producer import EventProducer
from leadflow.streams.control import HEARTBEAT
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS
from tests.integration.collector.conftest import end_offsets, make_collector, serve

PERIOD_MS = 50
LATENESS_MS = 300
AHEAD_MS = 2_000


@pytest.fixture
def beating(
    collector_settings: Settings, tmp_path: Path
) -> Iterator[tuple[str, str, Collector, Settings]]:
    settings = collector_settings.model_copy(
        update={
            "collector_heartbeat_ms": PERIOD_MS,
            "order_lateness_ms": LATENESS_MS,
            "order_max_ahead_ms": AHEAD_MS,
        }
    )
    collector, key = make_collector(settings, tmp_path / "keys.json", heartbeats=True)
    with serve(collector) as url:
        yield url, key, collector, settings


def track(url: str, key: str) -> None:
    body = {"event": "Page Viewed", "messageId": str(uuid.uuid4()), "anonymousId": "anon-hb"}
    response = httpx.post(f"{url}/v1/track", json=body, auth=(key, ""), timeout=30)
    assert response.status_code == 200, response.text


def floors_since(
    settings: Settings, since: dict[int, int]
) -> tuple[dict[int, list[int]], list[int]]:
    """Heartbeat floors per partition of leadflow.events after ``since``, and events' stamps."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "heartbeat-tests"})
    ends = end_offsets(settings)
    consumer.assign([TopicPartition(EVENTS.name, p, o) for p, o in since.items()])
    floors: dict[int, list[int]] = {p: [] for p in since}
    stamps: list[int] = []
    codec = codec_from_settings(settings)
    left = {p for p in since if ends[p] > since[p]}
    deadline = time.monotonic() + 20
    try:
        while left and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if (floor := dict(msg.headers() or []).get(HEARTBEAT)) is not None:
                floors[partition].append(int(floor))
            elif isinstance(event := codec.decode(msg.value() or b""), Event):
                stamps.append(event.received_at)
            if offset + 1 >= ends[partition]:
                left.discard(partition)
    finally:
        consumer.close()
    return floors, stamps


def test_rounds_stop_once_one_passed_every_request_then_one_late_round(
    beating: tuple[str, str, Collector, Settings],
) -> None:
    url, key, collector, settings = beating
    sink = collector.sink
    before = end_offsets(settings)
    track(url, key)
    # Rounds run until a floor passes the stamp by the lateness (300 ms, six periods); the
    # late round is 2.3 s after that.
    time.sleep(0.8)
    promised = sink.heartbeats
    time.sleep(0.6)
    assert sink.heartbeats == promised, "heartbeats went on after a round promised past it"
    # Rounds stopped at the first floor past the stamp by the lateness, not a timeout later.
    assert promised <= LATENESS_MS // PERIOD_MS + 4, promised
    floors, stamps = floors_since(settings, before)
    assert len(stamps) == 1, stamps
    assert all(floors.values()), f"a partition got no heartbeat: {floors}"
    for partition, written in floors.items():
        assert written == sorted(written), f"partition {partition}: floors went back"
        # ripe(key, L) is key + D < L, and the event's key is at most its stamp.
        assert written[-1] > stamps[0] + LATENESS_MS, (partition, written[-1], stamps[0])
    # One late round, the allowed ahead (+ lateness) after the promise: the floor that
    # releases records held behind another writer's future stamp. Then nothing.
    time.sleep(2.0)
    assert sink.heartbeats == promised + 1
    time.sleep(0.8)
    assert sink.heartbeats == promised + 1
    late, _ = floors_since(settings, before)
    assert all(late[p][-1] > floors[p][-1] + AHEAD_MS for p in late), (late, floors)

    # The next request starts them again.
    track(url, key)
    time.sleep(0.5)
    assert sink.heartbeats > promised + 1


def test_a_heartbeat_without_topic_metadata_says_so(
    collector_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No metadata, no heartbeat: workers then release nothing newer, so it is logged.

    It used to return without a word (audit, session 16).
    """
    logged: list[dict[str, object]] = []
    monkeypatch.setattr(
        producer_module.log, "warning", lambda event, **kw: logged.append({"event": event, **kw})
    )
    topic = f"leadflow.no-such-topic-{uuid.uuid4().hex[:8]}"
    producer = EventProducer(
        collector_settings.kafka_client_config(), topic, 5.0, heartbeat=lambda: 1, heartbeat_ms=0
    )
    try:
        producer._beat()
        producer._beat()  # within 10 s of the first: not logged again
    finally:
        producer.close()
    assert [(e["event"], e["topic"], e["partitions_known"]) for e in logged] == [
        ("collector.heartbeat_metadata_failed", topic, 0)
    ]
    assert logged[0]["error"]
