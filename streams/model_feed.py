"""The newest model snapshot on ``leadflow.models``, for every worker.

faust's GlobalTable would be the obvious tool, but it has open reports of workers that
never finish recovery or miss updates (faust #283; robinhood/faust #475, #541), and it hung
the worker here. The topic is compacted and small, so reading its last record per
partition with confluent-kafka is simple and dependable.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from leadflow.streams.kafka_offsets import watermarks
from leadflow.streams.settings import Settings
from leadflow.streams.topics import MODELS


def latest_snapshot(settings: Settings, timeout: float = 10.0) -> bytes | None:
    """The value of the newest record on ``leadflow.models`` (by record timestamp), if any."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "leadflow-model-feed",  # never subscribes or commits; needed by the client
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    try:
        metadata = consumer.list_topics(MODELS.name, timeout=timeout)
        newest: tuple[int, bytes] | None = None
        for partition in metadata.topics[MODELS.name].partitions:
            low, high = watermarks(
                consumer, TopicPartition(MODELS.name, partition), time.monotonic() + timeout
            )
            if high <= low:
                continue
            consumer.assign([TopicPartition(MODELS.name, partition, high - 1)])
            message = consumer.poll(timeout)
            if message is None or message.error() is not None:
                continue
            value, stamp = message.value(), message.timestamp()[1]
            if value is not None and (newest is None or stamp > newest[0]):
                newest = (stamp, value)
        return newest[1] if newest else None
    finally:
        consumer.close()
