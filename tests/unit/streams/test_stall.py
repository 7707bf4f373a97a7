"""The stall watch: re-seek first, exit only if that did not help, never while moving."""

from __future__ import annotations

import doctest
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from leadflow.streams import stall
from leadflow.streams.engine import loop
from leadflow.streams.engine.loop import Engine
from leadflow.streams.settings import load_settings
from leadflow.streams.stall import OpenTailWatch, StallWatch, Verdict, behind, skipped_to
from tests.unit.recorded_log import Recorded


def test_docstring_examples_run() -> None:
    assert doctest.testmod(stall, raise_on_error=True).failed == 0


# (seconds since the previous look, lag, processed-so-far increment)
looks = st.lists(
    st.tuples(st.floats(0, 40), st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=60
)


@given(looks)
def test_exit_only_follows_a_reseek_and_progress_resets_the_watch(seq: list) -> None:
    watch = StallWatch(after=30.0)
    now, processed, reseeked = 0.0, 0, False
    for gap, lag, step in seq:
        now += gap
        processed += step
        verdict = watch.observe(now, lag=lag, processed=processed)
        if lag == 0 or step > 0:
            assert verdict is Verdict.OK
            reseeked = False
        elif verdict is Verdict.RESEEK:
            reseeked = True
        elif verdict is Verdict.EXIT:
            assert reseeked, "exited without trying a re-seek since the last progress"


def test_a_stuck_worker_reseeks_then_exits_and_a_moving_one_never_does() -> None:
    stuck = StallWatch(after=30.0)
    verdicts = [stuck.observe(t, lag=7, processed=3) for t in (0, 10, 31, 40, 62)]
    assert verdicts == [Verdict.OK, Verdict.OK, Verdict.RESEEK, Verdict.OK, Verdict.EXIT]

    moving = StallWatch(after=30.0)
    assert {moving.observe(t * 20.0, lag=7, processed=t) for t in range(20)} == {Verdict.OK}


def test_progress_after_a_reseek_clears_it() -> None:
    watch = StallWatch(after=30.0)
    watch.observe(0, lag=2, processed=1)
    assert watch.observe(31, lag=2, processed=1) is Verdict.RESEEK
    assert watch.observe(35, lag=1, processed=2) is Verdict.OK
    assert watch.observe(70, lag=1, processed=2) is Verdict.RESEEK


# -- where a partition stands: the consumer's position passes what read_committed skips --


@given(
    st.integers(0, 1_000),
    st.integers(0, 50),
    st.integers(0, 5),
    st.integers(-1001, 1_100),
)
def test_a_partition_at_its_position_owes_nothing_whatever_it_skipped(
    delivered: int, skipped: int, more: int, position_noise: int
) -> None:
    """Committed = last record + 1; the tail past it holds ``skipped`` aborted records or
    markers: a position at the end owes nothing; a position short of it owes the rest."""
    committed, end = delivered, delivered + skipped
    assert behind(end, committed, end) == 0
    assert behind(end + more, committed, end) == more
    # An unknown position (after a seek) falls back to the committed offset.
    assert behind(end, committed, -1001) == skipped
    # Never negative, never more than end minus committed.
    assert 0 <= behind(end, committed, position_noise) <= skipped


# -- the engine's watch, with fake clients -------------------------------------------------

EVENTS_TP = ("leadflow.events.by-lead", 0)
OTHER_TP = ("leadflow.events.by-lead", 1)


@dataclass
class FakeConsumer:
    positions: dict[tuple[str, int], int]
    seeks: list[tuple[str, int, int]] = field(default_factory=list)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), -1001)
            )
            for tp in partitions
        ]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, -1001

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))
        self.positions[(tp.topic, tp.partition)] = -1001  # unknown until the next delivery

    def consumer_group_metadata(self) -> object:
        return "group-metadata"


@dataclass
class FakeProducer:
    committed: list[dict[tuple[str, int], int]] = field(default_factory=list)
    fail: KafkaException | None = None
    aborts: int = 0
    _open: dict[tuple[str, int], int] = field(default_factory=dict)

    def begin_transaction(self) -> None:
        self._open = {}

    def send_offsets_to_transaction(
        self, tps: list[TopicPartition], meta: object, t: float
    ) -> None:
        if self.fail is not None:
            raise self.fail
        self._open = {(tp.topic, tp.partition): tp.offset for tp in tps}

    def commit_transaction(self, timeout: float) -> None:
        self.committed.append(self._open)

    def abort_transaction(self, timeout: float) -> None:
        self.aborts += 1


