"""An input partition whose tail is an aborted transaction does not stall the worker.

A read_committed consumer never receives an aborted batch's records or its abort marker, so
the worker's committed offset used to stop two short of such a partition's end: the stall
watch measured end minus committed (forgiving one marker), saw a lag of 2 that no processing
could clear, re-sought and exited 70, and a restarted worker did the same (issue 17.4; seen
in the 2-worker cluster bench after a rebalance). The watch now measures from the consumer's
position and the worker commits past what the consumer skipped (streams/engine/loop.py,
``Engine._watch``), so the group's lag reaches 0 and the worker stays up.

Runs on a broker of its own: the aborted tails must be the last entries of every partition.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from leadflow.processors.derived import BecameSQL
from leadflow.streams.engine.loop import OPEN_TAIL_SECONDS, WATCH_EVERY
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS_BY_LEAD, LEAD_BECAME_SQL, WORKER_INPUTS
from leadflow.streams.worker import worker_lag

from .conftest import WorkerProcess, read, send
from .journeys import Journey

# Short, so the old measure would have re-sought and exited within three looks of the watch.
STALL_SECONDS = 2


def abort_a_batch(settings: Settings, topics: list[str], txn: str) -> int:
    """One transaction with a record on every partition of ``topics``, aborted.

    Each partition gets the record and the abort marker: two entries no read_committed
    consumer ever receives. Returns how many partitions got them.
    """
    producer = Producer({"bootstrap.servers": settings.bootstrap, "transactional.id": txn})
    producer.init_transactions(30)
    producer.begin_transaction()
    count = 0
    for topic in topics:
        partitions = producer.list_topics(topic, timeout=10).topics[topic].partitions
        for partition in sorted(partitions):
            producer.produce(topic, key=b"aborted", value=b"never delivered", partition=partition)
            count += 1
    assert producer.flush(30) == 0
    producer.abort_transaction(30)
    return count


def wait_for_markers(settings: Settings, expected: int, timeout: float = 30) -> None:
    """Wait until the group's lag counts every aborted record and its marker.

    The coordinator writes abort markers after it answers the abort, so a reading taken
    straight after :func:`abort_a_batch` can miss some (CI once read 4 of 18).
    """
    deadline = time.monotonic() + timeout
    while (lag := worker_lag(settings)) != expected:
        assert time.monotonic() < deadline, f"group lag {lag}, expected {expected}"
        time.sleep(0.2)


def wait_for_lag_zero(settings: Settings, worker: WorkerProcess, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (lag := worker_lag(settings)) != 0:
        assert not worker.exited(), f"worker exited {worker.returncode()}:\n{worker.tail()}"
        assert time.monotonic() < deadline, f"group lag stays {lag}:\n{worker.tail()}"
        time.sleep(1.0)


def test_aborted_tails_are_committed_past_and_the_worker_stays_up_and_processes(
    own_broker: Settings, tmp_path: Path, counts_checked: Callable[[str], None]
) -> None:
    settings = own_broker
    inputs = [spec.name for spec in WORKER_INPUTS]
    # Before the worker ever ran: every input partition holds only an aborted batch.
    before = abort_a_batch(settings, inputs, "test-aborter-1")
    wait_for_markers(settings, 2 * before)  # what the old watch measured, per partition
    (tmp_path / "worker").mkdir()
    worker = WorkerProcess(
        settings, tmp_path / "worker", env={"LEADFLOW_WORKER_STALL_SECONDS": str(STALL_SECONDS)}
    )
    worker.start()
    try:
        wait_for_lag_zero(settings, worker)
        # While it runs: a by-lead partition's tail becomes an aborted batch again (as when a
        # worker's transaction is aborted at a rebalance and nothing else arrives there).
        during = abort_a_batch(settings, [EVENTS_BY_LEAD.name], "test-aborter-2")
        wait_for_lag_zero(settings, worker)
        # Long enough for the old watch to re-seek and exit (one look every WATCH_EVERY s).
        time.sleep(3 * WATCH_EVERY + 2 * STALL_SECONDS)
        assert not worker.exited(), f"worker exited {worker.returncode()}:\n{worker.tail()}"
        assert worker.log_events("worker.stalled") == []

        # New traffic after the aborted tails is processed.
        journey = Journey("ws-aborted-tail")
        send(settings, journey.to_sql_twice()[0])
        (handoff,) = read(settings, LEAD_BECAME_SQL.name, journey.workspace, expect=1)
        assert isinstance(handoff, BecameSQL)
        assert handoff.lead_id == journey.lead
        wait_for_lag_zero(settings, worker)
    finally:
        worker.stop()
    assert worker.returncode() == 0
    stopped = [
        json.loads(line)
        for line in worker.logs[-1].read_text().splitlines()
        if '"worker.stopped"' in line
    ]
    skip_commits = stopped[-1]["skip_commits"]
    assert skip_commits >= 2  # at least one before and one after the second aborted batch
    counts_checked(
        f"{before} partitions with an aborted tail at start, {during} more while running: "
        f"group lag 0, worker up, 0 stalls, {skip_commits} offsets-only commits, "
        "new journey handed off"
    )


def test_an_input_held_by_an_open_transaction_is_reported(
    own_broker: Settings, tmp_path: Path, counts_checked: Callable[[str], None]
) -> None:
    """A by-lead partition's tail is a transaction nobody ends (as after Kafka skipped its
    markers: docs/operations.md, "The single-node broker killed -9"). The worker reads up to
    its last stable offset, so its lag reads 0 and the stall watch sees nothing; the worker
    logs ``worker.open_transaction`` once the hold passes OPEN_TAIL_SECONDS."""
    settings = own_broker
    (tmp_path / "worker").mkdir()
    worker = WorkerProcess(settings, tmp_path / "worker")
    worker.start()
    holder = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "transactional.id": "test-holder",
            "transaction.timeout.ms": 300_000,  # the broker must not end it during the test
        }
    )
    try:
        holder.init_transactions(30)
        holder.begin_transaction()
        holder.produce(EVENTS_BY_LEAD.name, key=b"held", value=b"never ended", partition=0)
        assert holder.flush(30) == 0
        started = time.monotonic()
        deadline = started + OPEN_TAIL_SECONDS + 6 * WATCH_EVERY
        told: list[dict[str, object]] = []
        while not told:
            assert not worker.exited(), f"worker exited {worker.returncode()}:\n{worker.tail()}"
            assert time.monotonic() < deadline, f"not reported:\n{worker.tail()}"
            time.sleep(1.0)
            told = [
                json.loads(line)
                for line in worker.logs[-1].read_text().splitlines()
                if '"worker.open_transaction"' in line
            ]
        waited = time.monotonic() - started
        assert told[0]["partition"] == f"{EVENTS_BY_LEAD.name}:0"
        assert int(str(told[0]["high_watermark"])) > int(str(told[0]["last_stable_offset"]))
        assert waited >= OPEN_TAIL_SECONDS
        assert worker.log_events("worker.stalled") == []
    finally:
        holder.abort_transaction(30)
        worker.stop()
    counts_checked(
        f"an open transaction on {EVENTS_BY_LEAD.name}:0 reported after {waited:.0f} s "
        f"(hold {told[0]['seconds']} s), no stall"
    )
