"""The engine's event-time order (issue 17 point 2, issue 14): the identity stage's R' and
markers and the lead stage's release buffer, driven by arbitrary schedules.

The stage tasks run as the engine runs them (one task per partition, batches that commit
or abort, stores rebuilt on abort), over a simulated broker: which task moves next, where
batches end and which of them abort (a crash) is a *schedule*. Whatever the schedule, every
lead's derived events must be those of ``leadflow.demo.inprocess.InProcess``, the
reference (tests/unit/demo/test_inprocess.py), which releases in the canonical order.
"""

from __future__ import annotations

import dataclasses
import doctest
import functools
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.demo.inprocess import InProcess, partition_of
from leadflow.demo.simulator.generator import SimConfig, Simulation
from leadflow.demo.simulator.send import message_to_event
from leadflow.processors.bounds import BoundsTable
from leadflow.processors.derived import LeadMerged, LeadScored
from leadflow.processors.events import Event, Kind, lead_key
from leadflow.processors.merges import Direct
from leadflow.processors.model import ScoreModel
from leadflow.processors.ordering import (
    ModelSwitches,
    ReleaseKey,
    Switch,
    release_key,
    switch_gate,
)
from leadflow.processors.policy import Policy
from leadflow.processors.policy_load import load_default_policy
from leadflow.schemas.codec import SingleObjectCodec
from leadflow.streams import control
from leadflow.streams.collector import receive_clock
from leadflow.streams.engine import frontier, release
from leadflow.streams.engine.frontier import FrontMarkers
from leadflow.streams.engine.release import Held, StoredRelease, at_of, sort_bytes
from leadflow.streams.engine.stage import Record, Task
from leadflow.streams.engine.stores import PartitionStore
from leadflow.streams.stages.identity import IdentityTask, Markers
from leadflow.streams.stages.lead import PARTITION, RELEASE, LeadDeps, LeadTask, settle
from leadflow.streams.stages.sla_clock import ClockSteps, PendingSteps
from leadflow.streams.stages.trainer import TrainerDeps, TrainerTask
from leadflow.streams.topics import (
    DLQ,
    EVENTS,
    EVENTS_BY_LEAD,
    LEAD_SCORED,
    MODELS,
    TRAINING_EXAMPLES,
    TopicSpec,
    worker_partition,
)
from tests.unit.demo import journey
from tests.unit.demo.test_inprocess import (
    _chain_journey,
    _second_device_journey,
    _shared_device_journey,
    encoded,
    journeys,
)

POLICY = load_default_policy()
CODEC = SingleObjectCodec()
MODEL = ScoreModel(POLICY, "ws")
T0 = 1_767_225_600_000
END = 2**62


def sim_partition(key: bytes, partitions: int) -> int:
    """Where the simulated broker puts a by-lead key (``LeadDeps.partition_of`` here)."""
    return partition_of(key.decode(), partitions)


def test_docstring_examples_run() -> None:
    for module in (control, receive_clock, release, frontier):
        assert doctest.testmod(module).failed == 0


keys = st.builds(
    release_key,
    st.integers(-(10**12), 10**13),
    st.integers(-(10**12), 10**13),
    # Event ids come out of Avro (UTF-8): no NUL (refused), no lone surrogates (undecodable).
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6),
    rank=st.integers(0, 2),
    lateness_ms=st.integers(0, 10**6),
)


@given(a=keys, b=keys, ta=st.binary(max_size=4), tb=st.binary(max_size=4))
def test_sort_bytes_compare_like_the_key_then_the_tiebreak(
    a: ReleaseKey, b: ReleaseKey, ta: bytes, tb: bytes
) -> None:
    assert (sort_bytes(a, ta) < sort_bytes(b, tb)) == ((a, ta) < (b, tb))
    assert at_of(sort_bytes(a, ta)) == a.at


def test_the_receive_clock_never_promises_past_a_request_not_yet_queued() -> None:
    now = [100]
    clock = receive_clock.ReceiveClock(lambda: now[0])
    stamp = clock.open()
    now[0] = 500
    assert clock.floor() == 100  # the open request may still be written with 100
    clock.close(stamp)
    assert clock.floor() == 500
    now[0] = 300  # the wall clock steps back: stamps do not
    assert clock.open() == 500


# -- a simulated broker and engine -----------------------------------------------------


