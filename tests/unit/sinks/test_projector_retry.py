"""The projector keeps a batch and backs off while ClickHouse fails, then catches up."""

from __future__ import annotations

import doctest
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from leadflow.processors.events import Event, Kind
from leadflow.sinks import projector as projector_module
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import Projector, batch_token
from leadflow.streams.settings import load_settings
from tests.unit.recorded_log import Recorded


class FlakyClient:
    """Fails the first ``failures`` inserts, then records what it is given.

    ``create_insert_context`` stands for the client's ``DESCRIBE TABLE``: each call is
    counted in ``described``, and the types it returns name the table and the call.
    """

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inserts: list[tuple[str, int, dict[str, Any] | None]] = []
        self.described: list[str] = []
        self.types: list[Any] = []  # the column types each insert was given

    def create_insert_context(self, table: str, column_names: list[str]) -> Any:
        self.described.append(table)
        return SimpleNamespace(column_types=[f"{table}#{len(self.described)}"] * len(column_names))

    def insert(
        self,
        table: str,
        data: list[Any],
        column_names: list[str],
        column_types: Any,
        settings: Any,
    ) -> None:
        self.types.append(column_types)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("clickhouse is down")
        self.inserts.append((table, len(data), settings))


def _rows() -> Any:
    return rows_for_all(
        [
            Event("e1", Kind.IDENTIFY, "w", 1, 2, "a1", "L1"),
            Event("e2", Kind.VISIT, "w", 3, 4, "a1"),
        ]
    )


def test_backs_off_exponentially_then_inserts_everything() -> None:
    client = FlakyClient(failures=4)
    waits: list[float] = []
    projector = Projector(load_settings(), client, "db", sleep=waits.append, max_backoff=2.0)
    spans = [("leadflow.events", 0, 10, 11)]
    assert projector.insert_batch(_rows(), spans, threading.Event())
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert [(t, n) for t, n, _ in client.inserts] == [("db.events", 2), ("db.identities", 1)]
    token = client.inserts[0][2]["insert_deduplication_token"]
    assert token == batch_token("events", spans)
    assert projector.stats.insert_retries == 4
    assert projector.stats.rows == 3


def test_each_tables_column_types_are_asked_once_and_again_after_a_failed_insert() -> None:
    client = FlakyClient(failures=0)
    projector = Projector(load_settings(), client, "db", sleep=lambda _: None)
    for n in range(3):
        assert projector.insert_batch(_rows(), [("leadflow.events", 0, n, n)], threading.Event())
    assert client.described == ["db.events", "db.identities"]
    assert client.types[-2][0] == "db.events#1"
    client.failures = 1  # the next insert into events fails: its types are asked again
    assert projector.insert_batch(_rows(), [("leadflow.events", 0, 5, 5)], threading.Event())
    assert client.described == ["db.events", "db.identities", "db.events"]
    assert client.types[-2][0] == "db.events#3"  # the retry used the new answer
    assert client.types[-1][0] == "db.identities#2"


def test_stop_while_down_reports_not_inserted() -> None:
    client = FlakyClient(failures=100)
    stop = threading.Event()
    projector = Projector(load_settings(), client, "db", sleep=lambda _: stop.set())
    assert not projector.insert_batch(_rows(), [("t", 0, 1, 1)], stop)
    assert client.inserts == []


