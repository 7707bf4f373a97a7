"""Partition watermarks that survive a broker's death: ask again, after fresh metadata.

librdkafka sends a watermark (ListOffsets) request to the leader in its metadata cache.
When that broker dies the request times out, and a retry goes to the same dead broker
until the next periodic metadata refresh (``topic.metadata.refresh.interval.ms``, 5 min),
long after the controller has elected another leader (seconds). A metadata request
between the attempts updates the cache.

Every reader of topic ends and group lag (worker, bench, tests, ``leadflow replay rekey``)
goes through :func:`topic_watermarks` / :func:`group_lag`.

Every reader that reads partitions *to their end* (store restore, the keyring, the audit
trail, the erasure floor, ``leadflow replay rekey``, the equivalence tests) goes through
:func:`read_to_end`: one place that knows when a partition is done (a record at its end,
or partition EOF, which a ``read_committed`` reader gets past trailing markers).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from leadflow.processors.errors import LeadflowError
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.stall import owed

log = get_logger(__name__)

# One attempt waits at most this long, so a stale leader costs seconds, not the deadline.
ATTEMPT_SECONDS = 5.0

TP = tuple[str, int]  # (topic, partition)


def watermarks(client: Consumer, partition: TopicPartition, deadline: float) -> tuple[int, int]:
    """``(low, high)`` offsets of ``partition``, retried until ``deadline`` (monotonic).

    Raises:
        KafkaException: the last failure, once ``deadline`` has passed.
    """
    while True:
        left = deadline - time.monotonic()
        try:
            low, high = client.get_watermark_offsets(
                partition, timeout=max(0.5, min(ATTEMPT_SECONDS, left)), cached=False
            )
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise
            log.info(
                "kafka.offsets_retry",
                topic=partition.topic,
                partition=partition.partition,
                error=str(exc),
            )
        with contextlib.suppress(KafkaException):
            client.list_topics(partition.topic, timeout=min(ATTEMPT_SECONDS, max(0.5, left)))
        time.sleep(0.2)


def committed_offsets(
    client: Consumer, partitions: list[TopicPartition], deadline: float
) -> list[TopicPartition]:
    """The client's group's committed offsets of ``partitions`` (``offset < 0``: none).

    Retried until ``deadline`` (monotonic) while the group coordinator is not there yet
    (a new broker creates ``__consumer_offsets`` on the first group request) or moves.

    Raises:
        KafkaException: the last failure, once ``deadline`` has passed.
    """
    while True:
        left = deadline - time.monotonic()
        try:
            return list(client.committed(partitions, timeout=max(1.0, min(10.0, left))))
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise
            log.info("kafka.committed_retry", error=str(exc))
        time.sleep(0.5)


def topic_watermarks(
    client: Consumer, topics: Iterable[str], deadline: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """``(low, high)`` of every partition of ``topics``, keyed ``(topic, partition)``.

    A topic that does not exist has no entry. Each partition is asked with
    :func:`watermarks` (retried until ``deadline``, monotonic).
    """
    found: dict[tuple[str, int], tuple[int, int]] = {}
    for name in topics:
        meta = client.list_topics(name, timeout=10).topics.get(name)
        if meta is None or meta.error is not None:
            continue
        for p in sorted(meta.partitions):
            found[(name, p)] = watermarks(client, TopicPartition(name, p), deadline)
    return found


def offsets_client(settings: Settings, group: str = "leadflow-offsets") -> Consumer:
    """A consumer that only asks for offsets (it commits nothing, subscribes to nothing)."""
    return Consumer(
        {**settings.kafka_client_config(), "group.id": group, "enable.auto.commit": False}
    )


def topic_ends(
    settings: Settings, topics: Iterable[str], timeout: float = 30.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """:func:`topic_watermarks` with a throwaway client: ``(topic, partition) -> (low, high)``."""
    client = offsets_client(settings)
    try:
        return topic_watermarks(client, topics, time.monotonic() + timeout)
    finally:
        client.close()


def group_lag(settings: Settings, group: str, topics: Iterable[str], timeout: float = 30.0) -> int:
    """Records ``group`` has not committed yet on ``topics`` (absent topics count 0).

    A partition with no committed offset owes everything from its low watermark. A partition
    written in transactions ends with a commit marker no consumer commits past: one record
    short of the end owes nothing (:func:`leadflow.streams.stall.owed`).
    """
    client = offsets_client(settings, group)
    try:
        ends = topic_watermarks(client, topics, time.monotonic() + timeout)
        if not ends:
            return 0
        deadline = time.monotonic() + timeout
        committed = committed_offsets(client, [TopicPartition(t, p) for t, p in ends], deadline)
        lag = 0
        for tp in committed:
            low, high = ends[(tp.topic, tp.partition)]
            lag += owed(high, tp.offset if tp.offset >= 0 else low, markers=True)
        return lag
    finally:
        client.close()


class EndNotReached(LeadflowError):
    """:func:`read_to_end` ran out of time (``deadline`` or ``idle``) before every end.

    Attributes:
        pending: the partitions not at their end yet, with their ends (None: EOF).
    """

    def __init__(self, pending: dict[TP, int | None], why: str) -> None:
        super().__init__(f"{why}; not at their end: {sorted(pending)}")
        self.pending = dict(pending)


def raise_error(message: Message) -> None:
    """:func:`read_to_end`'s default for an error other than partition EOF: raise it."""
    raise KafkaException(message.error())