@dataclass
class FakeEnds:
    ends: dict[tuple[str, int], int | None]
    highs: dict[tuple[str, int], int] = field(default_factory=dict)

    def end(self, tp: tuple[str, int], now: float, max_age: float) -> int | None:
        return self.ends.get(tp)

    def tail(self, tp: tuple[str, int], now: float, max_age: float) -> tuple[int, int] | None:
        end, high = self.ends.get(tp), self.highs.get(tp)
        return None if end is None or high is None else (end, high)

    def unanswered(self) -> dict[tuple[str, int], int]:
        return {tp: 1 for tp, end in self.ends.items() if end is None}


class Exited(Exception):
    pass


def _engine(
    tmp_path: Path,
    committed: dict,
    positions: dict,
    ends: dict,
    consumer: FakeConsumer | None = None,
) -> tuple[Engine, FakeConsumer, FakeProducer]:
    settings = load_settings(data_dir=tmp_path, worker_stall_seconds=30.0, worker_batch_max=5)
    engine = Engine(settings, [], "w-test")
    if consumer is None:
        consumer = FakeConsumer(dict(positions))
    producer = FakeProducer()
    engine._consumer, engine._producer = consumer, producer  # type: ignore[assignment]
    engine.ends = FakeEnds(ends)  # type: ignore[assignment]
    engine.positions.update(committed)
    engine.watches.update({tp: StallWatch(after=30.0) for tp in committed})
    engine.tasks.update({tp: None for tp in committed})  # type: ignore[misc]
    return engine, consumer, producer