@dataclass
class Ctx:
    """A task's context: its partition's stores, and what the open batch sent."""

    partition: int
    stores: dict[str, PartitionStore] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    dead: list[Record] = field(default_factory=list)

    def _store(self, name: str) -> PartitionStore:
        return self.stores.setdefault(name, PartitionStore())

    def get(self, store: str, key: bytes) -> bytes | None:
        return self._store(store).get(key)

    def put(self, store: str, key: bytes, value: bytes | None) -> None:
        self._store(store).put(key, value)

    def items(self, store: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return self._store(store).items(prefix)

    def send(
        self,
        topic: TopicSpec,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes] | None = None,
        partition: int | None = None,
    ) -> None:
        self.sent.append((topic.name, key, value, dict(headers or {}), partition))

    def dead_letter(self, record: Record, exc: Exception) -> None:
        self.dead.append(record)


@dataclass
class Sim:
    """One task of a partition, reading its input log."""

    partition: int
    factory: Callable[[Ctx], Task]
    log: list[Record] = field(default_factory=list)
    ctx: Ctx = field(init=False)
    task: Task = field(init=False)
    committed: int = 0
    cursor: int = 0

    def __post_init__(self) -> None:
        self.ctx = Ctx(self.partition)
        self.task = self.factory(self.ctx)


# What a process sent in a batch: topic, key, value, headers, partition (None: by key).
Sent = tuple[str, bytes | None, bytes, dict[str, bytes], int | None]


@dataclass
class Process:
    """Tasks that share one transaction per batch, as one worker process's do: a batch
    commits (every touched task's ``on_batch_end``, stores, sends, offsets) or aborts (a
    crash: every task rebuilt from its committed stores, rewound to its committed offset)."""

    name: str
    sims: list[Sim]
    # The stage's ``settle`` (the lead stage's in-memory promises), run at each commit.
    settle: Callable[[Mapping[int, tuple[Task, Ctx]]], Sequence[int]] | None = None

    def step(self, sim: Sim) -> None:
        sim.task.on_record(sim.ctx, sim.log[sim.cursor])
        sim.cursor += 1

    def in_batch(self) -> bool:
        return any(s.cursor > s.committed for s in self.sims)

    def __post_init__(self) -> None:
        for sim in self.sims:
            sim.ctx.sent = self.sent  # one producer: sends keep the order they were made in

    sent: list[Sent] = field(default_factory=list)

    def commit(self) -> list[Sent]:
        touched = [s for s in self.sims if s.cursor > s.committed]
        if self.settle is not None and touched:
            more = set(self.settle({s.partition: (s.task, s.ctx) for s in self.sims}))
            touched += [s for s in self.sims if s.partition in more and s not in touched]
        for sim in touched:
            sim.task.on_batch_end(sim.ctx)
        for sim in self.sims:
            for store in sim.ctx.stores.values():
                store.commit()
            sim.committed = sim.cursor
        sent = list(self.sent)
        self.sent.clear()
        return sent

    def abort(self) -> None:
        self.sent.clear()
        for sim in self.sims:
            for store in sim.ctx.stores.values():
                store.abort()
            sim.cursor = sim.committed
        for sim in self.sims:
            sim.task = sim.factory(sim.ctx)  # rebuilt from the committed stores, as the engine does


def drive(
    processes: list[Process],
    schedule: Iterator[int],
    aborts: int,
    deliver: Callable[[Process, Sent], None],
) -> None:
    """Run ``processes`` until every log is read and every batch has ended: each step of
    ``schedule`` picks one action (read a record, commit a batch, or, ``aborts`` times,
    abort one), and every send of a committed batch goes to ``deliver`` in send order."""
    while True:
        actions: list[tuple[str, Process, Sim | None]] = [
            ("step", proc, s) for proc in processes for s in proc.sims if s.cursor < len(s.log)
        ]
        actions += [("commit", proc, None) for proc in processes if proc.in_batch()]
        if aborts > 0:
            actions += [("abort", proc, None) for proc in processes if proc.in_batch()]
        if not actions:
            return
        kind, proc, sim = actions[next(schedule, 0) % len(actions)]
        if kind == "step":
            assert sim is not None
            proc.step(sim)
        elif kind == "abort":
            aborts -= 1
            proc.abort()
        else:
            for sent in proc.commit():
                deliver(proc, sent)


