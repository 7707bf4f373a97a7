"""The foundation check: Avro events round-trip through confluent-kafka on the real broker.

(The worker's own round trip, through its engine, is in tests/integration/pipeline.)"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from leadflow.processors.events import Context, Event, Kind
from leadflow.schemas.codec import SingleObjectCodec
from leadflow.streams.settings import Settings


def visit(i: int) -> Event:
    return Event(
        event_id=f"evt-{i}",
        kind=Kind.VISIT,
        workspace_id="ws-1",
        occurred_at=1_767_225_600_000 + i,
        received_at=1_767_225_600_500 + i,
        anonymous_id=f"anon-{i % 3}",
        context=Context(path="/pricing", utm_source="google", utm_medium="cpc"),
        payload={"name": "Pricing", "category": None, "search": None, "extra_json": None},
    )


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(values) < expected:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
        # Linger briefly: anything beyond `expected` would be a duplicate.
        end = time.monotonic() + 2
        while time.monotonic() < end:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    return values


def test_avro_event_round_trips_through_confluent_kafka(kafka: Settings) -> None:
    codec = SingleObjectCodec()
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic("roundtrip-plain", 1, 1)])["roundtrip-plain"].result(30)
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap, "acks": "all", "enable.idempotence": True}
    )
    sent = [visit(i) for i in range(5)]
    for event in sent:
        producer.produce(
            "roundtrip-plain", key=event.person_key.encode(), value=codec.encode(event)
        )
    assert producer.flush(30) == 0
    received = [codec.decode(v) for v in consume_all(kafka.bootstrap, "roundtrip-plain", 5, 30)]
    assert received == sent