def _look(engine: Engine, times: range, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    exits: list[int] = []

    def exit_(code: int) -> None:
        exits.append(code)
        raise Exited

    monkeypatch.setattr(loop.os, "_exit", exit_)
    for t in times:
        try:
            engine._watch(float(t))
        except Exited:
            break
    return exits


def test_an_aborted_tail_is_committed_past_and_never_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cluster bench's defect: committed 94, then an aborted record and its abort marker
    (end 96). The consumer's position is 96; the worker commits 96 once and stays up."""
    engine, consumer, producer = _engine(
        tmp_path, {EVENTS_TP: 94}, {EVENTS_TP: 96}, {EVENTS_TP: 96}
    )
    assert _look(engine, range(0, 600, 5), monkeypatch) == []
    assert producer.committed == [{EVENTS_TP: 96}]  # one offsets-only transaction, then none
    assert engine.positions[EVENTS_TP] == 96
    assert consumer.seeks == []
    assert engine.counters.skip_commits == 1


def test_a_partition_that_fetches_nothing_is_reseeked_then_exits_while_another_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, consumer, _ = _engine(
        tmp_path,
        {EVENTS_TP: 10, OTHER_TP: 0},
        {EVENTS_TP: 10, OTHER_TP: 0},
        {EVENTS_TP: 15, OTHER_TP: 0},
    )
    ends = engine.ends.ends  # type: ignore[attr-defined]
    exits: list[int] = []
    for step in range(0, 40):
        # The other partition moves all the time (new records, processed and committed).
        ends[OTHER_TP] = consumer.positions[OTHER_TP] = engine.positions[OTHER_TP] = step * 3
        exits = _look(engine, range(step * 5, step * 5 + 1), monkeypatch)
        if exits:
            break
    assert exits == [70]
    assert consumer.seeks == [("leadflow.events.by-lead", 0, 10)]
    assert 60 <= step * 5 <= 75  # re-seek after 30 s without progress, exit 30 s later


class Delivered:
    """A record of another partition, taken from the client's queue."""

    def error(self) -> None:
        return None


@dataclass
class BacklogConsumer(FakeConsumer):
    """Fills every batch while ``backlog`` lasts (other partitions' records), then nothing."""

    backlog: int = 0

    def poll(self, timeout: float) -> Delivered | None:
        return self.consume(1, timeout)[0] if self.backlog else None

    def consume(self, num_messages: int, timeout: float) -> list[Delivered]:
        taken = min(num_messages, self.backlog)
        self.backlog -= taken
        return [Delivered() for _ in range(taken)]


def test_a_partition_waiting_behind_a_backlog_in_the_client_is_not_a_stall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka delivers what it prefetched in the order it arrived, so a partition's
    records can wait behind other partitions' backlog. Measured (scratch, session 28): a
    worker started on 200,000 inbound events, stall limit 3 s, re-sought every by-lead
    partition (their records queued behind the events) and exited 70 after 19 s. While
    every poll takes a full batch, nothing is judged; once the queue runs dry, it is."""
    consumer = BacklogConsumer({EVENTS_TP: 10}, backlog=5 * 20)
    engine, _, _ = _engine(tmp_path, {EVENTS_TP: 10}, {EVENTS_TP: 10}, {EVENTS_TP: 15}, consumer)
    for now in range(0, 100, 5):  # a full batch between every two looks, 100 s
        assert len(engine._poll()) == 5
        assert _look(engine, range(now, now + 1), monkeypatch) == []
    assert consumer.seeks == []
    assert engine._poll() == []  # the queue ran dry: the partition still has not moved
    assert _look(engine, range(100, 200, 5), monkeypatch) == [70]
    assert consumer.seeks == [("leadflow.events.by-lead", 0, 10)]


def test_a_partition_whose_end_the_broker_does_not_tell_is_not_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, consumer, producer = _engine(
        tmp_path, {EVENTS_TP: 10}, {EVENTS_TP: 10}, {EVENTS_TP: None}
    )
    assert _look(engine, range(0, 600, 5), monkeypatch) == []
    assert consumer.seeks == []
    assert producer.committed == []


def test_a_failed_skip_commit_aborts_rewinds_and_restarts_the_watches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, consumer, producer = _engine(tmp_path, {EVENTS_TP: 4}, {EVENTS_TP: 6}, {EVENTS_TP: 6})
    producer.fail = KafkaException(KafkaError(KafkaError._STATE, "doomed", txn_requires_abort=True))
    engine.contexts[EVENTS_TP] = None  # type: ignore[assignment]
    engine.stages = {EVENTS_TP[0]: _NoStage()}  # type: ignore[dict-item]
    assert _look(engine, range(0, 1), monkeypatch) == []
    assert producer.aborts == 1
    assert producer.committed == []
    assert engine.positions[EVENTS_TP] == 4  # not moved
    assert consumer.seeks == [("leadflow.events.by-lead", 0, 4)]  # rewound, as a failed batch


class _NoStage:
    def task(self, ctx: object) -> None:
        return None


def test_the_dump_shows_committed_position_and_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _, _ = _engine(tmp_path, {EVENTS_TP: 94}, {EVENTS_TP: 96}, {EVENTS_TP: 0})
    recorded = Recorded()
    monkeypatch.setattr(loop, "log", recorded)
    engine.dump()
    ((level, event, fields),) = recorded.lines
    assert (level, event) == ("warning", "worker.dump")
    name = "leadflow.events.by-lead:0"
    # An end of 0 is a real end (not "unknown", -1).
    assert (fields["committed"], fields["position"], fields["end"]) == (
        {name: 94}, {name: 96}, {name: 0},
    )  # fmt: skip


def test_skipped_to_keeps_known_positions_past_the_committed_offset_only() -> None:
    positions = {("t", 0): 12, ("t", 1): 7, ("t", 2): -1001, ("t", 3): 5, ("u", 0): 9}
    committed = {("t", 0): 10, ("t", 1): 7, ("t", 2): 3, ("t", 3): 6}
    # t:1 is at its committed offset, t:2 has no position yet, t:3 is behind (a seek back),
    # u:0 is not owned: only t:0 moved past skipped entries.
    assert skipped_to(positions, committed) == {("t", 0): 12}


@given(looks)
def test_an_open_tail_is_told_once_per_hold_and_only_after_it_held(seq: list) -> None:
    """Looks at one partition: the LSO moves by the third element (0: held), the high
    watermark stays above it by the second (0: nothing open)."""
    watch = OpenTailWatch(after=30.0)
    now, stable, held_since, told = 0.0, 100, None, False
    for gap, open_records, moved in seq:
        now += gap
        stable += moved
        high = stable + open_records
        if not open_records or moved:
            held_since, told = (now if open_records else None), False
        elif held_since is None:
            held_since = now
        due = held_since is not None and not told and now - held_since >= 30.0
        assert watch.observe(now, stable=stable, high=high) is due
        told = told or due


def test_the_worker_logs_an_input_held_by_an_open_transaction_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A by-lead partition whose LSO stays at 608 while records pile up behind it: lag 0
    (no stall), one worker.open_transaction error after the hold, counted."""
    engine, consumer, _ = _engine(tmp_path, {EVENTS_TP: 608}, {EVENTS_TP: 608}, {EVENTS_TP: 608})
    engine.ends.highs[EVENTS_TP] = 640  # type: ignore[attr-defined]
    engine.open_tails[EVENTS_TP] = OpenTailWatch(after=30.0)
    recorded = Recorded()
    monkeypatch.setattr(loop, "log", recorded)
    assert _look(engine, range(0, 120, 5), monkeypatch) == []
    told = [(level, f) for level, event, f in recorded.lines if event == "worker.open_transaction"]
    seen = [(lvl, f["partition"], f["last_stable_offset"], f["high_watermark"]) for lvl, f in told]
    assert seen == [("error", f"{EVENTS_TP[0]}:{EVENTS_TP[1]}", 608, 640)]
    assert told[0][1]["seconds"] == 30
    assert engine.counters.open_transactions == 1
    assert consumer.seeks == []  # not a stall: nothing to re-seek
