"""Clock steps (processors/sla_clock.py, streams/stages/sla_clock.py): a workspace's event
time reaches the by-lead partitions its leads have no traffic on, at a place in the log.

The pure rule (steps per inbound partition, the clock they give at each release key), the
wire form, and the real identity and lead tasks over the simulated broker of
test_release_order: an MQL on a quiet partition breaches its SLA when another partition's
traffic moves event time past it, with the same derived records whatever the schedule,
batch boundaries or aborted batches.
"""

from __future__ import annotations

import doctest
import functools
import itertools
import json
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.demo.inprocess import partition_of
from leadflow.processors import sla_clock
from leadflow.processors.derived import SlaBreached
from leadflow.processors.events import Context, Event, Kind, lead_key, scoped_key
from leadflow.processors.identity import derive_lead_id
from leadflow.processors.ordering import ReleaseKey, release_key
from leadflow.processors.scoring import DAY_MS
from leadflow.processors.sla_clock import ClockStep, next_step, step_of
from leadflow.streams.control import ControlRecordError
from leadflow.streams.engine.release import at_of
from leadflow.streams.stages import sla_clock as stage_clock
from leadflow.streams.stages.sla_clock import decode_steps, encode_steps, step_sort
from tests.integration.pipeline.journeys import HOUR, ICP, T0
from tests.unit.demo.test_inprocess import journeys
from tests.unit.streams.test_release_order import CODEC, Ctx, run_stages, sim_events


def test_docstring_examples_run() -> None:
    for module in (sla_clock, stage_clock):
        assert doctest.testmod(module, raise_on_error=True).failed == 0


# -- the pure rule ----------------------------------------------------------------------


def _steps(sources: list[list[tuple[int, int, str]]], step_ms: int, lateness: int) -> list[
    tuple[ReleaseKey, int]
]:  # fmt: skip
    """What each inbound partition sends: (R', occurred_at, id) in its log order."""
    out: list[tuple[ReleaseKey, int]] = []
    for queue in sources:
        last: int | None = None
        received: int | None = None
        for r, occurred, eid in queue:
            received = r if received is None else max(received, r)
            value = next_step(last, occurred, step_ms)
            if value is not None:
                last = value
                out.append((release_key(received, occurred, eid, lateness_ms=lateness), value))
    return out


@settings(max_examples=150, deadline=None)
@given(
    sources=st.lists(
        st.lists(st.tuples(st.integers(0, 50), st.integers(-20, 60)), max_size=12),
        min_size=1,
        max_size=4,
    ),
    step_ms=st.integers(1, 15),
    lateness=st.sampled_from([0, 5]),
)
def test_the_steps_clock_at_a_key_lies_between_what_was_received_before_and_at_it(
    sources: list[list[tuple[int, int]]], step_ms: int, lateness: int
) -> None:
    """At every release key ``k`` the clock of the steps sorting at or before it is at least
    the rounded event time of everything received before ``k.at`` on any inbound partition
    (so a deadline that traffic passed fires by then) and at most that of everything that
    sorts at or before ``k`` (no step fires a deadline early)."""
    named = [[(r, o, f"e{s}-{i:02d}") for i, (r, o) in enumerate(q)] for s, q in enumerate(sources)]
    steps = _steps(named, step_ms, lateness)
    events: list[tuple[int, ReleaseKey, int]] = []  # (R', key, occurred)
    for queue in named:
        received: int | None = None
        for r, occurred, eid in queue:
            received = r if received is None else max(received, r)
            events.append((received, release_key(received, occurred, eid, lateness_ms=lateness),
                           occurred))  # fmt: skip
    for _, key, _ in events:
        clock = max((v for k, v in steps if k <= key), default=None)
        upper = max(step_of(o, step_ms) for _, k, o in events if k <= key)
        before = [step_of(o, step_ms) for r, _, o in events if r < key.at]
        if clock is not None:
            assert clock <= upper
        if before:
            assert clock is not None
            assert clock >= max(before)
    # One step per step of event time per source, at most: never more than the events.
    assert len(steps) <= sum(len(q) for q in named)


