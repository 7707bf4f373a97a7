"""The erasure event's closing heartbeat promises past where the event sorts.

The worker releases a record once every inbound partition promised past its ``R'`` (the
running maximum of its partition's ``received_at`` values and heartbeats). An erasure's own
``received_at`` is this machine's clock; its partition's ``R'`` can be ahead (a writer's
clock ahead, simulated future times), and then a heartbeat at the wall clock released
nothing: the erasure waited for the collector's next traffic (CI, 2026-12-03).
"""

from __future__ import annotations

import doctest
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError

from leadflow.streams.engine.stores import changelog_topic
from leadflow.streams.pii import erasure
from leadflow.streams.pii.erasure import Eraser, erasure_event
from leadflow.streams.settings import load_settings
from leadflow.streams.stages.identity import CLOCK, CLOCK_KEY
from tests.unit.recorded_log import Recorded
from tests.unit.streams.test_read_to_end import Msg, Script, eof

AHEAD = 2_487_369_600_002  # 2048: test_worker_pipeline's SLA traffic moves R' there


class Events:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.beats: list[tuple[str, int]] = []

    def send(self, records: Sequence[tuple[str, bytes, bytes | None]]) -> None:
        self.sent.extend(records)

    def heartbeat(self, topic: str, value: int) -> None:
        self.beats.append((topic, value))


def _eraser(events: Events, floor: int | None) -> Eraser:
    return Eraser(
        vault=None,
        audit=None,  # type: ignore[arg-type]
        events=events,  # type: ignore[arg-type]
        encode=lambda e: e.event_id.encode(),
        clock_ms=lambda: 0,
        new_id=str,
        received_floor=lambda: floor,
    )


def test_doctests() -> None:
    assert doctest.testmod(erasure).failed == 0


@pytest.mark.parametrize("floor", [None, 5, AHEAD])
def test_the_heartbeat_follows_the_event_past_its_time_the_clock_and_the_floor(
    floor: int | None,
) -> None:
    events = Events()
    now = time.time_ns() // 1_000_000
    event = erasure_event("ws", "lead-1", "dpo", now, "erasure-1")
    _eraser(events, floor).send_event(event)
    assert [topic for topic, _, _ in events.sent] == ["leadflow.events"]
    ((topic, beat),) = events.beats
    assert topic == "leadflow.events"
    assert beat > event.received_at
    assert beat >= now
    if floor is not None:
        assert beat > floor
    if floor == AHEAD:
        assert beat == AHEAD + 1  # just past it: no further bump of every partition


# -- the floor read: the R' changelog's tail, read to its end within the timeout ----------------

CHANGELOG = changelog_topic(CLOCK).name


@dataclass
class Clock(Msg):
    """A record of the R' changelog: the R' of one inbound partition (or an error event)."""

    def key(self) -> bytes:  # type: ignore[override]
        return CLOCK_KEY

    def value(self) -> bytes:
        return str(1000 + self.offset_).encode()


def broken(partition: int) -> Clock:
    return Clock(CHANGELOG, partition, -1, KafkaError(KafkaError._TRANSPORT, "broker down"))


class Changelog(Script):
    """A consumer of the R' changelog, two partitions, whose polls return the script."""

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(partitions={0: None, 1: None}, error=None)
        return SimpleNamespace(topics={topic: meta})

    def assign(self, _partitions: list[Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _floor(monkeypatch: pytest.MonkeyPatch, consumer: Changelog) -> tuple[int | None, Recorded]:
    recorded = Recorded()
    monkeypatch.setattr(erasure, "log", recorded)
    monkeypatch.setattr(confluent_kafka, "Consumer", lambda _config: consumer)
    return erasure.received_floor(load_settings(), timeout=0.3), recorded


def test_floor_read_errors_are_said_and_the_partial_read_names_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # They were swallowed until the deadline; only "partial" was logged, without a cause.
    script = [broken(0), broken(1), broken(0)] * 20
    floor, recorded = _floor(monkeypatch, Changelog(*script))
    assert floor is None
    warned = recorded.events("warning")
    # Once per partition and error within 10 s, then the partial read with the last error.
    assert [(e, f.get("partition")) for e, f in warned] == [
        ("pii.erasure_floor_read_error", f"{CHANGELOG}:0"),
        ("pii.erasure_floor_read_error", f"{CHANGELOG}:1"),
        ("pii.erasure_floor_partial", None),
    ]
    assert "broker down" in warned[0][1]["error"]
    partial = warned[-1][1]
    assert partial["read_errors"] == 60
    assert "broker down" in partial["last_error"]


def test_a_floor_read_that_gets_past_its_errors_returns_the_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Retried until the deadline as before: an error, then both partitions to their end.
    script = [broken(1), Clock(CHANGELOG, 0, 7), Clock(CHANGELOG, 1, 9),
              eof(0, 8, CHANGELOG), eof(1, 10, CHANGELOG)]  # fmt: skip
    floor, recorded = _floor(monkeypatch, Changelog(*script))
    assert floor == 1009
    assert [e for e, _ in recorded.events("warning")] == ["pii.erasure_floor_read_error"]


class NoChangelog(Changelog):
    """A broker without the R' changelog: absent from the metadata, or with an error."""

    def __init__(self, error: KafkaError | None) -> None:
        super().__init__()
        self.error = error

    def list_topics(self, topic: str, timeout: float) -> Any:
        if self.error is None:
            return SimpleNamespace(topics={})
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions={}, error=self.error)})


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (None, "not in the cluster's metadata"),
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), "UNKNOWN_TOPIC_OR_PART"),
    ],
)
def test_a_changelog_without_metadata_is_said_not_a_silent_none(
    monkeypatch: pytest.MonkeyPatch, error: KafkaError | None, said: str
) -> None:
    # It returned None without a word (session 17): the erasure's heartbeat then promised
    # past the wall clock only, and an erasure held by an R' ahead had no cause in the log.
    floor, recorded = _floor(monkeypatch, NoChangelog(error))
    assert floor is None
    [(name, fields)] = recorded.events("warning")
    assert name == "pii.erasure_floor_unread"
    assert fields["topic"] == CHANGELOG
    assert said in fields["error"]


def test_an_unknown_floor_is_said_with_what_it_means(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = Recorded()
    monkeypatch.setattr(erasure, "log", recorded)
    events = Events()
    event = erasure_event("ws", "lead-1", "dpo", time.time_ns() // 1_000_000, "erasure-1")
    _eraser(events, None).send_event(event)
    [(name, fields)] = recorded.events("warning")
    assert name == "pii.erasure_floor_unknown"
    assert fields["event_id"] == "erasure-1"
    assert fields["heartbeat"] == events.beats[0][1]
    assert "next heartbeat past it" in fields["means"]
    _eraser(events, 5).send_event(event)
    assert len(recorded.events("warning")) == 1  # a known floor says nothing
