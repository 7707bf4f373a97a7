"""The batch loop's transactional calls, against fake clients (no broker).

``send_offsets_to_transaction`` runs while the batch is processed (issue 17 point 3): it
must carry the offsets the batch consumed, end before the commit, and never overlap another
transactional call (abort) when the batch fails.
"""

from __future__ import annotations

import doctest
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from leadflow.streams.control import LEAD_MARKER, RECEIVED, is_control, marker_record
from leadflow.streams.engine import loop
from leadflow.streams.engine.loop import Engine, _Context
from leadflow.streams.engine.stage import Record, Stage, TaskContext, Unavailable
from leadflow.streams.engine.stores import PartitionStore
from leadflow.streams.settings import load_settings
from leadflow.streams.topics import DLQ, EVENTS, EVENTS_BY_LEAD, LEAD_SCORED
from tests.unit.recorded_log import Recorded


@dataclass
class FakeMessage:
    topic_: str
    partition_: int
    offset_: int

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)  # TIMESTAMP_NOT_AVAILABLE

    def error(self) -> None:
        return None


class FakeConsumer:
    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def seek(self, _tp: Any) -> None:
        pass


class FakeProducer:
    """Records every call; a transactional call while another one runs is an error."""

    def __init__(self, send_offsets_delay: float, failures: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.delay = send_offsets_delay
        self.failures = failures  # retriable errors of send_offsets before it succeeds
        self._busy = threading.Lock()
        self.overlaps = 0

    def _txn(self, name: str, arg: Any = None) -> None:
        if not self._busy.acquire(blocking=False):
            self.overlaps += 1
            raise AssertionError(f"{name} while another transactional call runs")
        try:
            self.calls.append((name, arg))
            if name == "send_offsets":
                time.sleep(self.delay)
                if self.failures:
                    self.failures -= 1
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, retriable=True))
                self.calls.append(("send_offsets_done", None))
        finally:
            self._busy.release()

    def begin_transaction(self) -> None:
        self._txn("begin")

    def send_offsets_to_transaction(self, tps: Any, metadata: Any, timeout: float) -> None:
        self._txn("send_offsets", sorted((tp.topic, tp.partition, tp.offset) for tp in tps))

    def commit_transaction(self, timeout: float) -> None:
        self._txn("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._txn("abort")

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.calls.append(("produce", topic))


class SendingTask:
    """Sends one record per input record; raises Unavailable when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        if self.fail:
            raise Unavailable("a topic is out of reach")
        ctx.send(LEAD_SCORED, b"k", b"out")

    def on_batch_end(self, ctx: TaskContext) -> None:
        pass


def engine(producer: FakeProducer, fail: bool = False) -> Engine:
    stage = Stage("test", EVENTS, (), lambda ctx: SendingTask(fail))
    eng = Engine(load_settings(), [stage], "w" * 32)
    eng._producer = producer  # type: ignore[assignment]
    eng._consumer = FakeConsumer()  # type: ignore[assignment]
    for partition in (0, 1):
        tp = (EVENTS.name, partition)
        eng.contexts[tp] = _Context(eng, stage, partition)
        eng.tasks[tp] = SendingTask(fail)
        eng.positions[tp] = 0
    return eng


BATCH = [FakeMessage(EVENTS.name, 0, 5), FakeMessage(EVENTS.name, 1, 9),
         FakeMessage(EVENTS.name, 0, 6), FakeMessage(EVENTS.name, 7, 1)]  # fmt: skip


@pytest.mark.parametrize("failures", [0, 2])
def test_offsets_go_with_the_batch_and_end_before_the_commit(failures: int) -> None:
    producer = FakeProducer(send_offsets_delay=0.05, failures=failures)
    eng = engine(producer)
    eng._process(BATCH)
    names = [name for name, _ in producer.calls]
    sent = [arg for name, arg in producer.calls if name == "send_offsets"]
    # Partition 7 is not owned (revoked since the fetch): neither processed nor committed.
    assert sent == [[(EVENTS.name, 0, 7), (EVENTS.name, 1, 10)]] * (failures + 1)
    assert names.index("send_offsets_done") < names.index("commit")
    assert names.count("produce") == 3
    assert names[-1] == "commit"
    assert producer.overlaps == 0
    assert eng.positions == {(EVENTS.name, 0): 7, (EVENTS.name, 1): 10}
    assert eng.counters.batches == 1
    assert eng.counters.retries == failures


def test_a_failed_batch_waits_for_the_offsets_before_it_aborts() -> None:
    producer = FakeProducer(send_offsets_delay=0.1)
    eng = engine(producer, fail=True)
    eng._unavailable_delay = 0.0
    eng._process(BATCH)
    names = [name for name, _ in producer.calls]
    assert names == ["begin", "send_offsets", "send_offsets_done", "abort"]
    assert producer.overlaps == 0
    assert eng.positions == {(EVENTS.name, 0): 0, (EVENTS.name, 1): 0}  # rewound, not moved
    assert eng.counters.batches == 0
    assert eng.counters.aborts == 1


def transactional(producer: FakeProducer) -> list[str]:
    return [name for name, _ in producer.calls if name != "produce"]


class RefusingProducer(FakeProducer):
    """A producer whose transaction failed: every produce is refused (librdkafka's _STATE)."""

    def produce(self, topic: str, **kwargs: Any) -> None:
        raise KafkaException(KafkaError(KafkaError._STATE, "Unable to produce message"))


@pytest.mark.parametrize(
    ("make", "offsets_call_s"),
    [(RefusingProducer, 5.0), (FakeProducer, 0.3)],
    ids=["the-batch-failed", "past-its-timeout"],
)
def test_an_offsets_call_that_stays_blocked_gives_its_producer_up(
    monkeypatch: pytest.MonkeyPatch, make: type[FakeProducer], offsets_call_s: float
) -> None:
    """Found in session 15: after a broker restart the worker's transaction failed
    (OUT_OF_ORDER_SEQUENCE_NUMBER) while librdkafka's send_offsets_to_transaction stayed
    blocked for 30 s; the batch waited for it, whether it had failed locally (a refused
    produce) or not, and nothing was produced for 42 s after the broker was back. Now the
    call is left to its producer ABANDON_OFFSETS_CALL_S after the batch failed, or after the
    call's own timeout (OFFSETS_CALL_S, which librdkafka did not keep), without another
    transactional call on that producer; a new one fences it and the batch is redone."""
    monkeypatch.setattr(loop, "OFFSETS_CALL_S", offsets_call_s)
    monkeypatch.setattr(loop, "ABANDON_OFFSETS_CALL_S", 0.1)
    blocked = make(send_offsets_delay=3.0)
    eng = engine(blocked)
    fresh = FakeProducer(send_offsets_delay=0.0)
    monkeypatch.setattr(eng, "_new_producer", lambda: setattr(eng, "_producer", fresh))
    eng._process(BATCH)
    # Returned while the call still ran, and made no other call on its producer.
    assert transactional(blocked) == ["begin", "send_offsets"]
    assert blocked.overlaps == 0
    assert eng.producer is fresh
    assert (eng.counters.abandoned, eng.counters.rebuilds, eng.counters.aborts) == (1, 1, 0)
    assert eng.positions == {(EVENTS.name, 0): 0, (EVENTS.name, 1): 0}  # rewound, not moved
    eng._process(BATCH)  # the batch again, on the new producer
    assert transactional(fresh)[-1] == "commit"
    assert eng.positions == {(EVENTS.name, 0): 7, (EVENTS.name, 1): 10}


def test_an_abandoned_offsets_call_stops_retrying_on_its_given_up_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Session 17's audit: an abandoned call's thread went on retrying on the producer the
    worker had given up for as long as the broker was away, its worker.retry lines (and
    retries counter) reading as the current batch's. It now stops at its next retriable
    error and says so once."""
    monkeypatch.setattr(loop, "OFFSETS_CALL_S", 0.1)
    monkeypatch.setattr(loop, "ABANDON_OFFSETS_CALL_S", 0.05)
    recorded = Recorded()
    monkeypatch.setattr(loop, "log", recorded)
    calls: list[loop._Background] = []

    class Kept(loop._Background):
        def __init__(self, call: Callable[[], object]) -> None:
            super().__init__(call)
            calls.append(self)

    monkeypatch.setattr(loop, "_Background", Kept)
    blocked = FakeProducer(send_offsets_delay=0.5, failures=10)  # the broker stays away
    eng = engine(blocked)
    fresh = FakeProducer(send_offsets_delay=0.0)
    monkeypatch.setattr(eng, "_new_producer", lambda: setattr(eng, "_producer", fresh))
    eng._process(BATCH)
    assert eng.counters.abandoned == 1
    [call] = calls
    assert call.settle(3.0)  # it returned with a retriable error and did not retry
    assert transactional(blocked) == ["begin", "send_offsets"]
    assert eng.counters.retries == 0
    warnings = recorded.events("warning")
    assert [event for event, _ in warnings] == [
        "worker.offsets_call_abandoned",
        "worker.abandoned_call_stopped",
    ]
    assert warnings[1][1]["call"] == "send_offsets_to_transaction"


def test_a_failed_batch_with_a_prompt_offsets_call_aborts_on_the_same_producer() -> None:
    producer = RefusingProducer(send_offsets_delay=0.05)
    eng = engine(producer)
    eng._process(BATCH)
    assert [name for name, _ in producer.calls] == [
        "begin", "send_offsets", "send_offsets_done", "abort"
    ]  # fmt: skip
    assert (eng.counters.abandoned, eng.counters.rebuilds, eng.counters.aborts) == (0, 0, 1)


# -- held transactions: a batch of store writes only rides in the next batch's transaction --


class MixedTask:
    """Per record, by its value: ``store`` writes a store entry, ``send`` sends, ``fail``
    raises Unavailable."""

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        if record.value == b"fail":
            raise Unavailable("a topic is out of reach")
        if record.value == b"send":
            ctx.send(LEAD_SCORED, b"k", b"out")
        else:
            ctx.put("s", b"w%d" % record.offset, b"watermark")

    def on_batch_end(self, ctx: TaskContext) -> None:
        pass


@dataclass
class ValueMessage(FakeMessage):
    value_: bytes = b"store"

    def value(self) -> bytes:
        return self.value_


def held_engine(producer: FakeProducer, hold_ms: float = 60_000.0) -> Engine:
    stage = Stage("test", EVENTS, ("s",), lambda ctx: MixedTask())
    settings = load_settings().model_copy(update={"worker_hold_ms": hold_ms})
    eng = Engine(settings, [stage], "w" * 32)
    eng._producer = producer  # type: ignore[assignment]
    eng._consumer = FakeConsumer()  # type: ignore[assignment]
    for partition in (0, 1):
        tp = (EVENTS.name, partition)
        eng.stores._stores[("s", partition)] = PartitionStore()
        eng.contexts[tp] = _Context(eng, stage, partition)
        eng.tasks[tp] = MixedTask()
        eng.positions[tp] = 0
    return eng


def changelog_writes(producer: FakeProducer) -> int:
    return sum(1 for name, topic in producer.calls if name == "produce" and "changelog" in topic)


def test_a_store_only_batch_rides_in_the_next_batch_transaction() -> None:
    producer = FakeProducer(send_offsets_delay=0.02)
    eng = held_engine(producer)
    eng._process([ValueMessage(EVENTS.name, 0, 5), ValueMessage(EVENTS.name, 1, 9)])
    # Held: offsets sent (in the background), nothing produced, nothing committed.
    assert "commit" not in [name for name, _ in producer.calls]
    assert changelog_writes(producer) == 0
    assert eng.positions == {(EVENTS.name, 0): 0, (EVENTS.name, 1): 0}
    assert eng.stores.store("s", 0).get(b"w5") == b"watermark"  # seen in the transaction
    eng._process([ValueMessage(EVENTS.name, 0, 6, b"send")])
    names = [name for name, _ in producer.calls]
    assert names.count("begin") == 1
    assert names.count("commit") == 1
    assert names[-1] == "commit"
    sent = [arg for name, arg in producer.calls if name == "send_offsets"]
    assert sent == [[(EVENTS.name, 0, 6), (EVENTS.name, 1, 10)], [(EVENTS.name, 0, 7)]]
    assert names.index("send_offsets_done") < names.index("send_offsets", 2)
    assert changelog_writes(producer) == 2  # both held writes, produced once, at the commit
    assert producer.overlaps == 0
    assert eng.positions == {(EVENTS.name, 0): 7, (EVENTS.name, 1): 10}
    assert eng.stores.store("s", 1).data == {b"w9": b"watermark"}
    assert (eng.counters.batches, eng.counters.held, eng.counters.commits) == (2, 1, 1)


def test_a_held_transaction_commits_when_the_worker_is_idle() -> None:
    producer = FakeProducer(send_offsets_delay=0.02)
    eng = held_engine(producer)
    eng._process([ValueMessage(EVENTS.name, 0, 5)])
    eng._process([ValueMessage(EVENTS.name, 1, 3)])  # store-only again: still held
    assert "commit" not in [name for name, _ in producer.calls]
    eng._flush()
    names = [name for name, _ in producer.calls]
    assert names.count("begin") == 1
    assert names[-1] == "commit"
    assert changelog_writes(producer) == 2
    assert producer.overlaps == 0
    assert eng.positions == {(EVENTS.name, 0): 6, (EVENTS.name, 1): 4}
    eng._flush()  # nothing open: nothing to do
    assert [name for name, _ in producer.calls].count("commit") == 1


def test_a_transaction_open_longer_than_the_hold_commits() -> None:
    producer = FakeProducer(send_offsets_delay=0.0)
    eng = held_engine(producer, hold_ms=0.0)
    eng._process([ValueMessage(EVENTS.name, 0, 5)])
    assert [name for name, _ in producer.calls][-1] == "commit"
    assert eng.positions[(EVENTS.name, 0)] == 6
    assert eng.counters.held == 0


def test_a_failed_batch_drops_the_held_batch_too_and_rewinds() -> None:
    producer = FakeProducer(send_offsets_delay=0.02)
    eng = held_engine(producer)
    eng._unavailable_delay = 0.0
    eng._process([ValueMessage(EVENTS.name, 0, 5)])
    eng._process([ValueMessage(EVENTS.name, 1, 9, b"fail")])
    names = [name for name, _ in producer.calls]
    assert names[-1] == "abort"
    assert "commit" not in names
    assert producer.overlaps == 0
    assert eng.positions == {(EVENTS.name, 0): 0, (EVENTS.name, 1): 0}
    assert eng.stores.store("s", 0).get(b"w5") is None  # the held write went with it
    assert eng._open is None
    eng._process([ValueMessage(EVENTS.name, 0, 5, b"send")])  # a fresh transaction
    assert [name for name, _ in producer.calls].count("begin") == 2


def test_a_bug_mid_batch_leaves_nothing_to_commit() -> None:
    class Buggy(MixedTask):
        def on_record(self, ctx: TaskContext, record: Record) -> None:
            if record.value == b"bug":
                raise RuntimeError("a bug")
            super().on_record(ctx, record)

    producer = FakeProducer(send_offsets_delay=0.0)
    eng = held_engine(producer)
    eng.tasks[(EVENTS.name, 0)] = Buggy()
    eng._process([ValueMessage(EVENTS.name, 0, 5)])
    with pytest.raises(RuntimeError):
        eng._process([ValueMessage(EVENTS.name, 0, 6, b"bug")])
    eng._flush()  # what a revoke during the close would do
    assert "commit" not in [name for name, _ in producer.calls]


class PromiseTask:
    """Per record, by its value: ``lead`` / ``trainer`` / ``identity`` sends that stage's
    watermark marker, ``send`` a data record."""

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        if record.value == b"send":
            ctx.send(LEAD_SCORED, b"k", b"out")
            return
        value, headers = marker_record(record.value.decode(), {record.partition: record.offset})
        ctx.send(EVENTS_BY_LEAD, None, value, dict(headers), partition=0)

    def on_batch_end(self, ctx: TaskContext) -> None:
        pass


def promise_engine(producer: FakeProducer) -> Engine:
    eng = held_engine(producer)
    for tp in list(eng.tasks):
        eng.tasks[tp] = PromiseTask()
    return eng


def test_a_batch_of_promise_markers_rides_with_the_next_batch() -> None:
    producer = FakeProducer(send_offsets_delay=0.0)
    eng = promise_engine(producer)
    eng._process(
        [ValueMessage(EVENTS.name, 0, 5, b"lead"), ValueMessage(EVENTS.name, 1, 9, b"trainer")]
    )
    names = [name for name, _ in producer.calls]
    assert names.count("produce") == 2  # in the open transaction, not yet readable
    assert "commit" not in names
    eng._process([ValueMessage(EVENTS.name, 0, 6, b"send")])
    names = [name for name, _ in producer.calls]
    assert (names.count("begin"), names.count("commit"), names[-1]) == (1, 1, "commit")
    assert eng.positions == {(EVENTS.name, 0): 7, (EVENTS.name, 1): 10}
    assert (eng.counters.held, eng.counters.commits) == (1, 1)


def test_identity_markers_are_never_held() -> None:
    producer = FakeProducer(send_offsets_delay=0.0)
    eng = promise_engine(producer)
    eng._process([ValueMessage(EVENTS.name, 0, 5, b"identity")])
    assert [name for name, _ in producer.calls][-1] == "commit"
    assert eng.counters.held == 0


def test_held_promises_commit_when_the_worker_is_idle() -> None:
    producer = FakeProducer(send_offsets_delay=0.0)
    eng = promise_engine(producer)
    eng._process([ValueMessage(EVENTS.name, 0, 5, b"trainer")])
    eng._flush()
    names = [name for name, _ in producer.calls]
    assert (names.count("commit"), names[-1]) == (1, "commit")
    assert eng.positions[(EVENTS.name, 0)] == 6


def test_docstring_examples_run() -> None:
    result = doctest.testmod(loop)
    assert result.attempted > 0
    assert result.failed == 0


class RefusingConsumer(FakeConsumer):
    """Refuses every seek; reports ``at`` as every partition's position."""

    def __init__(self, at: int) -> None:
        self.at = at

    def seek(self, _tp: Any) -> None:
        raise KafkaException(KafkaError(KafkaError._STATE))

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.at) for tp in tps]


