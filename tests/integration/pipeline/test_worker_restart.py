"""kill -9 the worker mid-stream, restart it: no SQL hand-off is lost, ClickHouse counts each once.

The worker commits each batch in one Kafka transaction (docs/architecture.md), so a reader
with read_committed sees each hand-off once; the test still counts re-emissions (any would
have to be identical, with the same transition id).

Runs on a broker of its own: a fresh consumer group on the shared broker would reprocess
the other tests' events.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from leadflow.processors.derived import BecameSQL, StageChanged
from leadflow.processors.events import Event
from leadflow.sinks.projector import Projector
from leadflow.streams.settings import Settings
from leadflow.streams.topics import (
    EVENTS_BY_LEAD,
    LEAD_BECAME_SQL,
    LEAD_STAGE_CHANGED,
)
from leadflow.streams.worker import worker_lag

from .conftest import CODEC, WorkerProcess, read, records_in, send
from .journeys import Journey

LEADS = 30
STALL_SECONDS = 15


def sql_handoffs(settings: Settings, expect: int) -> list[BecameSQL]:
    """Every SQL hand-off of the test, once at least `expect` arrived (plus a settle time)."""
    records = read(settings, LEAD_BECAME_SQL.name, None, expect=expect, timeout=240, settle=5)
    return [r for r in records if isinstance(r, BecameSQL)]


def supervise(settings: Settings, worker: WorkerProcess, restarts: list[str]) -> None:
    """Wait until the worker's lag is 0, restarting it when it exits, as a supervisor would.

    A worker that holds lag without progress re-seeks and then exits with 70 by itself
    (streams/stall.py); this loop only restarts what exited. Lag that does not move for
    three stall periods means the watch failed, and so does the test.
    """
    last, since = worker_lag(settings), time.monotonic()
    while last > 0:
        time.sleep(2)
        if worker.exited():
            restarts.append(f"exit {worker.returncode()} with lag {last}")
            worker.start()
            since = time.monotonic()
        lag = worker_lag(settings)
        if lag < last:
            last, since = lag, time.monotonic()
        assert time.monotonic() - since < 3 * STALL_SECONDS + 30, (
            f"lag {lag} did not move and the worker did not act\n{worker.tail()}"
        )


def diagnose(settings: Settings, leads: set[str]) -> str:
    """What the log holds for leads whose hand-off is missing: where did they stop?"""
    lines = []
    routed = read(settings, EVENTS_BY_LEAD.name, None, expect=10**9, timeout=20)
    stages = read(settings, LEAD_STAGE_CHANGED.name, None, expect=10**9, timeout=10)
    for lead in sorted(leads):
        ids = [e.event_id for e in routed if isinstance(e, Event) and e.lead_id == lead]
        moves = [
            f"{s.from_stage}->{s.to_stage}"
            for s in stages
            if isinstance(s, StageChanged) and s.lead_id == lead
        ]
        lines.append(f"{lead}: routed {ids}; stages {moves}")
    return "\n".join(lines)


def recycled_leads(settings: Settings, expect: int) -> set[str]:
    records = read(settings, LEAD_STAGE_CHANGED.name, None, expect=expect, timeout=240)
    return {r.lead_id for r in records if isinstance(r, StageChanged) and r.to_stage == "recycled"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_mid_stream_loses_no_handoff_and_clickhouse_counts_each_once(
    own_broker: Settings,
    tmp_path: Path,
    clickhouse_session: Any,
    clickhouse_db: str,
    counts_checked: Callable[[str], None],
) -> None:
    journeys = [Journey(f"ws-r{i:02d}") for i in range(LEADS)]
    phases = [j.to_sql_twice() for j in journeys]
    worker = WorkerProcess(
        own_broker,
        tmp_path / "worker",
        env={"LEADFLOW_WORKER_STALL_SECONDS": str(STALL_SECONDS)},
    )
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
        restarts: list[str] = []
        supervise(own_broker, worker, restarts)
        # Each phase goes out once the previous one is processed for every lead.
        first = {h.lead_id for h in sql_handoffs(own_broker, expect=LEADS)}
        missing = {j.lead for j in journeys} - first
        assert not missing, (
            f"lag {worker_lag(own_broker)}, restarts {restarts}\n"
            f"{diagnose(own_broker, missing)}\n{worker.tail()}"
        )
        send(own_broker, [e for p in phases for e in p[1]])
        supervise(own_broker, worker, restarts)
        deadline = time.monotonic() + 240
        while len(recycled_leads(own_broker, expect=LEADS)) < LEADS:
            assert time.monotonic() < deadline, worker.tail()
        send(own_broker, [e for p in phases for e in p[2]])
        supervise(own_broker, worker, restarts)
        handoffs = sql_handoffs(own_broker, expect=2 * LEADS)
    finally:
        worker.stop()
    copies: dict[str, set[bytes]] = {}
    for h in handoffs:
        copies.setdefault(h.transition_id, set()).add(CODEC.encode(h))
    per_lead = Counter(h.lead_id for h in {h.transition_id: h for h in handoffs}.values())
    reemitted = len(handoffs) - len(copies)
    stalls = worker.log_events("worker.stalled")
    print(
        f"{len(copies)} distinct SQL transitions, {reemitted} re-emitted, "
        f"stalls acted on: {stalls or 'none'}, supervisor restarts: {restarts or 'none'}"
    )
    assert len(copies) == 2 * LEADS, "a hand-off was lost"
    assert set(per_lead.values()) == {2}, per_lead
    differing = {
        tid: sorted(
            f.name
            for f in dataclasses.fields(BecameSQL)
            if len({repr(getattr(CODEC.decode(c), f.name)) for c in versions}) > 1
        )
        for tid, versions in copies.items()
        if len(versions) > 1
    }
    assert not differing, f"re-emissions differ from the original in {differing}"

    Projector(
        own_broker, clickhouse_session, clickhouse_db, group_id="restart-test"
    ).run_until_idle(max_seconds=120)
    rows = clickhouse_session.query(
        f"SELECT count(), uniqExact(transition_id) FROM {clickhouse_db}.v_handoffs"
    ).result_rows
    assert rows == [(2 * LEADS, 2 * LEADS)]
    counts_checked(
        f"kill -9 mid-stream: {len(copies)} of {2 * LEADS} SQL transitions on the topic "
        f"({reemitted} identical re-emissions), ClickHouse {rows[0][0]} hand-offs; "
        f"stalls acted on: {stalls or 'none'}"
    )