def test_a_step_is_sent_once_per_step_of_event_time_per_source() -> None:
    assert [next_step(None, 5, 10), next_step(0, 9, 10), next_step(0, 10, 10)] == [0, None, 10]
    with pytest.raises(ValueError, match="step"):
        step_of(5, 0)


def test_the_clock_record_round_trips_and_refuses_garbage() -> None:
    steps = [ClockStep("ws", 7 * HOUR, release_key(9, 8, "e-1")),
             ClockStep("w2", -HOUR, release_key(3, -5, "x", rank=0, lateness_ms=10))]  # fmt: skip
    assert decode_steps(encode_steps(steps)) == tuple(steps)
    for bad in (b"{", b'{"a":1}', b'[["ws",1,2]]', b'[[1,1,2,3,"e",2]]', b'[["ws","x",2,3,"e",2]]'):
        with pytest.raises(ControlRecordError):
            decode_steps(bad)


# -- the stage tasks --------------------------------------------------------------------


def _ev(ws: str, eid: str, kind: Kind, hours: float, *, anon: str | None = None,
        lead: str | None = None, path: str | None = None, **payload: object) -> Event:  # fmt: skip
    at = T0 + int(hours * HOUR)
    return Event(f"{ws}-{eid}", kind, ws, at, at, anonymous_id=anon, lead_id=lead,
                 context=Context(path=path, channel="direct"), payload=dict(payload))  # fmt: skip


def _quiet_and_busy(partitions: int) -> tuple[list[Event], str]:
    """An MQL nobody reviews, and later traffic of another lead of its workspace on
    another by-lead partition only; the quiet lead's key."""
    ws = "ws-sla"
    email = "ada@ws-sla.example.com"
    quiet = derive_lead_id(ws, email)
    mql = [
        _ev(ws, "v1", Kind.VISIT, 0, anon="dev-q", path="/pricing"),
        _ev(ws, "v2", Kind.VISIT, 1, anon="dev-q", path="/pricing"),
        _ev(ws, "v3", Kind.VISIT, 2, anon="dev-q", path="/pricing"),
        _ev(ws, "f1", Kind.FORM_SUBMITTED, 3, anon="dev-q", email=email, **ICP),
    ]
    home = partition_of(lead_key(ws, quiet), partitions)
    other = next(
        lead
        for lead in (derive_lead_id(ws, f"bob{i}@ws-sla.example.com") for i in range(100))
        if partition_of(lead_key(ws, lead), partitions) != home
    )
    busy = [_ev(ws, f"b{h}", Kind.VISIT, h, lead=other, path="/blog") for h in (10, 20, 40)]
    return mql + busy, lead_key(ws, quiet)


def _breaches(derived: dict[str, list[bytes]], lead: str) -> list[SlaBreached]:
    lead_id = lead.split('"')[3]
    return [b for b in map(CODEC.decode, derived.get(lead_id, [])) if isinstance(b, SlaBreached)]


def test_an_sla_fires_when_only_another_partition_moves_event_time() -> None:
    events, quiet = _quiet_and_busy(3)
    without = run_stages(events, 3, 0, iter([]), 0).derived
    assert _breaches(without, quiet) == []  # the gap the steps close: the partition is quiet
    got = run_stages(events, 3, 0, iter([]), 0, step_ms=HOUR).derived
    [breach] = _breaches(got, quiet)
    assert breach.due_at == T0 + 27 * HOUR  # MQL at 3 h + the default 24 h SLA


@settings(max_examples=40, deadline=None)
@given(
    partitions=st.integers(2, 4),
    schedule=st.lists(st.integers(0, 30), max_size=200),
    aborts=st.integers(0, 3),
    step_ms=st.sampled_from([HOUR, 24 * HOUR]),
)
def test_what_steps_fire_is_the_same_under_any_schedule(
    partitions: int, schedule: list[int], aborts: int, step_ms: int
) -> None:
    events, quiet = _quiet_and_busy(partitions)
    run = functools.partial(run_stages, events, partitions, 0, step_ms=step_ms)
    reference = run(iter([]), 0).derived
    assert len(_breaches(reference, quiet)) == (1 if step_ms == HOUR else 0)  # 40 h < 27 h + 24 h
    assert run(itertools.cycle(schedule or [0]), aborts).derived == reference


