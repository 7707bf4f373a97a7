"""The Kafka layer: one consumer and one transactional producer per worker process.

KIP-447: input offsets are committed by the producer, inside the transaction that carries
the outputs and state writes they led to (``send_offsets_to_transaction`` with the
consumer's group metadata), so the group coordinator fences a zombie by its group
generation and one transactional id per process is enough. The id is stable per data
directory: a worker restarted after ``kill -9`` fences its dead predecessor and aborts its
open transaction at once, instead of making readers wait for the transaction timeout.
"""

from __future__ import annotations

import enum
import fcntl
import os
import uuid
from pathlib import Path
from typing import IO

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from leadflow.processors.errors import LeadflowError
from leadflow.streams.settings import Settings
from leadflow.streams.topics import WORKER_PARTITIONER

# The consumer group of the worker (the faust app id before, kept so offsets carry over).
WORKER_GROUP = "leadflow"

# The transactional producer closes a connection idle this long (librdkafka jitters it
# down by up to 2 s); the bound on the #5511 stall, see ``producer_config``.
WORKER_CONNECTIONS_MAX_IDLE_MS = 30_000


class Failure(enum.Enum):
    """What a Kafka error asks of the engine."""

    RETRY = "retry"  # transient (broker away, coordinator moving): back off, try again
    ABORT = "abort"  # the transaction cannot commit: abort it, rewind, process again
    REBUILD = "rebuild"  # fenced or fatal: the producer is unusable, build a new one


def classify(exc: KafkaException) -> Failure:
    """How to react to an error from a transactional call.

    Example:
        >>> classify(KafkaException(KafkaError(KafkaError._TIMED_OUT, retriable=True)))
        <Failure.RETRY: 'retry'>
        >>> classify(KafkaException(KafkaError(KafkaError._FENCED, fatal=True)))
        <Failure.REBUILD: 'rebuild'>
        >>> classify(KafkaException(KafkaError(KafkaError._INCONSISTENT)))
        <Failure.REBUILD: 'rebuild'>
    """
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if error is None or error.fatal():
        return Failure.REBUILD
    if error.code() == KafkaError._INCONSISTENT:
        # Messages of the transaction failed delivery (timed out in an outage). Aborted and
        # kept, the producer's next transaction after the broker's return failed with
        # OUT_OF_ORDER_SEQUENCE_NUMBER and its offsets call stayed blocked (session 15,
        # docs/architecture.md); a new producer starts from a new epoch.
        return Failure.REBUILD
    if error.txn_requires_abort():
        return Failure.ABORT
    if error.retriable():
        return Failure.RETRY
    return Failure.ABORT


class WorkerIdError(LeadflowError):
    """Another worker already runs with this data directory."""


class WorkerId:
    """This worker's stable identity: a UUID kept in its data directory, held by a lock.

    The lock makes a second worker on the same data directory fail loudly instead of two
    processes fencing each other's transactions in a loop.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "worker-id"
        self._lock: IO[str] = (directory / "worker.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise WorkerIdError(
                f"another worker runs with the data dir {directory.parent}; "
                "give each worker its own LEADFLOW_DATA_DIR"
            ) from None
        if not path.exists():
            path.write_text(uuid.uuid4().hex)
        self.value = path.read_text().strip()

    def release(self) -> None:
        """Drop the lock (the process exiting drops it too)."""
        self._lock.close()


def consumer_config(settings: Settings, worker_id: str) -> dict[str, str | int | float | bool]:
    """The input consumer: the worker group, committed reads only, no commits of its own."""
    return {
        **settings.kafka_client_config(),
        "group.id": WORKER_GROUP,
        "client.id": f"leadflow-worker-{worker_id[:8]}",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Requests go out at once (librdkafka leaves Nagle on; the Java clients turn it off):
        # a fetch or an offset request held back behind an unacknowledged one is latency.
        "socket.nagle.disable": True,
        # A killed worker holds its partitions until its session expires: kept short.
        **settings.kafka_group_config(),
        "log_level": 4,
    }


def producer_config(settings: Settings, worker_id: str) -> dict[str, str | int | float | bool]:
    """The transactional producer: idempotent, acks=all, batching on."""
    return {
        **settings.kafka_client_config(),
        "transactional.id": f"leadflow-worker-{worker_id}",
        "client.id": f"leadflow-worker-{worker_id[:8]}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.worker_linger_ms,
        "compression.type": "lz4",
        "socket.nagle.disable": True,
        # Java-compatible key hashing: the partitions faust (aiokafka) used for by-lead and
        # the changelogs, so state and records stay on the partitions they were on.
        "partitioner": WORKER_PARTITIONER,
        # How long a dead worker's open transaction can hold readers back (when no worker
        # with its data dir comes back to fence it), and the most one batch may take.
        "transaction.timeout.ms": int(settings.worker_transaction_timeout_seconds * 1000),
        # The broker answers CONCURRENT_TRANSACTIONS while the previous commit's markers are
        # being written; librdkafka's default 100 ms backoff made every batch ~100 ms
        # (measured: 103 ms per transaction at 100, 8 ms at 5).
        "retry.backoff.ms": 5,
        # Bounds librdkafka's send_offsets_to_transaction hang after the group coordinator's
        # death (#5456, #5511): the blocked call is looked at again only when a connection
        # of this producer goes up or down, and a blocked worker sends nothing; closing
        # connections idle this long is such a change (docs/architecture.md, "Processing
        # guarantee"). Default 0: never closed, the worker waits for the hung-call watchdog.
        "connections.max.idle.ms": WORKER_CONNECTIONS_MAX_IDLE_MS,
        "log_level": 4,
    }


def new_consumer(settings: Settings, worker_id: str) -> Consumer:
    """The worker's input consumer (not yet subscribed)."""
    return Consumer(consumer_config(settings, worker_id))


def new_producer(settings: Settings, worker_id: str) -> Producer:
    """The worker's transactional producer (``init_transactions`` not yet called)."""
    return Producer(producer_config(settings, worker_id))


def process_id() -> str:
    """A short id of this process for logs."""
    return f"{os.getpid()}"
