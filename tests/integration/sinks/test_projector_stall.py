"""The projector's stall watch: a consumer that stops fetching is replaced, then the process exits.

An assigned librdkafka consumer can stop fetching for good after a broker restart, with no
error (librdkafka #5153; session 18's crash loop caught the collector's key reader in it for
15 minutes). The projector had no watch: ClickHouse would have gone stale without a word.
As in the key reader's test, a consumer whose partitions are paused stands in for the stuck
client: it delivers nothing and raises nothing.

Each test has a broker of its own: a new group reads the projected topics from their start,
and on the session's broker that is every earlier test's records (the first CI run of this
file, session 19, spent its 60 s projecting them).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from leadflow.processors.events import Kind
from leadflow.sinks import projector as projector_module
from leadflow.sinks.projector import Projector, ProjectorStalled
from leadflow.streams.local_kafka import scratch_broker
from leadflow.streams.settings import Settings
from leadflow.streams.topics import create_topics
from tests.integration.sinks import scenario
from tests.integration.sinks.test_projector_kafka import _produce
from tests.unit.recorded_log import Recorded

STALL_AFTER = 2.0


class StuckClients(Projector):
    """A projector whose first ``stuck`` consumers stop fetching once they are assigned."""

    def __init__(self, *args: Any, stuck: int, **kwargs: Any) -> None:
        super().__init__(*args, stall_after=STALL_AFTER, watch_every=0.5, **kwargs)
        self.stuck = stuck
        self.paused: list[Consumer] = []

    def step(self, poll_timeout: float, stop_event: threading.Event) -> int:
        consumer = self._consumer
        fresh = consumer is not None and all(consumer is not c for c in self.paused)
        if fresh and len(self.paused) < self.stuck and consumer.assignment():  # type: ignore[union-attr]
            assert consumer is not None
            consumer.pause(consumer.assignment())
            self.paused.append(consumer)
        return super().step(poll_timeout, stop_event)


def _events(workspace: str, n: int) -> list[Any]:
    return [
        dataclasses.replace(
            scenario.ev(f"stall-{i}", Kind.VISIT, i % 20, lead=f"L{i}"), workspace_id=workspace
        )
        for i in range(n)
    ]


def _count(client: Any, db: str, workspace: str) -> int:
    rows = client.query(
        f"SELECT count() FROM {db}.v_events WHERE workspace_id = {{w:String}}",
        parameters={"w": workspace},
    ).result_rows
    return int(rows[0][0])


@dataclass
class Running:
    """A stuck projector's ``run`` in a thread, its log, broker, ClickHouse and workspace."""

    settings: Settings
    client: Any
    db: str
    projector: StuckClients
    recorded: Recorded
    workspace: str
    thread: threading.Thread
    raised: list[BaseException]


@pytest.fixture
def own_broker(base_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    with scratch_broker(base_settings, tmp_path / "kafka") as (_, settings):
        create_topics(settings)
        yield settings


@contextmanager
def running(
    settings: Settings, client: Any, db: str, monkeypatch: pytest.MonkeyPatch, stuck: int
) -> Iterator[Running]:
    """Start the projector; yield once its first consumer is assigned and stuck; stop it."""
    create_topics(settings)
    recorded = Recorded()
    monkeypatch.setattr(projector_module, "log", recorded)
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    projector = StuckClients(settings, client, db, group_id=f"stall-{workspace}", stuck=stuck)
    stop = threading.Event()
    raised: list[BaseException] = []

    def target() -> None:
        try:
            projector.run(stop, poll_timeout=0.2)
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        _wait("the first consumer assigned and stuck", lambda: projector.paused)
        yield Running(settings, client, db, projector, recorded, workspace, thread, raised)
    finally:
        stop.set()
        thread.join(30)


@pytest.fixture
def start(
    own_broker: Settings,
    clickhouse_session: Any,
    clickhouse_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[int], AbstractContextManager[Running]]:
    """``start(stuck)``: :func:`running` on this test's broker and database."""
    return lambda stuck: running(own_broker, clickhouse_session, clickhouse_db, monkeypatch,
                                 stuck)  # fmt: skip


def _wait(what: str, done: Any, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}"
        time.sleep(0.2)


def test_a_consumer_that_stops_fetching_is_replaced_and_nothing_is_missed(
    start: Callable[[int], AbstractContextManager[Running]],
) -> None:
    with start(1) as run:
        events = _events(run.workspace, 30)
        _produce(run.settings, events)  # after the client stopped: only a new one reads them
        _wait(
            "the events in ClickHouse",
            lambda: _count(run.client, run.db, run.workspace) == len(events),
        )
        assert run.projector.stats.stall_rebuilds == 1
        # Caught up and idle: the watch says nothing more.
        time.sleep(3 * STALL_AFTER)
        assert run.projector.stats.stall_rebuilds == 1
        assert not run.raised
        assert run.thread.is_alive()
    stalled = [f for e, f in run.recorded.events("warning") if e == "projector.stalled"]
    assert stalled, "the stall was not logged"
    assert {f["action"] for f in stalled} == {"new consumer"}
    assert all(f["lag"] > 0 and f["end"] > f["committed"] for f in stalled)


def test_a_stall_the_new_consumer_does_not_cure_stops_the_projector(
    start: Callable[[int], AbstractContextManager[Running]],
) -> None:
    with start(2) as run:
        _produce(run.settings, _events(run.workspace, 10))
        run.thread.join(60)
        assert not run.thread.is_alive(), "the projector went on with a partition that never moves"
    projector, raised, recorded = run.projector, run.raised, run.recorded
    assert len(projector.paused) == 2  # the first client, then its replacement
    assert projector.stats.stall_rebuilds == 1
    [exc] = raised
    assert isinstance(exc, ProjectorStalled)
    assert "with a new consumer too" in str(exc)
    [(_, fields)] = recorded.events("error")
    assert fields["action"] == "exit 70 for the supervisor"
    assert _count(run.client, run.db, run.workspace) == 0
