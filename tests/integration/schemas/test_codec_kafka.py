"""An Avro-encoded event survives the real broker: produce, consume, decode, field for field."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from leadflow.processors.derived import Stage, StageChanged
from leadflow.processors.events import Context, Event, Kind
from leadflow.schemas.codec import ConfluentCodec, SingleObjectCodec
from leadflow.streams.settings import Settings

FORM = Event(
    event_id=str(uuid.uuid4()),
    kind=Kind.FORM_SUBMITTED,
    workspace_id="acme",
    occurred_at=1_763_884_800_000,
    received_at=1_763_884_800_250,
    anonymous_id="anon-1",
    lead_id="lead-1",
    context=Context(
        url="https://acme.example/demo?utm_source=linkedin",
        path="/demo",
        utm_source="linkedin",
        utm_medium="paid_social",
        channel="paid_social",
        ip="203.0.113.9",
    ),
    payload={
        "form_id": "demo-form",
        "asset": None,
        "email": "ana@corp.example",
        "first_name": "Ana",
        "last_name": "Ñúñez",
        "phone": None,
        "company": "Corp",
        "title": "VP Marketing",
        "company_size": 250,
        "industry": "software",
        "country": "ES",
        "answers": {"budget": "yes", "timeline": "Q1"},
        # The form schema's newest version appends the sealed extras; absent decodes as None.
        "extra_json": None,
        "email_lead_id": None,  # v3: set only when the collector seals an email with a userId
    },
)


def _topic(settings: Settings) -> str:
    name = f"test-schemas-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(settings.kafka_client_config())
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    futures[name].result(timeout=30)
    return name


def _produce_and_consume(settings: Settings, topic: str, key: str, value: bytes) -> Any:
    producer = Producer(
        settings.kafka_client_config() | {"acks": "all", "enable.idempotence": True}
    )
    producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(30) == 0
    consumer = Consumer(
        settings.kafka_client_config()
        | {"group.id": f"g-{topic}", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    try:
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            return message
        pytest.fail(f"nothing consumed from {topic} within 60 polls")
    finally:
        consumer.close()


@pytest.mark.parametrize("codec_name", ["single-object", "confluent"])
def test_event_survives_the_broker_field_for_field(kafka: Settings, codec_name: str) -> None:
    codec = SingleObjectCodec() if codec_name == "single-object" else ConfluentCodec("mock://")
    topic = _topic(kafka)
    message = _produce_and_consume(kafka, topic, FORM.person_key, codec.encode(FORM))
    assert message.key() == FORM.person_key.encode()
    decoded = codec.decode(message.value())
    assert isinstance(decoded, Event)
    for name in Event.__slots__:
        assert getattr(decoded, name) == getattr(FORM, name), name
    assert decoded.kind is Kind.FORM_SUBMITTED
    assert decoded.payload["company_size"] == 250
    assert decoded.payload["answers"] == {"budget": "yes", "timeline": "Q1"}


def test_derived_event_survives_the_broker(kafka: Settings) -> None:
    codec = SingleObjectCodec()
    changed = StageChanged(
        "t-1",
        "acme",
        "lead-1",
        Stage.LEAD,
        Stage.MQL,
        1_763_884_800_000,
        "score",
        FORM.event_id,
        2,
    )
    topic = _topic(kafka)
    message = _produce_and_consume(kafka, topic, "lead-1", codec.encode(changed))
    decoded = codec.decode(message.value())
    assert decoded == changed
    assert isinstance(decoded, StageChanged)
    assert decoded.to_stage is Stage.MQL