class MovingCoordinator:
    """A consumer whose commits fail with ``errors`` (one each), then succeed."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.commits: list[list[TopicPartition]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        self.commits.append(offsets)


def test_commit_waits_out_a_coordinator_that_moves_to_another_broker() -> None:
    waits: list[float] = []
    projector = Projector(load_settings(), FlakyClient(0), "db", sleep=waits.append)
    consumer = MovingCoordinator(KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE)
    projector._commit(consumer, {("leadflow.events", 0): 12}, threading.Event())  # type: ignore[arg-type]
    assert [[(tp.topic, tp.partition, tp.offset) for tp in c] for c in consumer.commits] == [
        [("leadflow.events", 0, 12)]
    ]
    assert waits == [0.2, 0.4]
    assert projector._committed == {("leadflow.events", 0): 12}


def test_commit_after_a_rebalance_is_given_up_and_other_errors_are_raised() -> None:
    projector = Projector(load_settings(), FlakyClient(0), "db", sleep=lambda _: None)
    offsets = {("leadflow.events", 0): 12}
    superseded = MovingCoordinator(KafkaError.ILLEGAL_GENERATION)
    projector._commit(superseded, offsets, threading.Event())  # type: ignore[arg-type]
    assert superseded.commits == []
    assert projector._committed == {}  # not committed: not known as committed
    broken = MovingCoordinator(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        projector._commit(broken, offsets, threading.Event())  # type: ignore[arg-type]


class IdleConsumer(MovingCoordinator):
    """Delivers nothing; its positions are past entries it skipped (markers, aborted tails)."""

    def __init__(self, positions: dict[tuple[str, int], int]) -> None:
        super().__init__()
        self.positions = positions
        self.group: dict[tuple[str, int], int] = {}  # the group's committed offsets
        self.committed_calls = 0

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return []

    def close(self) -> None:
        self.positions = {}

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.committed_calls += 1
        return [
            TopicPartition(tp.topic, tp.partition, self.group.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, -1001  # the cache knows the start only (tests tell the end apart)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.positions]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions[(tp.topic, tp.partition)])
            for tp in partitions
        ]


def test_an_idle_step_commits_the_positions_past_what_was_committed_and_only_those() -> None:
    projector = Projector(load_settings(), FlakyClient(0), "db", paths_every=None)
    projector._migrated = True
    # identities:4 ends in an aborted batch (record + abort marker) after offset 40; events:0
    # was committed to its position; events:1 has no position yet (no fetch since assigned).
    consumer = IdleConsumer(
        {("leadflow.identities", 4): 42, ("leadflow.events", 0): 7, ("leadflow.events", 1): -1001}
    )
    projector._consumer = consumer  # type: ignore[assignment]
    projector._committed = {("leadflow.identities", 4): 40, ("leadflow.events", 0): 7}
    assert projector.step(0.0, threading.Event()) == 0
    committed = [[(tp.topic, tp.partition, tp.offset) for tp in c] for c in consumer.commits]
    assert committed == [[("leadflow.identities", 4, 42)]]
    assert projector.stats.skip_commits == 1
    projector.step(0.0, threading.Event())  # nothing new was skipped: no commit
    assert len(consumer.commits) == 1


class EndOfPartition:
    """What librdkafka hands ``consume`` at a partition's end: an event, not a record."""

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._PARTITION_EOF)


class CountingConsumer(IdleConsumer):
    """Notes every ``consume`` call; hands out ``first`` once, then nothing."""

    def __init__(self, first: list[Any]) -> None:
        super().__init__({})
        self.first = first
        self.calls: list[tuple[int, float]] = []

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.calls.append((num_messages, timeout))
        out, self.first = self.first, []
        return out


@pytest.mark.parametrize("arrived", [True, False])
def test_a_batch_waits_for_its_first_record_then_at_most_the_linger(arrived: bool) -> None:
    # Waiting for a whole batch for up to the poll timeout held a trickle's rows back for the
    # full timeout (ack -> row p99 over 2 s with live traffic, docs/benchmarks.md).
    projector = Projector(
        load_settings(), FlakyClient(0), "db", batch_size=500, linger=0.2, paths_every=None
    )
    projector._migrated = True
    consumer = CountingConsumer([EndOfPartition()] if arrived else [])
    projector._consumer = consumer  # type: ignore[assignment]
    assert projector.step(1.0, threading.Event()) == 0
    assert consumer.calls == ([(1, 1.0), (499, 0.2)] if arrived else [(1, 1.0)])


class MissingTopic:
    """What ``consume`` hands out for a subscribed topic (or partition) that does not exist."""

    def __init__(self, topic: str, partition: int) -> None:
        self._topic, self._partition = topic, partition

    def error(self) -> KafkaError:
        return KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"{self._topic}: not available")

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition


def test_a_missing_topic_is_counted_and_named_not_taken_for_an_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A deleted or never-created topic was skipped like an end of partition, without a word:
    # the projection looked caught up while nothing of the topic reached ClickHouse.
    recorded = Recorded()
    monkeypatch.setattr(projector_module, "log", recorded)
    projector = Projector(load_settings(), FlakyClient(0), "db", paths_every=None)
    projector._migrated = True
    errors = [
        MissingTopic("leadflow.lead-merged", 0),
        MissingTopic("leadflow.lead-merged", 0),
        MissingTopic("leadflow.identities", 2),
    ]
    consumer = CountingConsumer(list(errors))
    projector._consumer = consumer  # type: ignore[assignment]
    assert projector.step(0.0, threading.Event()) == 0  # not a crash, not a record
    consumer.first = list(errors)
    assert projector.step(0.0, threading.Event()) == 0
    assert projector.stats.unknown_topic_errors == 6
    warned = recorded.events("warning")
    # One line per topic and partition within 10 s: the client repeats it at every poll.
    assert [(e, f["topic"], f["partition"]) for e, f in warned] == [
        ("projector.unknown_topic_or_partition", "leadflow.lead-merged", 0),
        ("projector.unknown_topic_or_partition", "leadflow.identities", 2),
    ]
    assert "not available" in warned[0][1]["error"]


