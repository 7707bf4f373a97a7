"""Kafka unreachable -> 503 with Retry-After; back -> 200; acknowledged events are in Kafka once."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from leadflow.processors.events import Event
from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.control import is_control
from leadflow.streams.local_kafka import scratch_broker
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, create_topics
from tests.conftest import free_port
from tests.integration.collector.conftest import Running, end_offsets, make_collector, serve


def deal(message_id: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"event": "Deal Won", "userId": "u1", "properties": {"amount": 1}}
    if message_id:
        body["messageId"] = message_id
    return body


def test_dead_broker_answers_503_with_retry_after(
    collector_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dead = collector_settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "collector_retry_after_seconds": 7}
    )
    collector, key = make_collector(dead, tmp_path_factory.mktemp("dead") / "keys.json")
    with serve(collector) as url:
        response = httpx.post(f"{url}/v1/track", json=deal(), auth=(key, ""), timeout=30)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"] == "unavailable"
        batch = {"batch": [{"type": "track", **deal()} for _ in range(3)]}
        assert (
            httpx.post(f"{url}/v1/batch", json=batch, auth=(key, ""), timeout=30).status_code == 503
        )
        # A request that cannot be read is the client's problem, whatever Kafka does...
        unreadable = httpx.post(f"{url}/v1/track", content=b"{", auth=(key, ""))
        assert unreadable.status_code == 400
        # ...but a refused message must reach the dead-letter topic: that needs Kafka too.
        bad = httpx.post(f"{url}/v1/track", json={"event": "Deal Won"}, auth=(key, ""))
        assert bad.status_code == 503
        assert httpx.get(f"{url}/ready", timeout=10).status_code == 503
        assert httpx.get(f"{url}/health").status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert 'leadflow_collector_events_rejected_total{reason="unavailable"} 5.0' in metrics


def test_rate_limit_per_write_key(
    collector_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    now = [100.0]
    limited = collector_settings.model_copy(
        update={"collector_rate_per_second": 2.0, "collector_rate_burst": 3.0}
    )
    collector, key = make_collector(
        limited, tmp_path_factory.mktemp("rate") / "keys.json", monotonic=lambda: now[0]
    )
    before = end_offsets(limited)
    with serve(collector) as url:
        batch = {"batch": [{"type": "track", **deal()} for _ in range(3)]}
        assert (
            httpx.post(f"{url}/v1/batch", json=batch, auth=(key, ""), timeout=30).status_code == 200
        )
        refused = httpx.post(f"{url}/v1/track", json=deal(), auth=(key, ""), timeout=30)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        now[0] += 0.5  # one token back at 2/s
        assert (
            httpx.post(f"{url}/v1/track", json=deal(), auth=(key, ""), timeout=30).status_code
            == 200
        )
    after = end_offsets(limited)
    assert sum(after.values()) - sum(before.values()) == 4


@pytest.mark.slow
def test_broker_stop_and_restart(
    base_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    counts_checked: Callable[[str], None],
) -> None:
    """Our own broker (the session's stays up): stop it, get 503s, restart, retry."""
    home = tmp_path_factory.mktemp("own-kafka")
    with scratch_broker(base_settings, home) as (broker, scratch):
        settings = scratch.model_copy(
            update={
                "topic_partitions": 2,
                "collector_delivery_timeout_seconds": 6.0,
                "collector_retry_after_seconds": 1,
            }
        )
        create_topics(settings, [EVENTS])
        collector, key = make_collector(settings, home / "keys.json")
        acknowledged: list[str] = []
        refused: list[str] = []
        with serve(collector) as url:
            running = Running(url, key, collector.settings, collector)

            def post(message_id: str) -> int:
                return httpx.post(
                    f"{running.url}/v1/track", json=deal(message_id), auth=(key, ""), timeout=30
                ).status_code

            for _ in range(10):
                mid = str(uuid.uuid4())
                assert post(mid) == 200
                acknowledged.append(mid)
            broker.stop()
            deadline = time.monotonic() + 60
            while True:
                mid = str(uuid.uuid4())
                status = post(mid)
                assert status in (200, 503)
                (acknowledged if status == 200 else refused).append(mid)
                if status == 503:
                    break
                assert time.monotonic() < deadline, "never saw a 503 with the broker down"
            broker.start()
            # Clients retry what was refused, with the same ids, until Kafka is back.
            deadline = time.monotonic() + 90
            for mid in refused:
                while (status := post(mid)) == 503:
                    assert time.monotonic() < deadline, "collector never recovered"
                    time.sleep(0.5)
                assert status == 200
                acknowledged.append(mid)
            for _ in range(5):
                mid = str(uuid.uuid4())
                assert post(mid) == 200
                acknowledged.append(mid)
        counts = Counter(read_all_ids(settings))
        assert {mid: counts[mid] for mid in acknowledged} == {mid: 1 for mid in acknowledged}
        counts_checked(
            f"broker stopped and restarted: {len(refused)} request(s) answered 503 and retried, "
            f"{len(acknowledged)} acknowledged, each exactly once in Kafka "
            f"({sum(counts.values())} records on the topic)"
        )


def read_all_ids(settings: Settings) -> list[str]:
    codec = codec_from_settings(settings)
    total = sum(end_offsets(settings).values())
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": "outage-test", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(EVENTS.name, p, 0) for p in end_offsets(settings)])
    ids: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(ids) < total and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or is_control(msg.headers()):
                continue  # heartbeats are not events
            event = codec.decode(msg.value())
            assert isinstance(event, Event)
            ids.append(event.event_id)
    finally:
        consumer.close()
    assert len(ids) == total
    return ids
