"""A real `leadflow worker` process against the session broker, and helpers to feed it
inbound events and read what it derives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from leadflow.processors.events import Event
from leadflow.schemas.codec import SingleObjectCodec
from leadflow.streams.control import send_heartbeats
from leadflow.streams.kafka_offsets import topic_ends
from leadflow.streams.local_kafka import scratch_broker
from leadflow.streams.pii.erasure import received_floor
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, create_topics
from tests.conftest import free_port

CODEC = SingleObjectCodec()


@dataclass
class WorkerProcess:
    """One `leadflow worker` subprocess with its own data dir, web port and log file."""

    settings: Settings
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)
    web_port: int = 0  # LEADFLOW_WORKER_WEB_PORT of the latest start

    def start(self, timeout: float = 90.0) -> None:
        self.starts += 1
        log = self.data_dir / f"worker-{self.starts}.log"
        self.logs.append(log)
        self.web_port = free_port()
        env = {
            **os.environ,
            "LEADFLOW_KAFKA_BOOTSTRAP": self.settings.bootstrap,
            "LEADFLOW_DATA_DIR": str(self.data_dir),
            "LEADFLOW_WORKER_WEB_PORT": str(self.web_port),
            "LEADFLOW_TOPIC_PARTITIONS": str(self.settings.topic_partitions),
            "LEADFLOW_LOG_FORMAT": "json",
            # Workers of one session share the broker's leadflow.models: one signing key.
            "LEADFLOW_MODEL_SIGNING_KEY": "test-session-model-key",
            **self.env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "leadflow", "worker"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.tail()}")
            if b'"worker.ready"' in log.read_bytes():
                return
            time.sleep(0.25)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """kill -9: no clean shutdown, no final commit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def log_events(self, name: str) -> list[str]:
        """``action`` of each JSON log line named `name`, over every start of the worker."""
        found = []
        for path in self.logs:
            for line in path.read_text(errors="replace").splitlines():
                if f'"{name}"' in line:
                    record = json.loads(line)
                    found.append(f"{record.get('action')} (lag {record.get('lag')})")
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, chars: int = 4000) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs)[-chars:]


@pytest.fixture(scope="module")
def topics(kafka: Settings) -> Settings:
    create_topics(kafka)
    return kafka


@pytest.fixture
def own_broker(base_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A broker of the test's own, with the topics: for tests that stop, fill or abort it."""
    with scratch_broker(base_settings, tmp_path / "kafka") as (_, settings):
        create_topics(settings)
        yield settings


@pytest.fixture(scope="module")
def worker(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    process = WorkerProcess(topics, tmp_path_factory.mktemp("worker"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def send(settings: Settings, events: Iterable[Event]) -> int:
    """Produce inbound events as the collector does (keyed by person, acks=all).

    Then a heartbeat on every partition past the last ``received_at``, as the collector's
    next heartbeat would be: the lead stage releases a record once every inbound partition
    has promised past it (streams/control.py).
    """
    producer = Producer(
        {"bootstrap.servers": settings.bootstrap, "acks": "all", "enable.idempotence": True}
    )
    count = 0
    latest = 0
    for event in events:
        producer.produce(EVENTS.name, key=event.person_key.encode(), value=CODEC.encode(event))
        latest = max(latest, event.received_at)
        count += 1
    partitions = producer.list_topics(EVENTS.name, timeout=10).topics[EVENTS.name].partitions
    beat = _next_beat(settings.bootstrap, latest, received_floor(settings))
    send_heartbeats(producer, EVENTS.name, sorted(partitions), beat)
    assert producer.flush(30) == 0
    return count


_beats: dict[str, int] = {}  # per broker (bootstrap): the last heartbeat sent to it


def _next_beat(broker: str, latest: int, floor: int | None) -> int:
    """A heartbeat past every ``received_at`` and heartbeat this session sent to ``broker``.

    Past the earlier heartbeats too: the identity stage's R' is the running maximum of both,
    so events sent later with an older ``received_at`` sort at the last heartbeat, and only
    a larger one releases them. The wall clock keeps it past a collector's heartbeats of
    the same broker session (tests of other modules); ``floor``, the highest R' the worker
    committed (``leadflow.streams.pii.erasure.received_floor``), keeps it past what other
    writers promised: an erasure's heartbeat, a previous session on a reused broker.

    A stamp counts for R' as at most its record's timestamp plus
    ``LEADFLOW_ORDER_MAX_AHEAD_MS`` (processors/receive_bound.py): a heartbeat far ahead of
    the clock moves R' only that far, and the next one (a later timestamp) moves it on. A
    reused broker whose R' an older worker moved decades ahead holds these tests' records
    until the clock gets there: delete its ``leadflow*`` topics first.
    """
    beat = max(_beats.get(broker, 0) + 1, latest + 1, time.time_ns() // 1_000_000,
               (floor or 0) + 1)  # fmt: skip
    _beats[broker] = beat
    return beat


def records_in(settings: Settings, topic: str) -> int:
    """How many records (and transaction markers) a topic holds: a cheap progress probe."""
    return sum(high - low for low, high in topic_ends(settings, [topic]).values())


def read(
    settings: Settings,
    topic: str,
    workspace_id: str | None,
    *,
    expect: int,
    timeout: float = 90.0,
    settle: float = 3.0,
) -> list[object]:
    """Every decoded record of `topic` for one workspace (None: all), waiting for `expect`.

    After reaching `expect` it keeps reading for `settle` seconds, so duplicates show up.
    Reads committed data only (as a downstream consumer would).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"test-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[object] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < (settle_until or deadline):
            message = consumer.poll(0.3)
            if message is None or message.error() is not None:
                continue
            record = CODEC.decode(message.value())
            if workspace_id is None or getattr(record, "workspace_id", None) == workspace_id:
                found.append(record)
            if settle_until is None and len(found) >= expect:
                settle_until = time.monotonic() + settle
    finally:
        consumer.close()
    return found