class MovingLeaderAdmin:
    """An admin client whose first offset lookup meets a leadership in motion.

    Then every partition ends at ``end`` and starts at 0.
    """

    def __init__(self, end: int) -> None:
        self.end = end
        self.calls = 0

    def list_offsets(
        self, request: dict[TopicPartition, Any], request_timeout: float, **_: Any
    ) -> Any:
        from concurrent.futures import Future
        from types import SimpleNamespace

        self.calls += 1
        futures: dict[TopicPartition, Future[Any]] = {}
        for tp, spec in request.items():
            future: Future[Any] = Future()
            if self.calls == 1:
                future.set_exception(KafkaException(KafkaError(KafkaError.UNKNOWN_LEADER_EPOCH)))
            else:
                latest = type(spec).__name__ == "LatestSpec"
                future.set_result(SimpleNamespace(offset=self.end if latest else 0))
            futures[tp] = future
        return futures


def _not_caught_up_then_caught_up(consumer: IdleConsumer, admin: Any, error: str) -> None:
    """``_caught_up`` says "not yet" once, warning with ``error``, then "yes" when asked again."""
    recorded = Recorded()
    projector = Projector(load_settings(), FlakyClient(0), "db", paths_every=None)
    projector._consumer = consumer  # type: ignore[assignment]
    projector._admin = admin
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(projector_module, "log", recorded)
        assert not projector._caught_up()
    [(event, fields)] = recorded.events("warning")
    assert event == "projector.end_offsets_retry"
    assert error in fields["error"]
    assert projector._admin is None  # asked again with fresh metadata
    projector._admin = admin
    assert projector._caught_up()


def test_an_end_offset_lookup_during_a_leader_move_is_not_caught_up_yet() -> None:
    # run_until_idle died of UNKNOWN_LEADER_EPOCH right after a broker restart (session 18's
    # fresh-clone CI, the cluster test): the lookup is asked again with a new admin client.
    consumer = IdleConsumer({("leadflow.events", 0): 7})
    _not_caught_up_then_caught_up(consumer, MovingLeaderAdmin(end=7), "UNKNOWN_LEADER_EPOCH")


class DownAdmin:
    """An admin client of a broker that does not answer (restarting)."""

    def list_topics(self, timeout: float) -> Any:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))


def test_a_backlog_the_broker_does_not_tell_is_unknown_not_a_failed_command() -> None:
    # `leadflow replay` asks the backlog once, for its progress bar's total: a broker
    # restarting at that moment failed the command, which itself rides out the broker.
    recorded = Recorded()
    projector = Projector(load_settings(), FlakyClient(0), "db", paths_every=None)
    projector._admin = DownAdmin()  # type: ignore[assignment]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(projector_module, "log", recorded)
        assert projector.backlog() is None
    [(event, fields)] = recorded.events("warning")
    assert event == "projector.backlog_unknown"
    assert "transport failure" in fields["error"]


class MovingGroupConsumer(IdleConsumer):
    """Its first lookup of the group's offsets meets a coordinator moving off a dead broker."""

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if not self.committed_calls:
            self.committed_calls += 1
            raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR))
        return super().committed(partitions, timeout)


def test_a_group_offset_lookup_while_the_coordinator_moves_is_not_caught_up_yet() -> None:
    # run_until_idle died of NOT_COORDINATOR asking the group's committed offsets right
    # after a broker restart (session 26's fresh-clone CI, the cluster test).
    consumer = MovingGroupConsumer({("leadflow.events", 0): -1001})
    consumer.group = {("leadflow.events", 0): 7}
    settled = MovingLeaderAdmin(end=7)
    settled.calls = 1  # its leaders have settled: it answers
    _not_caught_up_then_caught_up(consumer, settled, "NOT_COORDINATOR")
    assert consumer.committed_calls == 2


class ToldEnds:
    """The side thread's answers, as the stall watch reads them (``EndOffsets.end``)."""

    def __init__(self, end: int | None) -> None:
        self.told = end
        self.watched: set[tuple[str, int]] = set()

    def watch(self, partitions: Any) -> None:
        self.watched = set(partitions)

    def end(self, tp: tuple[str, int], now: float, max_age: float) -> int | None:
        return self.told


