"""Partition watermarks that survive a broker's death: ask again, after fresh metadata.

librdkafka sends a watermark (ListOffsets) request to the leader in its metadata cache.
When that broker dies the request times out, and a retry goes to the same dead broker
until the next periodic metadata refresh (``topic.metadata.refresh.interval.ms``, 5 min),
long after the controller has elected another leader (seconds). A metadata request
between the attempts updates the cache.
"""

from __future__ import annotations

import contextlib
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from leadflow.streams.logs import get_logger

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
