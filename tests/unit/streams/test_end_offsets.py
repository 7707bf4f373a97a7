"""The end-offset thread says when a partition's end has gone unanswered for long.

The admin client is faked (its ``list_offsets`` futures answer or fail per partition) and
so is the module's clock; each :meth:`EndOffsets.ask` is one round.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from leadflow.streams import logs
from leadflow.streams.engine import ends
from leadflow.streams.engine.ends import UNANSWERED_WARN_SECONDS, EndOffsets
from tests.unit.streams.test_stall import Recorded

A, B = ("leadflow.events", 0), ("leadflow.events", 1)
EVERY = 5.0


class FakeAdmin:
    """Answers ``list_offsets`` for every partition but those in ``silent``; while ``down``,
    the call itself fails."""

    def __init__(self) -> None:
        self.silent: set[tuple[str, int]] = set()
        self.down = False

    def list_offsets(
        self, requests: Iterable[TopicPartition], **_options: object
    ) -> dict[TopicPartition, Future[SimpleNamespace]]:
        if self.down:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        futures: dict[TopicPartition, Future[SimpleNamespace]] = {}
        for tp in requests:
            future: Future[SimpleNamespace] = Future()
            if (tp.topic, tp.partition) in self.silent:
                future.set_exception(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
            else:
                future.set_result(SimpleNamespace(offset=42))
            futures[tp] = future
        return futures


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The module's monotonic clock, set by the test (``clock[0]``)."""
    now = [1000.0]
    monkeypatch.setattr(ends, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def _offsets(
    monkeypatch: pytest.MonkeyPatch, watched: list[tuple[str, int]]
) -> tuple[EndOffsets, FakeAdmin, Recorded]:
    recorded = Recorded()
    monkeypatch.setattr(ends, "log", recorded)
    offsets, admin = EndOffsets({}, EVERY), FakeAdmin()
    offsets._admin = admin  # type: ignore[assignment]
    offsets.watch(watched)
    return offsets, admin, recorded


def _rounds(offsets: EndOffsets, clock: list[float], seconds: float) -> None:
    """Ask every EVERY seconds for ``seconds``."""
    for _ in range(round(seconds / EVERY)):
        clock[0] += EVERY
        offsets.ask()


class Rounds:
    """Stands in for the thread's stop event: each wait is one pause between rounds on the
    test's clock; set after ``rounds`` rounds."""

    def __init__(self, clock: list[float], rounds: int) -> None:
        self.clock, self.rounds = clock, rounds

    def is_set(self) -> bool:
        return self.rounds <= 0

    def wait(self, seconds: float) -> None:
        self.clock[0] += seconds
        self.rounds -= 1


def _events(recorded: Recorded, event: str) -> list[dict]:
    return [fields for _, name, fields in recorded.lines if name == event]


def test_a_partition_long_unanswered_is_warned_about_and_its_answer_logged(
    monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> None:
    offsets, admin, recorded = _offsets(monkeypatch, [A, B])
    offsets.ask()
    assert offsets.unanswered() == {}

    admin.silent = {B}
    _rounds(offsets, clock, UNANSWERED_WARN_SECONDS)  # an outage to ride out: quiet
    assert offsets.unanswered() == {B: 12}
    assert offsets.end(B, clock[0], 3 * EVERY) is None  # stale: the stall watch skips it
    assert _events(recorded, "worker.end_unanswered") == []

    _rounds(offsets, clock, 3 * EVERY)  # past the bound: once, then throttled
    warned = _events(recorded, "worker.end_unanswered")
    assert len(warned) == 1
    assert warned[0]["seconds"] == {"leadflow.events:1": 65}
    assert warned[0]["rounds"] == {"leadflow.events:1": 13}
    assert warned[0]["never_answered"] == []
    assert offsets.unanswered() == {B: 15}

    admin.silent = set()
    _rounds(offsets, clock, EVERY)
    assert offsets.unanswered() == {}
    assert _events(recorded, "worker.end_answered") == [
        {"partition": "leadflow.events:1", "unanswered_seconds": 80, "rounds": 15}
    ]


def test_a_short_gap_is_counted_but_not_logged(
    monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> None:
    offsets, admin, recorded = _offsets(monkeypatch, [A])
    offsets.ask()
    admin.silent = {A}
    _rounds(offsets, clock, 4 * EVERY)
    assert offsets.unanswered() == {A: 4}
    admin.silent = set()
    _rounds(offsets, clock, EVERY)
    assert offsets.unanswered() == {}
    assert recorded.lines == []


def test_a_partition_that_never_answered_is_warned_about_only_past_the_bound(
    monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> None:
    """A worker starting into an outage: no answer yet is no reason to warn early."""
    offsets, admin, recorded = _offsets(monkeypatch, [])
    admin.silent = {A}
    offsets.watch([A])
    _rounds(offsets, clock, UNANSWERED_WARN_SECONDS)
    assert _events(recorded, "worker.end_unanswered") == []
    offsets.watch([A, B])  # a rebalance keeps A's clock running
    _rounds(offsets, clock, EVERY)
    warned = _events(recorded, "worker.end_unanswered")
    assert [w["never_answered"] for w in warned] == [["leadflow.events:0"]]
    assert offsets.unanswered() == {A: 13}


def test_a_failing_round_is_logged_once_a_minute_with_its_count_and_its_end_once(
    monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> None:
    # Through a broker outage every round's ask may fail: it was logged at every round
    # (every 5 s), and nothing said when asking worked again (session 17's audit).
    monkeypatch.setattr(logs, "time", ends.time)  # the throttle reads the test's clock too
    offsets, admin, recorded = _offsets(monkeypatch, [A])
    admin.down = True
    offsets._stop = Rounds(clock, 13)  # type: ignore[assignment]
    offsets._run()  # 65 s of failed rounds
    assert recorded.events("exception") == [
        ("worker.end_offsets_failed", {"failed_rounds": 1}),
        ("worker.end_offsets_failed", {"failed_rounds": 13}),
    ]
    admin.down = False
    offsets._stop = Rounds(clock, 2)  # type: ignore[assignment]
    offsets._run()
    assert recorded.events("info") == [("worker.end_offsets_recovered", {"failed_rounds": 13})]


def test_a_partition_taken_away_while_unanswered_is_logged_as_unwatched(
    monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> None:
    # A rejoin revokes every partition and assigns them again: an unanswered spell past the
    # bound then ended without a line, and the partition's count started over.
    offsets, admin, recorded = _offsets(monkeypatch, [A, B])
    offsets.ask()
    admin.silent = {A, B}
    _rounds(offsets, clock, 2 * EVERY)
    admin.silent = {B}
    _rounds(offsets, clock, UNANSWERED_WARN_SECONDS + EVERY)
    offsets.watch([])  # revoked: A answered lately, B is 75 s past its last answer
    assert _events(recorded, "worker.end_unwatched") == [
        {
            "partition": "leadflow.events:1",
            "unanswered_seconds": 75,
            "rounds": 15,
            "meaning": "no longer owned (a rebalance) before the broker told its end again",
        }
    ]
    offsets.watch([A, B])  # assigned again: a new spell, nothing more to say about the old
    _rounds(offsets, clock, EVERY)
    assert offsets.unanswered() == {B: 1}
    assert len(_events(recorded, "worker.end_unwatched")) == 1