def append_to(sims: list[Sim], sent: Sent) -> None:
    """Append a sent record to the log of its partition (the key's, when none was named)."""
    topic, key, value, headers, partition = sent
    if partition is None:
        assert key is not None
        partition = partition_of(key.decode(), len(sims))
    log = sims[partition].log
    log.append(Record(topic, partition, len(log), key, value, headers))


def run_engine(
    events: list[Event],
    partitions: int,
    lateness: int,
    schedule: Iterator[int],
    aborts: int,
    lead_processes: int | None = None,
) -> dict[str, list[bytes]]:
    """The stage tasks over ``partitions`` inbound and by-lead partitions; per lead, the
    derived events it emitted (committed batches only), as wire bytes.

    The identity tasks run in one process (one transaction per batch, shared markers);
    each lead task in a process of its own, or with ``lead_processes`` = k in k processes
    (partition p in process p mod k) that hand their promises over in memory.
    """
    return run_stages(
        events, partitions, lateness, schedule, aborts, lead_processes=lead_processes
    ).derived


@dataclass
class Outputs:
    derived: dict[str, list[bytes]]  # per lead, what the lead stage derived (examples too)
    snapshots: list[bytes]  # what the trainers published on leadflow.models, in order
    switches: int  # model markers released by the lead tasks


def run_stages(
    events: list[Event],
    partitions: int,
    lateness: int,
    schedule: Iterator[int],
    aborts: int,
    *,
    trainers: int = 0,
    delay: int = 1,
    switch_records: int = 0,
    policy: Policy = POLICY,
    step_ms: int = 0,
    lead_processes: int | None = None,
) -> Outputs:
    """:func:`run_engine`, and with ``trainers`` > 0 the trainer tasks too (each in a
    process of its own) with the model switch in the log; with ``step_ms`` > 0 the identity
    tasks send clock steps (processors/sla_clock.py)."""
    key = b"k"
    deps = LeadDeps(CODEC, policy, lambda _ws: MODEL, None, partitions, lateness,
                    trainers=trainers, model_key=key, switch_records=switch_records,
                    forwards=partitions,
                    partition_of=sim_partition)  # fmt: skip
    tdeps = TrainerDeps(CODEC, policy, key, partitions, delay)
    markers = Markers(partitions)
    steps = ClockSteps(partitions)
    identity = functools.partial(
        IdentityTask, CODEC, BoundsTable(), markers=markers, lateness_ms=lateness, steps=steps,
        step_ms=step_ms,
    )  # fmt: skip
    inbound = [Sim(p, lambda ctx: identity(ctx=ctx)) for p in range(partitions)]
    groups = lead_processes or partitions  # lead task p runs in process p mod groups
    fronts = [FrontMarkers(partitions) for _ in range(groups)]  # one per process
    leads = [Sim(p, lambda ctx: LeadTask(deps, ctx, fronts=fronts[ctx.partition % groups]))
             for p in range(partitions)]  # fmt: skip
    trains = [Sim(p, lambda ctx: TrainerTask(tdeps, ctx)) for p in range(trainers)]
    handing = functools.partial(settle, deps) if lead_processes else None
    processes = [
        Process("identity", inbound),
        *(Process("lead", leads[g::groups], handing) for g in range(groups)),
        *(Process("trainer", [s]) for s in trains),
    ]
    snapshots: list[bytes] = []
    per_source: list[list[Event]] = [[] for _ in range(partitions)]
    for event in events:
        per_source[partition_of(event.person_key, partitions)].append(event)
    for source, queue in enumerate(per_source):
        # The collector's heartbeats: before and after each record, up to the next one's
        # received_at (never past it: the collector's floor), and everything at the end.
        log = inbound[source].log
        beats = [e.received_at for e in queue] + [END]
        log.append(_beat(beats[0]))
        for event, after in zip(queue, beats[1:], strict=True):
            log.append(Record(EVENTS.name, source, len(log), event.person_key.encode(),
                              CODEC.encode(event)))  # fmt: skip
            log.append(_beat(after))
    derived: dict[str, list[bytes]] = {}

    def deliver(proc: Process, sent: Sent) -> None:
        topic, _key, value, headers, _partition = sent
        if topic == EVENTS_BY_LEAD.name:
            append_to(leads, sent)
        elif topic == TRAINING_EXAMPLES.name and trainers:
            append_to(trains, sent)
            if not control.is_control(headers):
                derived.setdefault(CODEC.decode(value).lead_id, []).append(value)
        elif topic == MODELS.name:
            snapshots.append(value)
        elif proc.name == "lead" and topic != DLQ.name:
            derived.setdefault(CODEC.decode(value).lead_id, []).append(value)

    drive(processes, schedule, aborts, deliver)
    switches = 0
    for sim in leads:
        assert len(StoredRelease(sim.ctx, RELEASE, partitions, lateness)) == 0
        assert len(PendingSteps(sim.ctx, PARTITION)) == 0
        assert not sim.ctx.dead
        switches += sum(1 for k, _ in sim.ctx.items(PARTITION) if k.endswith(b'"model"]'))
    return Outputs(derived, snapshots, switches)