def _views(derived: dict[str, list[bytes]]) -> dict[str, list[bytes]]:
    return {lead: sorted(values) for lead, values in derived.items()}


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 3),
    partitions=st.integers(2, 4),
    trainers=st.integers(0, 2),
    lateness=st.sampled_from([0, 120_000]),
    schedule=st.lists(st.integers(0, 40), max_size=300),
    aborts=st.integers(0, 2),
)
def test_a_simulated_workspace_with_steps_derives_the_same_under_any_schedule(
    seed: int, partitions: int, trainers: int, lateness: int, schedule: list[int], aborts: int
) -> None:
    """A simulated workspace (recycles, hand-offs, horizon negatives, decay re-scores), with
    and without trainers (the examples a step fires carry its position): the same derived
    records per lead, in the same order, as the schedule that runs everything in order."""
    events = sim_events(seed)
    run = functools.partial(
        run_stages, events, partitions, lateness, trainers=trainers, step_ms=HOUR
    )
    reference = run(iter([]), 0)
    got = run(itertools.cycle(schedule or [0]), aborts)
    assert got.derived == reference.derived
    assert got.snapshots == reference.snapshots


@settings(max_examples=60, deadline=None)
@given(
    data=journeys(),
    partitions=st.integers(2, 4),
    schedule=st.lists(st.integers(0, 30), max_size=300),
    aborts=st.integers(0, 3),
)
def test_merges_and_late_requests_with_steps_derive_the_same_under_any_schedule(
    data: tuple[list[Event], int], partitions: int, schedule: list[int], aborts: int
) -> None:
    """test_release_order's journeys (merges, shared devices, late requests) with steps
    every minute of event time: any schedule gives what the in-order one gives."""
    events, lateness = data
    run = functools.partial(run_stages, events, partitions, lateness, step_ms=60_000)
    assert run(iter(schedule), aborts).derived == run(iter([]), 0).derived


def _all(derived: dict[str, list[bytes]]) -> Iterable[bytes]:
    return itertools.chain.from_iterable(derived.values())


def test_steps_fire_deadlines_a_quiet_partition_held_back() -> None:
    """The simulated workspace on four partitions: with steps, no fewer SLA breaches than
    without, and every breach of the run without steps is there too (same id)."""
    events = sim_events(0)
    without = run_stages(events, 4, 0, iter([]), 0).derived
    with_steps = run_stages(events, 4, 0, iter([]), 0, step_ms=HOUR).derived

    def breach_ids(derived: dict[str, list[bytes]]) -> set[str]:
        return {b.breach_id for b in map(CODEC.decode, _all(derived)) if isinstance(b, SlaBreached)}

    assert breach_ids(without) <= breach_ids(with_steps)


def NO_CLOCK(workspace: str) -> int:
    """Every workspace's clock at 0: no step is below it."""
    return 0


def _drain(pending: stage_clock.PendingSteps) -> list[tuple[int, str, int]]:
    out = []
    while (step := pending.pop_before(None, 10**15, 0)) is not None:
        out.append(step)
    return out


def _hourly_steps(hours: int, workspaces: tuple[str, ...] = ("ws",)) -> list[ClockStep]:
    return [ClockStep(ws, T0 + HOUR * i, release_key(10 * i, 10 * i, f"e{i}"))
            for i in range(hours) for ws in workspaces]  # fmt: skip


