"""The worker as a static group member (``group.instance.id`` from its worker id).

A worker restarted after ``kill -9`` takes its own place in the group at once; as a dynamic
member it waited for its dead self's session to expire before the group rebalanced. And a
worker fenced by another consumer with its instance id (what librdkafka's own rejoin does
after a broker outage longer than the session, librdkafka #3437) builds a new consumer and
goes on instead of dying of the fatal consumer error.

Runs on a broker of its own: these tests take the group's places on purpose.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from confluent_kafka import Consumer

from leadflow.processors.events import Event
from leadflow.streams.engine.kafka import WORKER_GROUP
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, EVENTS_BY_LEAD

from .conftest import WorkerProcess, records_in, send
from .journeys import Journey

# Long enough that a wait for a dead member's session cannot pass for a quick rejoin.
SESSION_S = 30


def first_line_time(log: Path, event: str) -> float:
    """The wall-clock time of the first JSON log line named ``event`` (epoch seconds)."""
    for line in log.read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
            return datetime.fromisoformat(stamp).timestamp()
    raise AssertionError(f"no {event} in {log}")


def captures(prefix: str) -> list[Event]:
    """Three people's visits up to their demo request: records for both stages."""
    return [e for i in range(3) for e in Journey(f"{prefix}{i}").to_sql_twice()[0]]


def wait_for_records(settings: Settings, topic: str, above: int, worker: WorkerProcess) -> int:
    deadline = time.monotonic() + 90
    while (now := records_in(settings, topic)) <= above:
        assert time.monotonic() < deadline, worker.tail()
        assert not worker.exited(), worker.tail()
        time.sleep(0.2)
    return now


def test_a_worker_killed_9_takes_its_place_back_without_waiting_for_its_session(
    own_broker: Settings, tmp_path: Path
) -> None:
    worker = WorkerProcess(
        own_broker,
        tmp_path / "worker",
        env={"LEADFLOW_KAFKA_SESSION_TIMEOUT_SECONDS": str(SESSION_S)},
    )
    worker.data_dir.mkdir()
    worker.start()
    try:
        send(own_broker, captures("ws-m"))
        before = wait_for_records(own_broker, EVENTS_BY_LEAD.name, 0, worker)
        worker.kill()
        killed = time.time()
        worker.start(timeout=SESSION_S * 3)
        # The restart was assigned its partitions well inside the dead member's session.
        assigned = first_line_time(worker.logs[-1], "worker.assigned")
        assert assigned - killed < SESSION_S / 2, worker.tail()
        send(own_broker, captures("ws-n"))
        wait_for_records(own_broker, EVENTS_BY_LEAD.name, before, worker)
    finally:
        worker.stop()


def test_a_fenced_worker_builds_a_new_consumer_and_goes_on(
    own_broker: Settings, tmp_path: Path
) -> None:
    worker = WorkerProcess(own_broker, tmp_path / "worker")
    worker.data_dir.mkdir()
    worker.start()
    try:
        worker_id = (worker.data_dir / "worker" / "worker-id").read_text().strip()
        usurper = Consumer(
            {
                "bootstrap.servers": own_broker.bootstrap,
                "group.id": WORKER_GROUP,
                "group.instance.id": f"leadflow-worker-{worker_id}",
                **own_broker.kafka_group_config(),
            }
        )
        usurper.subscribe([EVENTS.name])
        deadline = time.monotonic() + 60
        while not usurper.assignment():
            assert time.monotonic() < deadline, "the usurper got no assignment"
            usurper.poll(0.2)
        usurper.close()  # a static member: no LeaveGroup, its place stays taken
        deadline = time.monotonic() + 60
        while not worker.log_events("worker.consumer_fenced"):
            assert time.monotonic() < deadline, worker.tail()
            assert not worker.exited(), worker.tail()
            time.sleep(0.2)
        before = records_in(own_broker, EVENTS_BY_LEAD.name)
        send(own_broker, captures("ws-f"))
        wait_for_records(own_broker, EVENTS_BY_LEAD.name, before, worker)
        assert not worker.exited(), worker.tail()
    finally:
        worker.stop()
