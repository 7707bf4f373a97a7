"""State stores: one in-memory map per (store, input partition), backed by a changelog.

Every write goes into the current transaction twice: into the store's pending writes and,
at the end of the batch, as a record on the store's compacted changelog topic (same
partition number as the input partition). A commit applies the pending writes; an abort
drops them, so memory never holds a write that Kafka does not. On assignment a partition's
store is rebuilt by reading its changelog partition with ``read_committed`` up to the last
stable offset (records of aborted or still-open transactions are never applied).

In memory, not RocksDB: restore time is measured in docs/architecture.md ("State stores");
the whole state of a partition is rebuilt on every assignment, so nothing local can be
stale after a crash.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from leadflow.processors.errors import LeadflowError
from leadflow.streams.kafka_offsets import EndNotReached, read_to_end, watermarks
from leadflow.streams.logs import get_logger
from leadflow.streams.topics import TopicSpec

log = get_logger(__name__)


class RestoreError(LeadflowError):
    """A changelog could not be read to its end."""


def _restore_error(message: Message) -> None:
    raise RestoreError(f"reading {(message.topic(), message.partition())}: {message.error()}")


def changelog_topic(store: str) -> TopicSpec:
    """The compacted changelog topic of a store (the faust worker's names, kept)."""
    return TopicSpec(
        f"leadflow-{store}-changelog", "state key", f"changelog of the {store} store", True
    )


@dataclass
class PartitionStore:
    """One store's entries for one input partition, with this transaction's writes apart."""

    data: dict[bytes, bytes] = field(default_factory=dict)
    pending: dict[bytes, bytes | None] = field(default_factory=dict)

    def get(self, key: bytes) -> bytes | None:
        """The value as this transaction sees it."""
        if key in self.pending:
            return self.pending[key]
        return self.data.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        """Write in this transaction (``None`` deletes).

        Deleting a key the committed data does not hold forgets this transaction's write of
        it instead of pending a tombstone: a key written and deleted in one transaction (a
        record the release store held and released in the same batch) puts nothing on the
        changelog, and a restore rebuilds the same entries either way.

        Example:
            >>> store = PartitionStore()
            >>> store.put(b"held", b"record")
            >>> store.put(b"held", None)
            >>> store.pending
            {}
        """
        if value is None and key not in self.data:
            self.pending.pop(key, None)
        else:
            self.pending[key] = value

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Live entries starting with ``prefix``, this transaction's writes included."""
        for key, value in self.data.items():
            if key.startswith(prefix) and key not in self.pending:
                yield key, value
        for key, pending in self.pending.items():
            if pending is not None and key.startswith(prefix):
                yield key, pending

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Apply a committed write (restore, or a commit of this process)."""
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    def commit(self) -> None:
        """The transaction committed: its writes become the store's."""
        for key, value in self.pending.items():
            self.apply(key, value)
        self.pending.clear()

    def abort(self) -> None:
        """The transaction aborted: forget its writes."""
        self.pending.clear()


class Stores:
    """All stores of this process, by (store name, partition)."""

    def __init__(self, client_config: dict[str, str | int | float | bool]) -> None:
        self._client_config = client_config
        self._stores: dict[tuple[str, int], PartitionStore] = {}

    def store(self, name: str, partition: int) -> PartitionStore:
        """The store of ``name`` for ``partition`` (must have been restored)."""
        return self._stores[(name, partition)]

    def drop(self, names: Iterable[str], partition: int) -> None:
        """Forget the partition's stores (it was revoked or lost)."""
        for name in names:
            self._stores.pop((name, partition), None)

    def pending(self) -> Iterator[tuple[str, int, bytes, bytes | None]]:
        """This transaction's writes, to produce to the changelogs: (store, partition, k, v)."""
        for (name, partition), store in self._stores.items():
            for key, value in store.pending.items():
                yield name, partition, key, value

    def commit(self) -> None:
        """Every store's transaction committed."""
        for store in self._stores.values():
            if store.pending:
                store.commit()

    def abort(self) -> None:
        """Every store's transaction aborted."""
        for store in self._stores.values():
            store.abort()

    def restore(self, wanted: Iterable[tuple[str, int]], timeout: float = 300.0) -> int:
        """Rebuild the stores ``(name, partition)`` from their changelogs; return records read.

        Reads with ``read_committed`` from the beginning to the end each partition had when
        the restore started (the last stable offset): what a dead owner left in an open
        transaction is not applied, and that transaction can no longer commit once its
        input offsets belong to this process's group generation.

        Raises:
            RestoreError: a changelog was not read to its end within ``timeout``.
        """
        todo = sorted(set(wanted))
        if not todo:
            return 0
        started = time.monotonic()
        consumer = Consumer(
            {
                **self._client_config,
                "group.id": "leadflow-restore",  # never subscribes or commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "log_level": 3,
            }
        )
        fresh = {key: PartitionStore() for key in todo}
        read = 0
        try:
            by_tp = {(changelog_topic(name).name, p): (name, p) for name, p in todo}
            ends: dict[tuple[str, int], int | None] = {}
            for topic, p in by_tp:
                low, high = watermarks(consumer, TopicPartition(topic, p), started + timeout)
                if high > low:
                    ends[(topic, p)] = high
            if ends:
                consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
            # Up to the end each partition had at the start; EOF ends one whose tail is
            # transaction markers (the EOF offset is then the end, not the last record).
            for message in read_to_end(
                consumer, ends, deadline=started + timeout, on_error=_restore_error
            ):
                key = message.key()
                if key is not None:
                    tp = (str(message.topic()), int(message.partition() or 0))
                    fresh[by_tp[tp]].apply(key, message.value())
                    read += 1
        except EndNotReached as exc:
            raise RestoreError(
                f"changelogs not read to their end in {timeout} s: {exc.pending}"
            ) from exc
        finally:
            consumer.close()
        self._stores.update(fresh)
        log.info(
            "stores.restored",
            stores=len(todo),
            records=read,
            seconds=round(time.monotonic() - started, 3),
        )
        return read
