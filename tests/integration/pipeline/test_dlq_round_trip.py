"""A record the worker dead-letters keeps its own headers, and `leadflow dlq replay` sends
them back: the round trip through the dead-letter topic on a real broker and worker.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from confluent_kafka import Consumer, Producer

from leadflow.cli.main import cli
from leadflow.processors.events import Event, Kind, lead_key
from leadflow.streams.control import RECEIVED
from leadflow.streams.settings import Settings
from leadflow.streams.topics import DLQ, EVENTS_BY_LEAD, LEAD_SCORED

from .conftest import CODEC, WorkerProcess, read
from .journeys import T0


def _find(
    settings: Settings, topic: str, value: bytes, key: bytes | None = None, timeout: float = 30.0
) -> list[Any]:
    """The committed records of ``topic`` with this value (and key), waiting for the first."""
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"round-trip-{uuid.uuid4()}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False,
         "isolation.level": "read_committed"}
    )  # fmt: skip
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not found:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is not None or message.value() != value:
                    continue
                if key is None or message.key() == key:
                    found.append(message)
    finally:
        consumer.close()
    return found


def test_a_replayed_dead_letter_comes_back_with_its_own_headers(
    topics: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    workspace, lead = f"ws-rt-{run}", f"L-{run}"
    event = Event(f"{run}-e1", Kind.VISIT, workspace, T0, T0, lead_id=lead)
    value = CODEC.encode(event)
    # As the identity stage writes it (R'), plus a producer's trace header, under a key
    # that is not its lead's: the lead stage dead-letters it before it is buffered.
    own = [(RECEIVED, str(T0).encode()), ("traceparent", f"00-{run}-01".encode())]
    where: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        where.append(f"{msg.topic()}:{msg.partition()}:{msg.offset()}")

    producer = Producer({**topics.kafka_client_config(), "acks": "all"})
    producer.produce(EVENTS_BY_LEAD.name, key=b"someone-else", value=value, headers=own,
                     partition=0, on_delivery=delivered)  # fmt: skip
    assert producer.flush(30) == 0
    [source] = where

    [letter] = _find(topics, DLQ.name, value)
    headers = dict(letter.headers() or [])
    assert b"not by its lead" in headers["leadflow.reason"]
    assert headers["leadflow.source.topic"] == EVENTS_BY_LEAD.name.encode()
    assert headers[RECEIVED] == own[0][1]  # the R' it had: there to look at
    assert headers["traceparent"] == own[1][1]

    env = {"LEADFLOW_KAFKA_BOOTSTRAP": topics.bootstrap, "LEADFLOW_DATA_DIR": str(tmp_path)}
    key = lead_key(workspace, lead)
    replayed = CliRunner().invoke(cli, ["dlq", "replay", "--source", source, "--key", key],
                                  env=env)  # fmt: skip
    assert replayed.exit_code == 0, replayed.output
    [back] = _find(topics, EVENTS_BY_LEAD.name, value, key.encode())
    headers = dict(back.headers() or [])
    assert headers["traceparent"] == own[1][1]
    # leadflow's own headers stay behind (operations.md, "Poison records"): the R' is a
    # place in an order its partition's promises have passed; without it the lead stage
    # applies the record on arrival.
    assert RECEIVED not in headers
    assert not any(name.startswith("leadflow.") for name in headers)
    # ... and applies it: scored, not refused again.
    assert read(topics, LEAD_SCORED.name, workspace, expect=1, timeout=30)
    assert len(_find(topics, DLQ.name, value, timeout=3)) == 1
