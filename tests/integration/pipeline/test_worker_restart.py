"""kill -9 the worker mid-stream, restart it: every SQL hand-off arrives exactly once.

Runs on a broker of its own: a fresh consumer group on the shared broker would reprocess
the other tests' events.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadflow.processors.derived import BecameSQL, StageChanged
from leadflow.streams.local_kafka import LocalKafka, install
from leadflow.streams.settings import Settings
from leadflow.streams.topics import LEAD_BECAME_SQL, LEAD_STAGE_CHANGED, create_topics
from tests.conftest import free_port

from .conftest import WorkerProcess, read, records_in, send
from .journeys import Journey

LEADS = 30


@pytest.fixture
def own_broker(base_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    broker = LocalKafka(
        home=tmp_path / "kafka",
        libs=install(base_settings),
        port=free_port(),
        controller_port=free_port(),
        heap="512m",
    )
    broker.start()
    settings = base_settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    create_topics(settings)
    try:
        yield settings
    finally:
        broker.stop()


def sql_handoffs(settings: Settings, expect: int) -> list[BecameSQL]:
    """Every SQL hand-off of the test, once at least `expect` arrived (plus a settle time)."""
    records = read(settings, LEAD_BECAME_SQL.name, None, expect=expect, timeout=240, settle=5)
    return [r for r in records if isinstance(r, BecameSQL)]


def recycled_leads(settings: Settings, expect: int) -> set[str]:
    records = read(settings, LEAD_STAGE_CHANGED.name, None, expect=expect, timeout=240)
    return {r.lead_id for r in records if isinstance(r, StageChanged) and r.to_stage == "recycled"}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kill_9_mid_stream_emits_every_sql_handoff_once(
    own_broker: Settings, tmp_path: Path, guarantee: str
) -> None:
    journeys = [Journey(f"ws-r{i:02d}") for i in range(LEADS)]
    phases = [j.to_sql_twice() for j in journeys]
    worker = WorkerProcess(own_broker, tmp_path / "worker", guarantee=guarantee)
    worker.data_dir.mkdir()
    worker.start()
    try:
        send(own_broker, [e for p in phases for e in p[0]])
        # Kill as soon as the first hand-offs appear: the stream is mid-flight.
        deadline = time.monotonic() + 120
        while records_in(own_broker, LEAD_BECAME_SQL.name) == 0:
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.2)
        worker.kill()
        worker.start()
        # Each phase goes out once the previous one is processed for every lead.
        assert len({h.lead_id for h in sql_handoffs(own_broker, expect=LEADS)}) == LEADS
        send(own_broker, [e for p in phases for e in p[1]])
        deadline = time.monotonic() + 240
        while len(recycled_leads(own_broker, expect=LEADS)) < LEADS:
            assert time.monotonic() < deadline, worker.tail()
        send(own_broker, [e for p in phases for e in p[2]])
        handoffs = sql_handoffs(own_broker, expect=2 * LEADS)
    finally:
        worker.stop()
    counts = Counter(h.transition_id for h in handoffs)
    per_lead = Counter(lead for _, lead in {(h.transition_id, h.lead_id) for h in handoffs})
    assert set(per_lead.values()) == {2}, per_lead
    reemitted = sum(n - 1 for n in counts.values())
    print(f"{guarantee}: {len(counts)} distinct SQL transitions, {reemitted} re-emitted")
    assert len(counts) == 2 * LEADS
    assert reemitted == 0, f"{reemitted} SQL hand-offs were emitted twice after kill -9"