def test_a_batch_rewrites_only_the_days_of_pending_steps_it_moved() -> None:
    """Applying one of 300 pending steps (a week of hours, two workspaces) writes one chunk.

    The list format rewrote every pending step of the workspace in every such batch: ~1,200
    per partition in a catch-up (docs/benchmarks.md, session 9).
    """
    ctx = Ctx(0)
    steps = _hourly_steps(150, ("a", "b"))
    pending = stage_clock.PendingSteps(ctx, "routing")
    pending.add(steps, NO_CLOCK)
    pending.add(steps[:1], NO_CLOCK)  # a copy moves nothing: not kept
    assert pending.redundant == 1
    pending.flush(ctx)
    written = ctx.stores["routing"].pending
    assert sorted(json.loads(k)[1] for k in written if json.loads(k)[0] == "a") == [
        f"steps {d}" for d in range(T0 // DAY_MS, T0 // DAY_MS + 7)
    ]
    ctx.stores["routing"].commit()

    assert pending.pop_before(None, 10**15, 0) == (0, "a", T0)
    pending.add([ClockStep("a", T0 + 400 * HOUR, release_key(5, 5, "late"))], NO_CLOCK)
    pending.flush(ctx)
    assert sorted(json.loads(k)[1] for k in ctx.stores["routing"].pending) == [
        f"steps {T0 // DAY_MS}",
        f"steps {(T0 + 400 * HOUR) // DAY_MS}",
    ]
    ctx.stores["routing"].commit()

    rebuilt = stage_clock.PendingSteps(ctx, "routing")
    assert len(rebuilt) == len(pending) == 300
    assert _drain(rebuilt) == _drain(pending)
    pending.flush(ctx)
    ctx.stores["routing"].commit()
    assert list(ctx.items("routing")) == []


def test_pending_steps_stored_as_one_list_are_read_and_rewritten_as_chunks() -> None:
    """A store written before session 9 (``["<ws>","steps"]``) gives the same steps."""
    steps = _hourly_steps(30)
    old = Ctx(0)
    rows = sorted([step_sort(s).hex(), s.value] for s in steps)
    old.put("routing", scoped_key("ws", "steps").encode(), json.dumps(rows).encode())
    old.put("routing", scoped_key("ws", "clock").encode(), b"0")  # other entries stay
    old.stores["routing"].commit()

    pending = stage_clock.PendingSteps(old, "routing")
    pending.flush(old)
    old.stores["routing"].commit()
    names = sorted(json.loads(key)[1] for key, _ in old.items("routing"))
    assert names == ["clock", f"steps {T0 // DAY_MS}", f"steps {T0 // DAY_MS + 1}"]

    fresh = stage_clock.PendingSteps(Ctx(0), "routing")
    fresh.add(steps, NO_CLOCK)
    assert _drain(stage_clock.PendingSteps(old, "routing")) == _drain(pending) == _drain(fresh)


STEP_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(("a", "b")), st.integers(1, 4),
                  st.integers(0, 20)),
        st.tuples(st.just("pop"), st.just(""), st.just(0), st.integers(0, 25)),
    ),
    max_size=60,
)  # fmt: skip


@settings(max_examples=300)
@given(STEP_OPS)
def test_clocks_move_as_if_every_step_copy_were_kept(ops: list[tuple[str, str, int, int]]) -> None:
    """The steps ``add`` does not keep would move no clock: the clocks move the same.

    The reference keeps every copy in a heap and applies each in sort order; both pop what
    sorts at or before the same head as steps arrive from inbound partitions in any order.
    """
    pending = stage_clock.PendingSteps(Ctx(0), "routing")
    clocks: dict[str, int] = {}
    reference: list[tuple[bytes, str, int]] = []
    ref_clocks: dict[str, int] = {}
    moves: list[tuple[int, str, int]] = []
    ref_moves: list[tuple[int, str, int]] = []
    for n, (op, ws, hour, at) in enumerate(ops):
        if op == "add":
            step = ClockStep(ws, hour * HOUR, release_key(at, at, f"e{n}"))
            pending.add([step], lambda w: clocks.get(w, 0))
            reference.append((step_sort(step), ws, hour * HOUR))
            continue
        head = step_sort(ClockStep("", 0, release_key(at, at, "~")))
        while (got := pending.pop_before(head, 10**15, 0)) is not None:
            _, w, value = got
            if value > clocks.get(w, 0):
                clocks[w] = value
                moves.append(got)
        reference.sort()
        while reference and reference[0][0] < head:
            sort, w, value = reference.pop(0)
            if value > ref_clocks.get(w, 0):
                ref_clocks[w] = value
                ref_moves.append((at_of(sort), w, value))
    assert moves == ref_moves
    assert clocks == ref_clocks