@pytest.mark.parametrize(("at", "exits"), [(-1001, False), (0, False), (7, True)])
def test_a_refused_rewind_past_the_committed_offset_ends_the_process(
    monkeypatch: pytest.MonkeyPatch, at: int, exits: bool
) -> None:
    """After an undone batch every partition goes back to its committed offset (0 here).

    A refused seek used to be a warning, whatever the position: one past the committed
    offset would have let the next batch skip the undone records and commit past them.
    Not yet fetching (-1001) or already there (0) is harmless.
    """
    eng = engine(FakeProducer(0.0))
    eng._consumer = RefusingConsumer(at)  # type: ignore[assignment]
    exits_with: list[int] = []
    monkeypatch.setattr(loop.os, "_exit", exits_with.append)
    eng._rewind()
    assert exits_with == ([loop.EXIT_STALLED] * 2 if exits else [])


def test_worker_progress_counts_the_partitions_whose_end_goes_unanswered() -> None:
    eng = engine(FakeProducer(0.0))
    assert eng.counts()["ends_unanswered"] == 0
    eng.ends._unanswered = {(EVENTS.name, 0): 3, (EVENTS.name, 1): 0}
    assert eng.counts()["ends_unanswered"] == 1


class BurningTask(SendingTask):
    """Sends like SendingTask after burning ``cpu_s`` of this thread's CPU per record."""

    def __init__(self, cpu_s: float) -> None:
        super().__init__()
        self.cpu_s = cpu_s

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        until = time.thread_time() + self.cpu_s
        while time.thread_time() < until:
            pass
        super().on_record(ctx, record)


