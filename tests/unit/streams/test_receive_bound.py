"""A receive stamp ahead of the log cannot hold R' in the future (processors/receive_bound.py).

One writer with future ``received_at`` values or heartbeats on ``leadflow.events`` used to
move its partition's R' there for good; a collector's records then sorted at that R' and
waited for a heartbeat past it, which a wall-clock collector never writes: held forever.
The identity stage now counts a stamp as at most its record's Kafka timestamp plus
``max_ahead_ms``; the timestamp is in the log, so outputs stay a function of the log.
"""

from __future__ import annotations

import dataclasses
import doctest
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.demo.inprocess import partition_of
from leadflow.processors import receive_bound
from leadflow.processors.bounds import BoundsTable
from leadflow.processors.events import Context, Event, Kind
from leadflow.processors.receive_bound import DEFAULT_MAX_AHEAD_MS, bounded_received
from leadflow.streams import control
from leadflow.streams.engine.release import StoredRelease
from leadflow.streams.engine.stage import Record
from leadflow.streams.stages import identity as identity_module
from leadflow.streams.stages.identity import CLOCK, CLOCK_KEY, AheadStamps, IdentityTask, Markers
from leadflow.streams.stages.lead import RELEASE, LeadDeps, LeadTask
from leadflow.streams.topics import DLQ, EVENTS, EVENTS_BY_LEAD
from tests.unit.demo.test_inprocess import journeys
from tests.unit.streams.test_release_order import (
    CODEC,
    END,
    MODEL,
    POLICY,
    Ctx,
    Process,
    Sent,
    Sim,
    append_to,
    drive,
)

FUTURE = 2_487_369_600_000  # 2048: a simulated time, a fast clock
NOW = 1_796_000_000_000  # the log's clock in these tests (2026-11)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(receive_bound).failed == 0


stamps = st.integers(-(10**13), 10**13)
timestamps = st.one_of(st.none(), st.integers(-1, 10**13))
aheads = st.integers(0, 10**9)


@given(stamp=stamps, timestamp=timestamps, ahead=aheads)
def test_a_stamp_counts_as_at_most_its_timestamp_plus_the_skew(
    stamp: int, timestamp: int | None, ahead: int
) -> None:
    bounded = bounded_received(stamp, timestamp, ahead)
    assert bounded <= stamp
    if timestamp is None or timestamp < 0:
        assert bounded == stamp  # no timestamp in the log: nothing to bound by
    else:
        assert bounded <= timestamp + ahead
        assert (bounded == stamp) == (stamp <= timestamp + ahead)


@given(a=stamps, b=stamps, ts=st.integers(0, 10**13), ts2=st.integers(0, 10**13), ahead=aheads)
def test_the_bound_keeps_the_order_of_stamps_and_of_timestamps(
    a: int, b: int, ts: int, ts2: int, ahead: int
) -> None:
    lo, hi = sorted((a, b))
    assert bounded_received(lo, ts, ahead) <= bounded_received(hi, ts, ahead)
    early, late = sorted((ts, ts2))
    assert bounded_received(a, early, ahead) <= bounded_received(a, late, ahead)


# -- the identity task ----------------------------------------------------------------


def _event(n: int, received_at: int, device: str = "dev-1") -> Event:
    return Event(f"e{n:03d}", Kind.VISIT, "ws", received_at, received_at,
                 anonymous_id=device, context=Context(path="/pricing"))  # fmt: skip


def _record(offset: int, event: Event, timestamp: int | None) -> Record:
    return Record(EVENTS.name, 0, offset, event.person_key.encode(), CODEC.encode(event),
                  timestamp=timestamp)  # fmt: skip


def _beat(offset: int, value: int, timestamp: int | None, partition: int = 0) -> Record:
    return Record(EVENTS.name, partition, offset, None, b"",
                  {control.HEARTBEAT: str(value).encode()}, timestamp)  # fmt: skip


