"""Partition watermarks that survive a broker's death: ask again, after fresh metadata.

librdkafka sends a watermark (ListOffsets) request to the leader in its metadata cache.
When that broker dies the request times out, and a retry goes to the same dead broker
until the next periodic metadata refresh (``topic.metadata.refresh.interval.ms``, 5 min),
long after the controller has elected another leader (seconds). A metadata request
between the attempts updates the cache.

Every reader of topic ends and group lag (worker, bench, tests, ``leadflow replay rekey``)
goes through :func:`topic_watermarks` / :func:`group_lag`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.stall import owed

log = get_logger(__name__)

# One attempt waits at most this long, so a stale leader costs seconds, not the deadline.
ATTEMPT_SECONDS = 5.0


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