def test_a_batch_counts_its_wall_time_and_its_cpu_apart() -> None:
    # 4 records x 10 ms of CPU, then an offsets call that sleeps 80 ms (no CPU): the batch
    # took at least both, and its CPU is the burning's, not the wait's.
    eng = engine(FakeProducer(send_offsets_delay=0.08))
    for tp in list(eng.tasks):
        eng.tasks[tp] = BurningTask(0.01)
    eng._process(BATCH[:2] + BATCH[:2])
    counts = eng.counts()
    assert counts["batch_cpu_ms"] >= 40
    # The offsets call ran beside the burning: the batch waited for what was left of it.
    assert counts["batch_ms"] >= 80
    ending = counts["send_offsets_ms"] + counts["commit_ms"]
    assert counts["batch_ms"] >= counts["batch_cpu_ms"] + ending - 2  # each rounded to the ms
    assert counts["poll_ms"] == 0


class SleepingConsumer(FakeConsumer):
    """A consumer with nothing to give: each poll waits its whole timeout."""

    def poll(self, timeout: float) -> None:
        time.sleep(timeout)


def test_time_waiting_for_records_counts_as_poll_time() -> None:
    settings = load_settings().model_copy(update={"worker_poll_seconds": 0.05})
    eng = Engine(settings, [], "w" * 32)
    eng._consumer = SleepingConsumer()  # type: ignore[assignment]
    assert eng._poll() == []
    assert eng._poll() == []
    assert eng.counts()["poll_ms"] >= 100
    assert eng.counts()["batch_ms"] == 0


