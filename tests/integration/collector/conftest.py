"""A real collector on a free port (uvicorn in a thread) in front of the session's broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from confluent_kafka import Consumer, TopicPartition

from leadflow.streams.collector.app import Collector, build_collector, create_app
from leadflow.streams.collector.keys import KeyStore
from leadflow.streams.collector.server import server_config
from leadflow.streams.control import is_control
from leadflow.streams.kafka_offsets import topic_ends
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, create_topics
from tests.conftest import free_port

# The collector's clock in these tests: 2026-03-01T12:00:00Z, so occurred_at is exact.
RECEIVED_AT = 1_772_366_400_000


@dataclass(frozen=True)
class Running:
    """A collector serving HTTP, with a valid write key for workspace ``ws-acme``."""

    url: str
    write_key: str
    settings: Settings
    collector: Collector


@contextmanager
def serve(collector: Collector) -> Iterator[str]:
    """Run the collector's app with uvicorn on a free port; yield its base URL."""
    port = free_port()
    # The production server options: request deadline, connection cap, keep-alive.
    config = server_config(create_app(collector), collector.settings, "127.0.0.1", port)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("collector did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_collector(
    settings: Settings, keys_file: Path, *, heartbeats: bool = False, **overrides: Any
) -> tuple[Collector, str]:
    """A collector wired to the real producer and codec, and a fresh write key.

    ``heartbeats``: write the heartbeats a worker needs to release records in event-time
    order (off by default: these tests count what reaches leadflow.events).
    """
    # These tests read /metrics and /openapi.json; both are off by default (issue 19,
    # tests/unit/collector/test_exposure.py).
    settings = settings.model_copy(
        update={
            "collector_keys_file": keys_file,
            "collector_expose_metrics": True,
            "collector_expose_docs": True,
            **({} if heartbeats else {"collector_heartbeat_ms": 0}),
        }
    )
    key = KeyStore(keys_file).create("ws-acme", lambda: datetime.now(tz=UTC))
    return build_collector(settings, **overrides), key


@pytest.fixture(scope="module")
def collector_settings(kafka: Settings) -> Settings:
    create_topics(kafka)
    return kafka


@pytest.fixture(scope="module")
def running(
    collector_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    keys_file = tmp_path_factory.mktemp("collector") / "keys.json"
    # These tests check the mapping field for field, so PII stays plaintext here; the
    # encrypted path has its own tests (tests/integration/privacy).
    plain = collector_settings.model_copy(update={"pii_encryption": False})
    collector, key = make_collector(plain, keys_file, clock_ms=lambda: RECEIVED_AT)
    with serve(collector) as url:
        yield Running(url, key, collector.settings, collector)


def end_offsets(settings: Settings, topic: str = EVENTS.name) -> dict[int, int]:
    """The high watermark of every partition of ``topic``."""
    return {p: high for (_, p), (_low, high) in topic_ends(settings, [topic]).items()}


def consume_since(
    settings: Settings,
    since: dict[int, int],
    count: int,
    timeout: float = 20.0,
    topic: str = EVENTS.name,
) -> list[tuple[bytes, bytes]]:
    """Read ``count`` records written after ``since`` (key, value), failing on timeout."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "collector-tests",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, o) for p, o in since.items()])
    found: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or is_control(msg.headers()):
                continue  # heartbeats: the collector's promises to the worker, not events
            found.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    assert len(found) == count, f"expected {count} records, found {len(found)}"
    return found