def read_to_end(
    consumer: Consumer,
    pending: dict[TP, int | None],
    *,
    deadline: float | None = None,
    idle: float | None = None,
    positions: dict[TP, int] | None = None,
    on_error: Callable[[Message], None] = raise_error,
    past_end: bool = False,
    poll: float = 0.5,
) -> Iterator[Message]:
    """Every record of the assigned partitions in ``pending`` below its end, as polled.

    ``consumer`` must be assigned (where each partition starts is the caller's choice) with
    ``enable.partition.eof`` on. ``pending`` maps ``(topic, partition)`` to the offset to
    read up to (exclusive; e.g. the high watermark or last stable offset when the read
    started), or None for "until partition EOF". A partition is done, and removed from
    ``pending`` (the caller's dict: a later call goes on where this one stopped), when its
    position reaches its end: a record at ``end - 1``, a record at or past ``end`` (not
    yielded: written after the read started), or partition EOF at or past ``end`` (EOF only,
    for None). EOF is what ends a partition whose tail is transaction markers or aborted
    records a ``read_committed`` reader never receives. A record of a partition not (or no
    longer) pending is skipped. The generator returns when ``pending`` is empty.

    ``positions``: updated with the position (next offset; past an EOF, its offset) of every
    partition a message comes from, for a reader that reads on later (the keyring).
    ``on_error``: called with a message that carries an error other than partition EOF
    (default: raise it); returning means "go on" (a client error it recovers from).
    ``past_end``: also yield the records it would skip (past their partition's end, or of a
    partition not pending), with ``positions`` updated: for a consumer that goes on reading
    at a later call, which would otherwise never see them again (the keyring).

    Raises:
        EndNotReached: ``deadline`` (monotonic) passed, or ``idle`` seconds without a message.
        KafkaException: an error, from the default ``on_error``.
    """
    last = time.monotonic()
    while pending:
        now = time.monotonic()
        if deadline is not None and now > deadline:
            raise EndNotReached(pending, "deadline passed")
        if idle is not None and now - last > idle:
            raise EndNotReached(pending, f"no record and no end for {idle:g} s")
        message = consumer.poll(poll)
        if message is None:
            continue
        last = time.monotonic()
        error = message.error()
        if error is not None and error.code() != KafkaError._PARTITION_EOF:
            on_error(message)
            continue
        tp = (str(message.topic()), int(message.partition() or 0))
        offset = int(message.offset() or 0)
        if error is not None:  # partition EOF: the position is the offset it reports
            if positions is not None:
                positions[tp] = max(positions.get(tp, 0), offset)
            if tp in pending and (pending[tp] is None or offset >= (pending[tp] or 0)):
                del pending[tp]
            continue
        if positions is not None:
            positions[tp] = offset + 1
        if tp not in pending:
            if past_end:
                yield message
            continue
        end = pending[tp]
        if end is not None and offset + 1 >= end:
            del pending[tp]
        if end is None or offset < end or past_end:
            yield message  # (a record at or past the end was appended after the read started)
