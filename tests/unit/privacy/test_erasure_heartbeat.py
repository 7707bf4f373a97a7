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

import pytest

from leadflow.streams.pii import erasure
from leadflow.streams.pii.erasure import Eraser, erasure_event

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