def _beat(value: int) -> Record:
    return Record(EVENTS.name, 0, 0, None, b"", {control.HEARTBEAT: str(value).encode()})


@settings(max_examples=80, deadline=None)
@given(
    data=journeys(),
    partitions=st.integers(2, 4),
    schedule=st.lists(st.integers(0, 30), max_size=300),
    aborts=st.integers(0, 3),
    lead_processes=st.sampled_from([None, 1, 2]),
)
def test_any_schedule_of_the_engine_gives_the_reference_outputs(
    data: tuple[list[Event], int],
    partitions: int,
    schedule: list[int],
    aborts: int,
    lead_processes: int | None,
) -> None:
    events, lateness = data
    reference = InProcess(POLICY, partitions, lateness_ms=lateness, model=MODEL).run(events)
    got = run_engine(events, partitions, lateness, iter(schedule), aborts, lead_processes)
    assert got == encoded(reference)


def test_the_issue_journey_on_four_partitions_in_two_schedules_is_the_reference() -> None:
    events = journey.events()
    reference = encoded(InProcess(POLICY, 4, model=MODEL).run(events))
    assert reference
    forward = run_engine(events, 4, 0, iter([]), 0)
    backward = run_engine(events, 4, 0, iter([7, 3, 11, 5, 2] * 60), 2)
    assert forward == reference
    assert backward == reference


def test_a_record_waits_until_every_source_promised_past_it() -> None:
    ctx = Ctx(0)
    buf = StoredRelease(ctx, RELEASE, sources=2, lateness_ms=0)
    sort = sort_bytes(release_key(100, 90, "e1"), b"v")
    assert buf.add(ctx, sort, Held(b"k", b"v", 3))
    assert not buf.add(ctx, sort, Held(b"k", b"v", 3))  # the same bytes again: kept once
    buf.promise(0, 500)
    assert buf.peek_ripe() is None  # source 1 has not spoken
    buf.promise(1, 100)
    assert buf.peek_ripe() is None  # R' 100 is not past 100
    buf.promise(1, 101)
    assert buf.peek_ripe() == sort
    buf.flush(ctx)
    for store in ctx.stores.values():
        store.commit()
    rebuilt = StoredRelease(ctx, RELEASE, sources=2, lateness_ms=0)  # after a restart
    assert (len(rebuilt), rebuilt.low, rebuilt.peek_ripe()) == (1, 101, sort)
    assert rebuilt.pop(ctx, sort) == Held(b"k", b"v", 3)
    assert len(rebuilt) == 0


def test_a_late_identify_on_a_shared_device_is_the_reference_on_one_and_three_partitions() -> None:
    """Issue 14's counterexample on the real tasks: e005-e008 (sent to the form's email
    lead before the late identify e003 merged it into user-0) used to be forwarded through
    the redirect and applied on arrival: after e009 on one partition, after e010 on three."""
    events = _shared_device_journey()
    for partitions in (1, 3):
        reference = encoded(
            InProcess(POLICY, partitions, lateness_ms=120_000, model=MODEL).run(events)
        )
        for schedule, aborts in (([], 0), ([7, 3, 11, 5, 2] * 60, 2)):
            got = run_engine(events, partitions, 120_000, iter(schedule), aborts)
            assert got == reference, partitions
        causes = [CODEC.decode(v) for v in got["user-0"]]
        order = [d.cause_event_id for d in causes if isinstance(d, LeadScored)]
        assert [c for c in order if c.startswith("e0")] == [
            "e003", "e005", "e006", "e007", "e008", "e009", "e010"
        ]  # fmt: skip


