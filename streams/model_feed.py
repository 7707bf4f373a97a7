"""The newest model snapshot of each workspace on ``leadflow.models``, for readers of it.

The worker no longer scores with what this reads: which snapshot scores a record is decided
by the log (the trainer's model markers, docs/architecture.md "The model switch in the
log"). It serves the demo's report and tools that show the published models.

faust's GlobalTable would be the obvious tool, but it has open reports of workers that
never finish recovery or miss updates (faust #283; robinhood/faust #475, #541), and it hung
the worker here. The topic is compacted and small, so reading its last record per
partition with confluent-kafka is simple and dependable.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from leadflow.streams.kafka_offsets import watermarks
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.topics import MODELS

log = get_logger(__name__)


def latest_snapshots(settings: Settings, timeout: float = 10.0) -> dict[bytes, bytes]:
    """The newest snapshot of every workspace on ``leadflow.models`` (key = workspace id).

    The topic is compacted and holds one small record per workspace (plus the uncompacted
    tail), so it is read from the start to the end offsets each time; the last record of
    a key wins (a key lives on one partition, so its records are in order).
    """
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "leadflow-model-feed",  # never subscribes or commits; needed by the client
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    newest: dict[bytes, bytes] = {}
    try:
        metadata = consumer.list_topics(MODELS.name, timeout=timeout)
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for partition in metadata.topics[MODELS.name].partitions:
            low, high = watermarks(
                consumer, TopicPartition(MODELS.name, partition), time.monotonic() + timeout
            )
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(MODELS.name, partition, low))
        if not starts:
            return newest
        consumer.assign(starts)
        while ends:
            message = consumer.poll(timeout)
            if message is None:
                break  # the end offsets were read a moment ago: nothing more is coming
            if message.error() is not None:
                continue
            key, value = message.key(), message.value()
            if key is not None:
                if value is None:
                    newest.pop(key, None)  # a tombstone: the workspace's model was deleted
                else:
                    newest[key] = value
            partition, offset = message.partition(), message.offset()
            done = (
                partition is not None
                and offset is not None
                and offset + 1 >= ends.get(partition, 0)
            )
            if done and partition is not None:
                ends.pop(partition, None)
        return newest
    finally:
        consumer.close()