def test_riding_out_clickhouse_or_the_broker_is_not_a_stall() -> None:
    # The stall watch judges a partition behind its end that does not move: time the
    # projector spent retrying ClickHouse, or while the broker did not tell the end, does
    # not count, so a long outage does not end in a new consumer (or an exit) once over.
    recorded = Recorded()
    projector = Projector(load_settings(), FlakyClient(0), "db", paths_every=None, stall_after=30.0)
    projector._consumer = IdleConsumer({("leadflow.events", 0): 7})  # type: ignore[assignment]
    ends = ToldEnds(10)  # 3 records behind, not moving
    projector._ends = ends  # type: ignore[assignment]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(projector_module, "log", recorded)
        projector._watch(0.0)
        assert ends.watched == {("leadflow.events", 0)}
        projector.stats.insert_retries += 1  # ClickHouse down between two looks
        projector._watch(31.0)
        projector._watch(60.0)
        ends.told = None  # the broker stops telling the end
        projector._watch(62.0)
        ends.told = 10
        projector._watch(70.0)
        projector._watch(99.0)
        assert projector.stats.stall_rebuilds == 0
        assert recorded.events("warning") == []
        projector._watch(101.0)  # 31 s behind and still, with nothing to ride out
    assert projector.stats.stall_rebuilds == 1
    [(event, fields)] = recorded.events("warning")
    assert (event, fields["action"], fields["lag"]) == ("projector.stalled", "new consumer", 3)
    assert projector._consumer is None


class BacklogConsumer(IdleConsumer):
    """Fills every batch while ``backlog`` lasts (other partitions' records), then nothing."""

    def __init__(self, positions: dict[tuple[str, int], int], backlog: int) -> None:
        super().__init__(positions)
        self.backlog = backlog

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        taken = min(num_messages, self.backlog)
        self.backlog -= taken
        return [EndOfPartition() for _ in range(taken)]


def test_a_partition_waiting_behind_a_backlog_in_the_client_is_not_a_stall() -> None:
    # librdkafka delivers what it prefetched in the order it arrived, so a partition's
    # records can wait behind other partitions' backlog: session 27's fresh-clone CI saw a
    # new group, catching up in batches of 5, take events:0 (nothing delivered yet) for a
    # stall twice and exit 70. While every step takes a full batch, nothing is judged.
    projector = Projector(
        load_settings(), FlakyClient(0), "db", paths_every=None, stall_after=30.0, batch_size=5
    )
    projector._migrated = True
    consumer = BacklogConsumer({("leadflow.events", 0): 7}, backlog=5 * 40)
    projector._consumer = consumer  # type: ignore[assignment]
    projector._ends = ToldEnds(10)  # type: ignore[assignment]
    stop = threading.Event()
    for look in range(40):  # a full batch between every two looks, 40 s
        projector.step(0.0, stop)
        projector._watch(look * 1.0)
    assert projector.stats.stall_rebuilds == 0
    assert consumer.backlog == 0
    projector.step(0.0, stop)  # the queue ran dry: the partition still has not moved
    for now in (40.0, 60.0, 71.0):
        projector._watch(now)
    assert projector.stats.stall_rebuilds == 1  # judged once the queue ran dry: 31 s still


def test_a_caught_up_partition_not_read_since_its_assignment_is_not_behind() -> None:
    # An idle partition's position stays unknown until a record is delivered (measured,
    # librdkafka 2.x: -1001 for as long as nothing comes), so where it stands is the group's
    # committed offset, asked once per assignment: a projector restarted on caught-up
    # partitions must not take them for stuck ones.
    projector = Projector(load_settings(), FlakyClient(0), "db", paths_every=None, stall_after=30.0)
    consumer = IdleConsumer({("leadflow.events", 0): -1001})
    consumer.group = {("leadflow.events", 0): 10}
    projector._consumer = consumer  # type: ignore[assignment]
    projector._ends = ToldEnds(10)  # type: ignore[assignment]
    for now in (0.0, 31.0, 62.0, 93.0):
        projector._watch(now)
    assert projector.stats.stall_rebuilds == 0
    assert consumer.committed_calls == 1


def test_the_running_stats_are_logged_between_batches() -> None:
    # The projector said nothing at INFO while it ran: a consumer replaced, retried commits
    # or inserts showed only in warnings, the totals only when the command ended.
    recorded = Recorded()
    projector = Projector(load_settings(), FlakyClient(0), "db", paths_every=None)
    projector.stats.records, projector.stats.stall_rebuilds = 40, 1
    projector._next_progress = 0.0  # due
    projector._next_watch = float("inf")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(projector_module, "log", recorded)
        projector._look()
        projector._look()  # not due again for PROGRESS_EVERY
    [(event, fields)] = recorded.events("info")
    assert event == "projector.progress"
    assert (fields["records"], fields["stall_rebuilds"], fields["commit_retries"]) == (40, 1, 0)


def test_fetches_wait_half_the_linger_for_a_batchs_worth() -> None:
    settings = load_settings()
    for linger, wait in ((0.2, 100), (1.0, 500), (0.0, 0)):
        config = Projector(settings, FlakyClient(0), "db", linger=linger).consumer_config()
        assert (config["fetch.wait.max.ms"], config["fetch.min.bytes"]) == (wait, 256 * 1024)
        assert config["group.id"] == "leadflow-projector"


def test_doctests() -> None:
    result = doctest.testmod(projector_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