class ProduceRecordingProducer(FakeProducer):
    """Keeps what each produce call sent."""

    def __init__(self) -> None:
        super().__init__(send_offsets_delay=0.0)
        self.produced: list[dict[str, Any]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        super().produce(topic, **kwargs)
        self.produced.append({"topic": topic, **kwargs})


def test_a_dead_letter_keeps_the_record_s_own_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker's letters carried the dead-letter headers only, though the docstring said
    # "unchanged": a by-lead record lost its R' and hops, a producer's trace header was gone
    # for good (dlq replay sends back the letter's non-leadflow headers), unlike the
    # projector's letters, which keep them.
    producer = ProduceRecordingProducer()
    eng = engine(producer)
    recorded = Recorded()
    monkeypatch.setattr(loop, "log", recorded)
    own = {RECEIVED: b"1767225600000", "leadflow.hops": b"1", "traceparent": b"00-ab-01"}
    record = Record(EVENTS_BY_LEAD.name, 3, 41, b"k", b"v", own)
    eng.dead_letter(record, ValueError("bad"))
    [letter] = producer.produced
    assert (letter["topic"], letter["key"], letter["value"]) == (DLQ.name, b"k", b"v")
    assert dict(letter["headers"]) == {
        **own,
        "leadflow.reason": b"ValueError: bad",
        "leadflow.source.topic": EVENTS_BY_LEAD.name.encode(),
        "leadflow.source.partition": b"3",
        "leadflow.source.offset": b"41",
    }
    assert [fields.get("earlier_reason") for _, fields in recorded.events("warning")] == [None]


def test_a_record_that_was_a_dead_letter_before_gets_the_new_reason_and_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Copied back to its topic with its letter's headers (by a tool other than dlq replay),
    # then refused again: one reason and one source each, the new ones; the old reason is
    # in the log line.
    producer = ProduceRecordingProducer()
    eng = engine(producer)
    recorded = Recorded()
    monkeypatch.setattr(loop, "log", recorded)
    earlier = loop.dlq_headers(KeyError("old"), EVENTS.name, 0, 7)
    record = Record(EVENTS_BY_LEAD.name, 1, 9, b"k", b"v", {**earlier, "traceparent": b"t"})
    eng.dead_letter(record, ValueError("new"))
    [letter] = producer.produced
    names = [name for name, _ in letter["headers"]]
    assert len(names) == len(set(names))
    headers = dict(letter["headers"])
    assert headers["leadflow.reason"] == b"ValueError: new"
    assert headers["leadflow.source.topic"] == EVENTS_BY_LEAD.name.encode()
    assert (headers["leadflow.source.partition"], headers["leadflow.source.offset"]) == (
        b"1",
        b"9",
    )
    assert headers["traceparent"] == b"t"
    [(_, fields)] = recorded.events("warning")
    assert fields["earlier_reason"] == "KeyError: 'old'"


def test_a_control_record_s_letter_is_not_a_control_record() -> None:
    # Under their own names the marker headers made the letter a control record: the
    # projector skips those (no dead_letters row), and a lead or trainer marker's letter
    # would have been held back as a promise.
    producer = ProduceRecordingProducer()
    eng = engine(producer)
    value, headers = marker_record(LEAD_MARKER, {0: 5})
    eng.dead_letter(Record(EVENTS_BY_LEAD.name, 0, 2, None, value, dict(headers)), ValueError("x"))
    [letter] = producer.produced
    assert not is_control(letter["headers"])
    assert not loop.holdable(dict(letter["headers"]))
    assert dict(letter["headers"])["leadflow.source.marker"] == LEAD_MARKER.encode()
    assert eng._outputs == 1  # an output: the batch that carries it is not held
