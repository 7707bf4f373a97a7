"""A writer with receive stamps in the future does not hold the collector's traffic.

One record with ``received_at`` in 2048 and heartbeats of 2048 on every partition of
``leadflow.events`` (``leadflow simulate --via kafka`` with future simulated times, a
producer with a fast clock) used to move R' to 2048 for good: the collector's records
then sorted at that R' and waited for a heartbeat past it, which a collector (wall clock)
does not write for 22 years. A stamp now counts for R' as at most its record's Kafka
timestamp (the broker's LogAppendTime) plus ``LEADFLOW_ORDER_MAX_AHEAD_MS``
(processors/receive_bound.py): the collector's records are released once its heartbeats
pass that bound, and the worker says what it bounded (``identity.receive_ahead``).

Runs on a broker of its own: the session broker's R' must stay at the clock.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, TopicPartition

from leadflow.processors.derived import LeadScored
from leadflow.processors.events import Kind
from leadflow.streams.kafka_offsets import read_to_end
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, LEAD_SCORED
from tests.integration.collector.conftest import make_collector, serve

from .conftest import WorkerProcess, read, send
from .journeys import T0, Journey

FUTURE = T0 + 200_000 * 3_600_000  # 2048
MAX_AHEAD_MS = 3_000


def timestamp_types(settings: Settings) -> set[int]:
    """The timestamp type of every record on ``leadflow.events`` (read from the start)."""
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap, "group.id": f"ts-{uuid.uuid4().hex}",
         "enable.partition.eof": True, "enable.auto.commit": False}
    )  # fmt: skip
    partitions = consumer.list_topics(EVENTS.name, timeout=10).topics[EVENTS.name].partitions
    consumer.assign([TopicPartition(EVENTS.name, p, 0) for p in partitions])
    pending: dict[tuple[str, int], int | None] = {(EVENTS.name, p): None for p in partitions}
    try:
        kinds = {
            m.timestamp()[0] for m in read_to_end(consumer, pending, deadline=time.monotonic() + 30)
        }
    finally:
        consumer.close()
    return kinds


def test_collector_traffic_flows_after_a_record_and_heartbeats_of_2048(
    own_broker: Settings, tmp_path: Path, counts_checked: Callable[[str], None]
) -> None:
    settings = own_broker
    (tmp_path / "worker").mkdir()
    worker = WorkerProcess(
        settings, tmp_path / "worker", env={"LEADFLOW_ORDER_MAX_AHEAD_MS": str(MAX_AHEAD_MS)}
    )
    worker.start()
    collector, key = make_collector(settings, tmp_path / "keys.json", heartbeats=True)
    try:
        # The rogue writer: an event of 2048 and a heartbeat of 2048 on every partition.
        rogue = Journey(f"ws-rogue-{uuid.uuid4().hex[:8]}", start=FUTURE)
        send(settings, [rogue.ev("v1", Kind.VISIT, 0, device=False, path="/", channel="direct")])
        with serve(collector) as url:
            # Then real traffic through the collector (wall clock): a visit and an identify.
            run = uuid.uuid4().hex[:8]
            anon, user = f"anon-{run}", f"user-{run}"
            sent = time.monotonic()
            for path, body in (
                ("/v1/page", {"anonymousId": anon, "name": "pricing",
                              "properties": {"path": "/pricing"}}),
                ("/v1/identify", {"anonymousId": anon, "userId": user,
                                  "traits": {"email": f"{run}@bigcorp.io", "company": "BigCorp"}}),
            ):  # fmt: skip
                response = httpx.post(f"{url}{path}", json=body, auth=(key, ""), timeout=30)
                assert response.status_code == 200, response.text
            # Scored by the lead stage: released from the event-time order. Before the
            # bound it waited for a heartbeat of 2048 (read's 90 s ran out).
            scores = read(settings, LEAD_SCORED.name, "ws-acme", expect=1, settle=1.0)
            waited = time.monotonic() - sent
        assert scores
        assert all(isinstance(s, LeadScored) and s.lead_id for s in scores)
        # The rogue's own record is processed too (at the bound, not in 2048).
        assert read(settings, LEAD_SCORED.name, rogue.workspace, expect=1)
        assert not worker.exited(), worker.tail()
        assert timestamp_types(settings) == {TIMESTAMP_LOG_APPEND_TIME}
    finally:
        worker.stop()
    lines = [json.loads(line) for path in worker.logs for line in path.read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    ahead = [r for r in lines if r.get("event") == "identity.receive_ahead"]
    assert ahead, "the bounded stamps were not logged"
    assert {r["what"] for r in ahead} >= {"received_at", "heartbeat"}
    assert all(r["counts_as"] == r["record_timestamp"] + MAX_AHEAD_MS for r in ahead)
    assert all(r["stamp"] >= FUTURE for r in ahead)
    stopped = [r for r in lines if r.get("event") == "worker.stopped"]
    bounded = stopped[-1]["receive_ahead"]
    assert bounded >= 1 + settings.topic_partitions  # the event and its heartbeats
    counts_checked(
        f"a record and heartbeats of 2048 on {settings.topic_partitions} partitions: "
        f"{bounded} stamps bounded to timestamp + {MAX_AHEAD_MS} ms, collector traffic "
        f"scored {waited:.1f} s after it was sent"
    )
