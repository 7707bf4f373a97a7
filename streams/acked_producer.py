"""A blocking producer for the few records that must be durable before anything else happens.

Key records before the events they seal, tombstones before an erasure is reported done, audit
records before (and after) the action they describe: each call produces its records with
``acks=all`` (idempotent) and returns only once Kafka acknowledged all of them, or raises.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from leadflow.processors.errors import LeadflowError
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.topics import COLLECTOR_PARTITIONER

log = get_logger(__name__)


class NotAcknowledged(LeadflowError):
    """Kafka did not acknowledge every record within the timeout (nothing may be assumed)."""


class AckedProducer:
    """Produce records and wait for their acknowledgement; thread-safe, connects lazily.

    Args:
        settings: Kafka connection settings.
        timeout: seconds one :meth:`send` may wait.
    """

    def __init__(self, settings: Settings, timeout: float = 15.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def send(self, records: Sequence[tuple[str, bytes, bytes | None]]) -> None:
        """Produce ``(topic, key, value)`` records (``None`` is a tombstone) and await them.

        Raises:
            NotAcknowledged: naming the topic(s) and how many records were not acknowledged.
        """
        if not records:
            return
        with self._lock:
            if self._producer is None:
                self._producer = Producer(
                    {
                        **self.settings.kafka_client_config(),
                        "acks": "all",
                        "enable.idempotence": True,
                        "linger.ms": 0,
                        "partitioner": COLLECTOR_PARTITIONER,  # topics.writer_partitioner
                        "message.timeout.ms": int(self.timeout * 1000),
                        "log_level": 3,
                    }
                )
            failures: list[str] = []

            def on_delivery(err: KafkaError | None, _msg: Any) -> None:
                if err is not None:
                    failures.append(str(err))

            for topic, key, value in records:
                self._producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
            left = self._producer.flush(self.timeout)
        if left or failures:
            topics = ", ".join(sorted({topic for topic, _, _ in records}))
            raise NotAcknowledged(
                f"{topics} did not acknowledge {left + len(failures)} of {len(records)} records"
                + (f" ({failures[0]})" if failures else "")
            )

    def heartbeat(self, topic: str, value: int) -> None:
        """A heartbeat ``value`` on every partition of ``topic`` (``streams/control.py``).

        Written after records put on ``leadflow.events`` outside the collector (an
        erasure), so the worker releases them in event-time order without waiting for the
        collector's next traffic. Best effort: not acknowledged, a failure only logs.
        """
        from leadflow.streams.control import send_heartbeats

        with self._lock:
            if self._producer is None:
                return
            try:
                meta = self._producer.list_topics(topic, timeout=self.timeout)
                send_heartbeats(self._producer, topic, sorted(meta.topics[topic].partitions), value)
                self._producer.flush(self.timeout)
            except (KafkaException, KeyError, BufferError) as exc:
                log.warning("heartbeat_failed", topic=topic, error=str(exc))

    def close(self) -> None:
        """Deliver what is queued and release the client (safe to call twice)."""
        with self._lock:
            if self._producer is not None:
                self._producer.flush(self.timeout)
                self._producer = None