log_entries = st.lists(
    st.tuples(
        st.booleans(),  # a heartbeat (else an event)
        st.integers(0, 10**7),  # the log's clock moves on by this
        st.integers(-(10**7), 10**13),  # the stamp, relative to the log's clock: ahead or not
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(entries=log_entries, ahead=st.integers(0, 10**6))
def test_r_prime_never_runs_more_than_the_skew_past_the_log_and_is_its_function(
    entries: list[tuple[bool, int, int]], ahead: int
) -> None:
    ctx = Ctx(0)
    counter = AheadStamps(ahead)
    task = IdentityTask(CODEC, BoundsTable(), ctx, Markers(1), 0, counter)
    clock, newest, expected, bounded = NOW, 0, None, 0
    for offset, (is_beat, step, delta) in enumerate(entries):
        clock += step
        stamp = clock + delta
        if is_beat:
            record = _beat(offset, stamp, clock)
        else:
            record = _record(offset, _event(offset, stamp), clock)
        task.on_record(ctx, record)
        newest = max(newest, clock)
        counted = min(stamp, clock + ahead)
        bounded += counted != stamp
        expected = counted if expected is None else max(expected, counted)
        assert task.received == expected  # the running max of bounded stamps: the log's
        assert task.received <= newest + ahead
        assert int(ctx.get(CLOCK, CLOCK_KEY) or 0) == expected
    assert counter.count == bounded
    assert counter.counts() == {"receive_ahead": bounded}


def test_the_event_keeps_its_stamp_only_its_place_is_bounded() -> None:
    ctx = Ctx(0)
    task = IdentityTask(CODEC, BoundsTable(), ctx, Markers(1), 0, AheadStamps(5_000))
    identify = dataclasses.replace(
        _event(1, FUTURE), kind=Kind.IDENTIFY, lead_id="user-1",
        payload={"email": "a@b.io"},
    )  # fmt: skip
    task.on_record(ctx, _record(0, identify, NOW))
    by_lead = [s for s in ctx.sent if s[0] == EVENTS_BY_LEAD.name and s[3].get(control.RECEIVED)]
    assert by_lead
    for _topic, _key, value, headers, _partition in by_lead:
        assert headers[control.RECEIVED] == str(NOW + 5_000).encode()
        assert CODEC.decode(value).received_at == FUTURE  # the fact stays as written


def test_a_bounded_stamp_is_logged_once_per_partition_then_each_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged: list[dict[str, object]] = []
    monkeypatch.setattr(
        identity_module.log, "warning", lambda event, **kw: logged.append({"event": event, **kw})
    )
    counter = AheadStamps(1_000)
    clock = [0.0]
    monkeypatch.setattr(identity_module.time, "monotonic", lambda: clock[0])
    assert counter.bound(_beat(0, NOW, NOW), NOW, "heartbeat") == NOW  # within: not counted
    assert counter.bound(_beat(1, FUTURE, NOW), FUTURE, "heartbeat") == NOW + 1_000
    assert counter.bound(_beat(2, FUTURE, NOW), FUTURE, "heartbeat") == NOW + 1_000
    assert counter.bound(_beat(3, FUTURE, NOW, partition=2), FUTURE, "heartbeat") == NOW + 1_000
    clock[0] = 61.0
    counter.bound(_beat(4, FUTURE, NOW), FUTURE, "received_at")
    assert counter.count == 4
    assert [(e["partition"], e["offset"], e["total"]) for e in logged] == [
        (0, 1, 1), (2, 3, 3), (0, 4, 4)
    ]  # fmt: skip
    assert logged[0] == {
        "event": "identity.receive_ahead", "partition": 0, "offset": 1, "what": "heartbeat",
        "stamp": FUTURE, "record_timestamp": NOW, "counts_as": NOW + 1_000, "max_ahead_ms": 1_000,
        "total": 1,
    }  # fmt: skip


# -- the hazard, through the identity and lead tasks ---------------------------------------


def _run(
    logs: list[list[Record]], partitions: int, ahead: int, schedule: Iterator[int], aborts: int
) -> tuple[dict[str, list[bytes]], list[Sim]]:
    """The identity tasks (one process) and a lead task per by-lead partition over the
    given inbound logs (as tests/unit/streams/test_release_order.py's ``run_engine``, with
    the records' Kafka timestamps); per lead, the derived events of committed batches."""
    deps = LeadDeps(CODEC, POLICY, lambda _ws: MODEL, None, partitions, 0)
    markers = Markers(partitions)
    counter = AheadStamps(ahead)
    inbound = [
        Sim(p, lambda ctx: IdentityTask(CODEC, BoundsTable(), ctx, markers, 0, counter))
        for p in range(partitions)
    ]
    for sim, log in zip(inbound, logs, strict=True):
        sim.log = log
    leads = [Sim(p, lambda ctx: LeadTask(deps, ctx)) for p in range(partitions)]
    processes = [Process("identity", inbound), *(Process("lead", [s]) for s in leads)]
    derived: dict[str, list[bytes]] = {}

    def deliver(proc: Process, sent: Sent) -> None:
        topic, _key, value, _headers, _partition = sent
        if topic == EVENTS_BY_LEAD.name:
            append_to(leads, sent)
        elif proc.name == "lead" and topic != DLQ.name:
            derived.setdefault(CODEC.decode(value).lead_id, []).append(value)

    drive(processes, schedule, aborts, deliver)
    return derived, leads


def _hazard_logs(partitions: int, collector_beats_until: int) -> list[list[Record]]:
    """A rogue writer's record of 2048 and its heartbeat at NOW; then a
    collector (wall clock: stamps = the log's clock) sends a lead's identify and visit and
    heartbeats every second on every partition up to ``collector_beats_until``."""
    logs: list[list[Record]] = [[] for _ in range(partitions)]

    def put(partition: int, make: object) -> None:
        log = logs[partition]
        log.append(make(len(log)))  # type: ignore[operator]

    at = NOW + 100
    real = [
        dataclasses.replace(_event(1, at, device="dev-real"), kind=Kind.IDENTIFY,
                            lead_id="user-real", payload={"email": "r@co.io"}),
        dataclasses.replace(_event(2, at, device="dev-real"), lead_id="user-real"),
    ]  # fmt: skip
    # The rogue writes to the partition the lead's device is on (the others' R' stay real).
    shared = partition_of(real[0].person_key, partitions)
    rogue = _event(0, FUTURE, device="rogue-device")
    put(shared, lambda o: dataclasses.replace(_record(o, rogue, NOW), partition=shared))
    put(shared, lambda o: _beat(o, FUTURE, NOW, partition=shared))
    for event in real:
        p = partition_of(event.person_key, partitions)
        put(p, lambda o, e=event, p=p: dataclasses.replace(_record(o, e, at), partition=p))
    for beat in range(at + 1_000, collector_beats_until, 1_000):
        for p in range(partitions):
            put(p, lambda o, b=beat, p=p: _beat(o, b, b, partition=p))
    return logs


def test_collector_traffic_after_a_2048_stamp_is_released_once_its_heartbeats_pass_the_bound() -> (
    None
):
    partitions = 3
    # Ten seconds of collector heartbeats after the rogue record: past NOW + 5 s.
    held, _ = _run(_hazard_logs(partitions, NOW + 10_000), partitions, 10**15, iter([]), 0)
    assert "user-real" not in held  # unbounded (the old rule): held until 2048
    got, _ = _run(
        _hazard_logs(partitions, NOW + 10_000), partitions, DEFAULT_MAX_AHEAD_MS, iter([]), 0
    )
    assert "user-real" in got  # the lead's identify and visit were processed
    # Two seconds of heartbeats are not enough: the bound is the wait.
    early, _ = _run(
        _hazard_logs(partitions, NOW + 3_000), partitions, DEFAULT_MAX_AHEAD_MS, iter([]), 0
    )
    assert "user-real" not in early


@settings(max_examples=60, deadline=None)
@given(
    data=journeys(),
    rogue=st.lists(st.integers(0, 40), max_size=4),
    ahead=st.sampled_from([0, 1_000, DEFAULT_MAX_AHEAD_MS]),
    schedule=st.lists(st.integers(0, 30), max_size=300),
    aborts=st.integers(0, 3),
)
def test_with_future_stamps_any_schedule_gives_the_outputs_of_the_log(
    data: tuple[list[Event], int],
    rogue: list[int],
    ahead: int,
    schedule: list[int],
    aborts: int,
) -> None:
    """Future stamps (events moved to 2048) among a collector's traffic: whatever the
    schedule, batch boundaries and aborts, the same outputs, and everything is released."""
    events, _lateness = data
    events = [
        dataclasses.replace(e, received_at=FUTURE) if i in rogue else e
        for i, e in enumerate(events)
    ]
    partitions = 3
    logs: list[list[Record]] = [[] for _ in range(partitions)]
    clock = min((e.received_at for e in events), default=NOW)
    for event in events:
        # The log's clock: the collector's stamp for its own records, moving on for a rogue's.
        clock = clock + 1 if event.received_at == FUTURE else max(clock, event.received_at)
        p = partition_of(event.person_key, partitions)
        log = logs[p]
        log.append(dataclasses.replace(_record(len(log), event, clock), partition=p))
        for q in range(partitions):
            beat = _beat(len(logs[q]), clock, clock, partition=q)
            logs[q].append(beat)
    for q in range(partitions):
        logs[q].append(_beat(len(logs[q]), END, END, partition=q))
    forward, leads = _run([list(log) for log in logs], partitions, ahead, iter([]), 0)
    got, _ = _run([list(log) for log in logs], partitions, ahead, iter(schedule), aborts)
    assert got == forward
    for sim in leads:
        assert len(StoredRelease(sim.ctx, RELEASE, partitions, 0)) == 0  # all released