def notices_last(derived: dict[str, list[bytes]]) -> dict[str, list[bytes]]:
    """Per lead, the derived events with redirect notices last, sorted.

    A redirect's notice (``LeadMerged`` reason ``redirect``) is emitted on the merged id's
    partition, not the survivor's: on several partitions its place among the survivor's
    own derived events is not an order (tests/unit/demo/test_inprocess.py, ``_owners_masked``).
    """
    out: dict[str, list[bytes]] = {}
    for lead, values in derived.items():
        notices = [
            v for v in values
            if isinstance(obj := CODEC.decode(v), LeadMerged) and obj.reason == "redirect"
        ]  # fmt: skip
        out[lead] = [v for v in values if v not in notices] + sorted(notices)
    return out


SCHEDULES = (([], 0), ([7, 3, 11, 5, 2] * 80, 2), ([1] * 300, 0), ([2, 0, 5] * 100, 3))


def test_records_another_device_sent_to_a_merged_lead_are_the_reference_on_the_engine() -> None:
    """The forward frontier on the engine's tasks (docs/architecture.md, "Identity merges"):
    events a redirect forwards keep their release key and wait at the survivor's partition
    behind every partition's forward promises, so user-0 gets the phone's e002-e004 before
    the laptop's e006, whatever the schedule, batch boundaries and aborted batches; also
    with lead tasks that share a process and hand their promises over in memory (in one
    process, or three partitions in two): a promise handed over never overtakes a forward
    its target has not read (session 20's prototype did, and failed here)."""
    events = _second_device_journey()
    for partitions, lead_processes in ((1, None), (3, None), (1, 1), (3, 1), (3, 2)):
        reference = notices_last(
            encoded(InProcess(POLICY, partitions, lateness_ms=120_000, model=MODEL).run(events))
        )
        for schedule, aborts in SCHEDULES:
            got = run_engine(events, partitions, 120_000, iter(schedule), aborts, lead_processes)
            assert notices_last(got) == reference, (partitions, schedule[:5], aborts)


def test_a_transfer_that_chases_a_chain_of_merges_is_the_reference_on_the_engine() -> None:
    """Chains on the engine's tasks: the survivor's request that finds a redirect is
    forwarded in its place (``forward_requests``), and the transfer, forwarded along the
    same redirects, waits for it: absorbed at its merge, as in the reference."""
    events = _chain_journey()
    for partitions in (1, 2, 3):
        reference = notices_last(encoded(InProcess(POLICY, partitions, model=MODEL).run(events)))
        for schedule, aborts in SCHEDULES:
            for lead_processes in (None, 1, 2):
                got = run_engine(events, partitions, 0, iter(schedule), aborts, lead_processes)
                assert notices_last(got) == reference, (partitions, schedule[:5], aborts)


@settings(max_examples=60, deadline=None)
@given(
    data=st.booleans().flatmap(lambda crowded: journeys(crowded=crowded, other_keys=True)),
    partitions=st.integers(1, 4),
    schedule=st.lists(st.integers(0, 30), max_size=300),
    aborts=st.integers(0, 3),
    lead_processes=st.sampled_from([None, 1, 2]),
)
def test_records_from_other_keys_on_the_engine_give_the_reference_outputs(
    data: tuple[list[Event], int],
    partitions: int,
    schedule: list[int],
    aborts: int,
    lead_processes: int | None,
) -> None:
    """Second devices, lead-keyed events for an aliased id, devices identified as it, chains:
    any schedule of the engine's tasks (batches, aborts, lead tasks alone or sharing a
    process and its in-memory promises) gives the reference's outputs."""
    events, lateness = data
    reference = InProcess(POLICY, partitions, lateness_ms=lateness, model=MODEL).run(events)
    got = run_engine(events, partitions, lateness, iter(schedule), aborts, lead_processes)
    assert notices_last(got) == notices_last(encoded(reference))


