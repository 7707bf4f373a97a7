"""The release order of a by-lead partition is the sorted log, whatever the interleaving."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.processors.ordering import (
    LowWatermark,
    ReleaseBuffer,
    ReleaseKey,
    WatermarkViolation,
    added_wait,
    monotonic_received,
    release_key,
    ripe,
)


@dataclass(frozen=True)
class Rec:
    source: int
    received: int  # R' (monotonic per source)
    occurred_at: int
    event_id: str

    def key(self, lateness: int) -> ReleaseKey:
        return release_key(self.received, self.occurred_at, self.event_id, lateness_ms=lateness)


@st.composite
def logs(draw: st.DrawFn) -> list[list[Rec]]:
    """Per-source logs: R' non-decreasing per source, event times before (or a bit after) R'."""
    sources = draw(st.integers(1, 4))
    out: list[list[Rec]] = []
    n = 0
    for s in range(sources):
        r = draw(st.integers(0, 50))
        log = []
        for _ in range(draw(st.integers(0, 8))):
            r = monotonic_received(r, r + draw(st.integers(0, 40)))
            occurred = r - draw(st.integers(-5, 200))  # -5: a client clock a bit ahead
            log.append(Rec(s, r, occurred, f"e{n:03d}"))
            n += 1
        out.append(log)
    return out


def deliver(log: list[list[Rec]], lateness: int, schedule: list[int]) -> list[Rec]:
    """Feed the sources in the order ``schedule`` picks; markers after each delivery.

    A source's marker after delivering its i-th record promises the R' of its next record
    (everything before it has been sent), or "everything" once the source is drained.
    """
    buffer: ReleaseBuffer[Rec] = ReleaseBuffer(lateness_ms=lateness)
    marks = LowWatermark(sources=len(log))
    pos = [0] * len(log)
    end = max((r.received for part in log for r in part), default=0) + lateness + 1
    for s, part in enumerate(log):  # before anything: each source promises its first R'
        marks.promise(s, part[0].received if part else end)
    released: list[Rec] = []
    live = [s for s in range(len(log)) if log[s]]
    step = 0
    while live:
        s = live[schedule[step % len(schedule)] % len(live)] if schedule else live[0]
        step += 1
        rec = log[s][pos[s]]
        buffer.add(rec.key(lateness), rec)
        pos[s] += 1
        if pos[s] == len(log[s]):
            live.remove(s)
            marks.promise(s, end)
        else:
            marks.promise(s, log[s][pos[s]].received)
        low = marks.low
        assert low is not None
        released.extend(buffer.advance(low))
    released.extend(buffer.advance(end))
    assert len(buffer) == 0
    return released


@settings(max_examples=300, deadline=None)
@given(
    log=logs(),
    lateness=st.sampled_from([0, 10, 100, 1_000]),
    a=st.lists(st.integers(0, 7), max_size=40),
    b=st.lists(st.integers(0, 7), max_size=40),
)
def test_any_interleaving_releases_the_sorted_log(
    log: list[list[Rec]], lateness: int, a: list[int], b: list[int]
) -> None:
    first = deliver(log, lateness, a)
    second = deliver(log, lateness, b)
    expected = sorted((r for part in log for r in part), key=lambda r: r.key(lateness))
    assert first == second == expected


@settings(max_examples=300, deadline=None)
@given(log=logs(), lateness=st.sampled_from([0, 10, 100, 1_000]))
def test_on_time_records_run_in_event_time_order(log: list[list[Rec]], lateness: int) -> None:
    ordered = sorted((r for part in log for r in part), key=lambda r: r.key(lateness))
    on_time = [r for r in ordered if 0 <= r.received - r.occurred_at <= lateness]
    assert on_time == sorted(on_time, key=lambda r: (r.occurred_at, r.event_id))


@settings(max_examples=300, deadline=None)
@given(log=logs(), lateness=st.sampled_from([0, 10, 100, 1_000]))
def test_one_request_runs_in_event_time_order(log: list[list[Rec]], lateness: int) -> None:
    ordered = sorted((r for part in log for r in part), key=lambda r: r.key(lateness))
    for received in {r.received for r in ordered}:
        batch = [r for r in ordered if r.received == received]
        assert batch == sorted(batch, key=lambda r: (r.occurred_at, r.event_id))


@settings(max_examples=300, deadline=None)
@given(log=logs(), lateness=st.sampled_from([0, 10, 100, 1_000]))
def test_a_late_record_never_runs_before_what_occurred_earlier(
    log: list[list[Rec]], lateness: int
) -> None:
    ordered = sorted((r for part in log for r in part), key=lambda r: r.key(lateness))
    for i, late in enumerate(ordered):
        if late.received - late.occurred_at <= lateness:
            continue
        # Everything on time that occurred before R' - D was processed before it.
        cutoff = late.received - lateness
        after = ordered[i + 1 :]
        assert not [
            r
            for r in after
            if r.occurred_at < cutoff and 0 <= r.received - r.occurred_at <= lateness
        ]


@given(
    received=st.integers(0, 10**6),
    occurred=st.integers(-(10**6), 2 * 10**6),
    lateness=st.integers(0, 10**5),
)
def test_the_wait_is_bounded_by_the_lateness(received: int, occurred: int, lateness: int) -> None:
    key = release_key(received, occurred, "e", lateness_ms=lateness)
    assert received - lateness <= key.at <= received
    wait = added_wait(received, occurred, lateness)
    assert 0 <= wait <= lateness
    assert key.at + lateness == received + wait  # released once the watermark passes R' + wait


def test_a_record_behind_a_promised_watermark_is_refused() -> None:
    buffer: ReleaseBuffer[str] = ReleaseBuffer(lateness_ms=0)
    buffer.add(release_key(10, 5, "a"), "a")
    assert buffer.advance(11) == ["a"]
    with pytest.raises(WatermarkViolation):
        buffer.add(release_key(10, 9, "b"), "b")


def test_equal_keys_are_ordered_by_their_bytes_not_by_arrival() -> None:
    key = release_key(10, 5, "reused-message-id")
    one: ReleaseBuffer[str] = ReleaseBuffer()
    one.add(key, "second", b"\x02")
    one.add(key, "first", b"\x01")
    other: ReleaseBuffer[str] = ReleaseBuffer()
    other.add(key, "first", b"\x01")
    other.add(key, "second", b"\x02")
    assert one.advance(11) == other.advance(11) == ["first", "second"]


def test_nothing_is_released_until_every_source_has_promised() -> None:
    marks = LowWatermark(sources=2)
    marks.promise(0, 50)
    assert marks.low is None
    marks.promise(1, 20)
    marks.promise(1, 10)  # an older promise changes nothing
    assert marks.low == 20
    assert ripe(release_key(19, 1, "x"), 20)
    assert not ripe(release_key(20, 1, "x"), 20)
