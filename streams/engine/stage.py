"""How a stage is declared, and everything a task may touch while it processes a record.

A *stage* consumes one input topic. For each input partition the engine owns, it builds
one *task* after restoring the partition's stores. A task is glue: decode the record, call
a pure processor, ``put`` the new state, ``send`` what it derived. Everything one batch
sends and puts commits or aborts together with the input offsets (one Kafka transaction),
so a task needs no ordering tricks: it cannot half-happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from leadflow.streams.topics import TopicSpec


class Unavailable(Exception):
    """Something a task needs is out of reach for now (e.g. a topic during a broker outage).

    Not the record's fault, so not a dead letter: the engine aborts the batch, backs off
    and processes it again.
    """


@dataclass(frozen=True, slots=True)
class Record:
    """One record from a stage's input topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes] = field(default_factory=dict)
    # The Kafka record timestamp in ms (LogAppendTime or CreateTime, as the topic says);
    # None when the log gives none (a record built in a test). Part of the log: a replay
    # reads the same value (processors/receive_bound.py bounds receive stamps with it).
    timestamp: int | None = None


class TaskContext(Protocol):
    """What a task may read and write: its partition's stores and the batch's transaction."""

    @property
    def partition(self) -> int:
        """The input partition this task owns (its stores are this partition's)."""
        ...

    def get(self, store: str, key: bytes) -> bytes | None:
        """A store value as of this transaction (its own writes included)."""
        ...

    def put(self, store: str, key: bytes, value: bytes | None) -> None:
        """Write (``None`` deletes) in this transaction; an abort discards it."""
        ...

    def items(self, store: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Every live entry whose key starts with ``prefix``, this transaction's writes included."""
        ...

    def send(
        self,
        topic: TopicSpec,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes] | None = None,
        partition: int | None = None,
    ) -> None:
        """Produce a record in this transaction (partitioned by key unless ``partition``)."""
        ...

    def dead_letter(self, record: Record, exc: Exception) -> None:
        """Send the record as it came to the dead-letter topic with the reason; counted, logged."""
        ...


class Task(Protocol):
    """The per-partition processing of one stage."""

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        """Process one input record."""
        ...

    def on_batch_end(self, ctx: TaskContext) -> None:
        """Called once per batch that held records of this partition, before the commit."""
        ...


@dataclass(frozen=True)
class Stage:
    """A stage: its input topic, the stores it keeps per input partition, its task factory.

    Attributes:
        name: short name for logs and metrics ("identity", "lead", "trainer").
        source: the input topic.
        stores: names of the stores this stage keeps (see :mod:`.stores`).
        task: builds the task for one input partition, after its stores are restored;
            it may read them through the context to rebuild in-memory indexes.
        counters: what the stage counts (name -> count since the process started), logged
            with the engine's own counters (``worker.progress``, ``worker.dump``).
        settle: called once per batch that held records of this stage, after every record
            and before any ``on_batch_end``, with every task of this stage the process owns
            (by partition) and its context; returns the partitions it made process
            something, whose ``on_batch_end`` is then called as well. The lead stage hands
            its tasks' forward promises over in memory here.
    """

    name: str
    source: TopicSpec
    stores: tuple[str, ...]
    task: Callable[[TaskContext], Task]
    counters: Callable[[], Mapping[str, int]] | None = None
    settle: Callable[[Mapping[int, tuple[Task, TaskContext]]], Sequence[int]] | None = None