def test_a_worker_hands_its_own_promises_over_in_memory_unless_a_forward_is_unread() -> None:
    """Issue 17's lead round: a record whose identity markers arrived is released in the
    same batch when its worker owns every by-lead partition (``frontier.hand_over``), not a
    forward-marker round later; but never while its partition has not read every forward
    the promising partition sent it."""
    deps = LeadDeps(CODEC, POLICY, lambda _ws: MODEL, None, 1, 0, forwards=2,
                    partition_of=sim_partition)  # fmt: skip
    lead = next(f"L{i}" for i in range(99) if partition_of(lead_key("ws", f"L{i}"), 2) == 0)
    event = Event("e1", Kind.VISIT, "ws", T0, T0 + 5, lead_id=lead)

    def batch(unread: int) -> tuple[list[Sent], dict[str, int]]:
        fronts = FrontMarkers(2)
        ctxs = [Ctx(0), Ctx(1)]
        tasks = [LeadTask(deps, ctx, fronts=fronts) for ctx in ctxs]
        value, headers = control.marker_record(control.IDENTITY_MARKER, {0: T0 + 10})
        for ctx, task in zip(ctxs, tasks, strict=True):
            task.on_record(ctx, Record(EVENTS_BY_LEAD.name, ctx.partition, 0, None, value,
                                       dict(headers)))  # fmt: skip
        received = {control.RECEIVED: str(T0 + 5).encode()}
        tasks[0].on_record(ctxs[0], Record(EVENTS_BY_LEAD.name, 0, 1, lead_key("ws", lead).encode(),
                                           CODEC.encode(event), received))  # fmt: skip
        assert not ctxs[0].dead
        assert not [s for s in ctxs[0].sent if s[0] != EVENTS_BY_LEAD.name]  # waits for promises
        tasks[1].release.sent[0] = unread  # forwards partition 1 sent to 0, not read by 0
        before = Counter(deps.counts)
        touched = settle(deps, {c.partition: (t, c) for c, t in zip(ctxs, tasks, strict=True)})
        assert touched == [0, 1]  # views moved on both: their stores are written
        return ctxs[0].sent, dict(Counter(deps.counts) - before)

    sent, counts = batch(unread=0)
    assert [CODEC.decode(s[2]).cause_event_id for s in sent if s[0] == LEAD_SCORED.name] == ["e1"]
    assert counts["fronts_in_memory"] == 4  # each partition took both partitions' promises
    sent, counts = batch(unread=1)
    assert not [s for s in sent if s[0] != EVENTS_BY_LEAD.name]  # still waiting
    assert counts["fronts_waiting_for_forward"] == 1  # 0 did not take 1's: a forward is unread
    assert counts["fronts_in_memory"] == 3


def test_a_forward_goes_where_its_key_hashes_and_carries_its_count() -> None:
    """The count names the partition a forward lands on: its key's, named explicitly."""
    deps = LeadDeps(CODEC, POLICY, lambda _ws: MODEL, None, 1, 0, forwards=3)
    ctx = Ctx(1)
    task = LeadTask(deps, ctx)
    for n in (1, 2):
        item = Direct(lead_key("ws", "L9"), Event(f"e{n}", Kind.VISIT, "ws", T0, T0, lead_id="L9"),
                      hops=1)  # fmt: skip
        task._send_direct(ctx, item, sort_bytes(release_key(T0, T0, f"e{n}")))
    target = worker_partition(lead_key("ws", "L9").encode(), 3)
    assert [(s[4], s[3][frontier.FORWARD_FROM]) for s in ctx.sent] == [
        (target, b"1:1"), (target, b"1:2")
    ]  # fmt: skip
    assert task.release.sent == {target: 2}


# -- the model switch in the log ---------------------------------------------------------


@st.composite
def switch_schedules(draw: st.DrawFn) -> list[tuple[str, int]]:
    """What a by-lead partition hears, in an arbitrary interleaving that keeps the
    promises: records (``at``), the inbound source's promises, model markers (``S``, never
    below the trainer's last promise) and the trainer's promises; and where its task is
    rebuilt from the store (a new task after a crash or an aborted batch)."""
    out: list[tuple[str, int]] = []
    low, promised = 0, 0  # the inbound source's and the trainer's last promises
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(
            st.sampled_from(["record", "record", "inbound", "switch", "trainer", "rebuild"])
        )
        if kind == "record":
            out.append(("record", low + draw(st.integers(0, 50))))
        elif kind == "inbound":
            low += draw(st.integers(0, 30))
            out.append(("inbound", low))
        elif kind == "switch":
            out.append(("switch", promised + draw(st.integers(0, 40))))
        elif kind == "trainer":
            promised += draw(st.integers(0, 30))
            out.append(("trainer", promised))
        else:
            out.append(("rebuild", 0))
    out += [("inbound", END), ("trainer", END)]
    return out


@settings(max_examples=300, deadline=None)
@given(heard=switch_schedules(), records=st.sampled_from([0, 1, 3]))
def test_a_record_is_scored_with_every_switch_at_or_below_its_gate_and_no_later(
    heard: list[tuple[str, int]], records: int
) -> None:
    """The switch rule: whatever the interleaving and rebuilds, right before a record is
    released exactly the model markers whose ``S`` is at or below its gate (the position of
    the ``records``-th record released before it; its own for 0) have been applied, so it
    is scored with the newest snapshot whose ``S <= gate`` (``ModelSwitches``)."""
    ctx = Ctx(0)

    def build() -> StoredRelease:
        return StoredRelease(
            ctx, RELEASE, sources=1, lateness_ms=0, trainers=1, switch_records=records
        )

    buf = build()
    applied: list[int] = []  # switch positions applied so far, in order
    seen: list[tuple[int, list[int]]] = []  # per released record: (at, switches before it)
    for n, (kind, value) in enumerate(heard):
        if kind == "record":
            buf.add(ctx, sort_bytes(release_key(value, value, f"e{n}")), Held(b"k", b"r", n))
        elif kind == "switch":
            buf.add_switch(ctx, release.switch_sort(value, "ws", n), Held(b"ws", b"s", n))
        elif kind == "inbound":
            buf.promise(0, value)
        elif kind == "trainer":
            buf.promise_models(0, value)
        else:
            buf.flush(ctx)
            buf = build()
        while (sort := buf.peek_ripe()) is not None:
            while (switch := buf.due_switch(sort)) is not None:
                buf.pop_switch(ctx, switch)
                applied.append(at_of(switch))
            buf.pop(ctx, sort)
            seen.append((at_of(sort), list(applied)))
    assert len(buf) == 0
    assert [at for at, _ in seen] == sorted(at for at, _ in seen)
    every = sorted(value for kind, value in heard if kind == "switch")
    for i, (at, before) in enumerate(seen):
        gate = switch_gate([a for a, _ in seen[:i]], at, records)
        assert sorted(before) == [s for s in every if gate is not None and s <= gate]
        switches = ModelSwitches([Switch(s, "ws", v) for v, s in enumerate(every)])
        expected = switches.version("ws", gate)
        assert (None if not before else len(before) - 1) == expected


def model_view(snapshot: bytes) -> tuple[object, ...]:
    """What a snapshot holds (its pickle's layout differs after a restore, its content not)."""
    model = ScoreModel.restore(snapshot, b"k")
    learnt = vars(model.estimator)
    weights = sorted(learnt.get("weights", {}).items())
    return ScoreModel.peek(snapshot), learnt.get("bias"), weights, model.health().as_log()


def sim_events(seed: int) -> list[Event]:
    """A small simulated workspace (recycles, hand-offs, horizon negatives)."""
    sim = Simulation(SimConfig(people=150, days=45, seed=seed))
    return sorted((message_to_event(m, "ws") for m in sim.messages()), key=lambda e: e.received_at)


SWITCHING = dataclasses.replace(POLICY, model=dataclasses.replace(POLICY.model, snapshot_every=2))


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 3),
    partitions=st.integers(2, 4),
    trainers=st.integers(1, 2),
    delay=st.sampled_from([1, 60_000, 3_600_000, 3 * 86_400_000]),
    records=st.sampled_from([0, 2, 5]),
    schedule=st.lists(st.integers(0, 30), min_size=1, max_size=50),
    aborts=st.integers(0, 3),
)
def test_the_model_a_record_is_scored_with_is_a_function_of_the_log(
    seed: int,
    partitions: int,
    trainers: int,
    delay: int,
    records: int,
    schedule: list[int],
    aborts: int,
) -> None:
    """Identity, lead and trainer tasks under any schedule (which task moves, where
    batches end, aborted batches rebuilt from their stores): the same scores (model
    version, score, top features), training examples and snapshot bytes as in the
    schedule that runs everything in order."""
    events = sim_events(seed)
    run = functools.partial(
        run_stages,
        events,
        partitions,
        0,
        trainers=trainers,
        delay=delay,
        switch_records=records,
        policy=SWITCHING,
    )
    reference = run(iter([]), 0)
    got = run(itertools.cycle(schedule or [0]), aborts)
    assert reference.snapshots  # snapshots were taken, and switched to, mid-run
    assert reference.switches == partitions
    assert [model_view(s) for s in got.snapshots] == [model_view(s) for s in reference.snapshots]
    assert got.derived == reference.derived
