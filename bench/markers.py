"""Partitions per worker transaction, counted from the log after a run.

A Kafka transaction ends with a marker (commit or abort) on every partition it wrote to,
and a consumer never receives markers, so a partition's markers are its entries (end minus
start) less the records a read_uncommitted consumer receives there (aborted records
included). Every worker transaction sends its input offsets, so it writes one marker on
its group's partition of ``__consumer_offsets``: the markers there count the transactions
(the projector's commits are plain records). The collector's producer is idempotent, not
transactional, so every marker on a leadflow topic is the worker's.

A transaction's cost grows with the partitions it writes to, not with its records
(docs/benchmarks.md, session 13: about 1 ms per partition per transaction on this machine;
that count was taken from a kept broker's segments by a scratch script): this puts the
figure in ``bench.pipeline``. Read it on a broker the run had to itself, before any
compaction (the bench's brokers live minutes; changelog segments roll after hours).

The same pass counts leadflow's own control records per topic and kind (header
``leadflow.marker``: the identity stage's, the lead stage's forward and position promises,
the trainer's; ``leadflow.heartbeat``): the promises a batch sends to every partition of a
topic are what spreads a transaction over many partitions. It also counts every record per
topic (changelogs included): what the pipeline writes per inbound event.

A count covers the whole log, or the entries between two :func:`ends` snapshots (one phase
of a run, e.g. ``bench.pipeline``'s steady phase).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from leadflow.streams.control import HEARTBEAT, MARKER
from leadflow.streams.kafka_offsets import TP, watermarks
from leadflow.streams.settings import Settings

OFFSETS_TOPIC = "__consumer_offsets"
SKIPPED = frozenset({"__transaction_state"})  # the coordinator's own log: no markers


def markers(entries: int, records: int) -> int:
    """Markers in a partition of ``entries`` offsets holding ``records`` records.

    Example:
        >>> markers(entries=12, records=9)
        3
    """
    return entries - records


def per_transaction(by_topic: Mapping[str, int]) -> tuple[float, dict[str, float]]:
    """Partitions written per transaction, in all and per topic (``__consumer_offsets`` too).

    ``by_topic``: markers per topic, ``__consumer_offsets``' being one per transaction.

    Example:
        >>> total, parts = per_transaction({"__consumer_offsets": 4, "a": 8, "b": 2})
        >>> total, parts["a"], parts["__consumer_offsets"]
        (3.5, 2.0, 1.0)
    """
    transactions = by_topic.get(OFFSETS_TOPIC, 0)
    if not transactions:
        return 0.0, {}
    parts = {topic: n / transactions for topic, n in by_topic.items() if n}
    return sum(parts.values()), parts


@dataclass
class LogCounts:
    """What :func:`count` found: transaction markers and leadflow's control records."""

    markers: dict[str, int] = field(default_factory=dict)  # topic -> transaction markers
    # (topic, kind) -> leadflow control records: a marker's stage, or "heartbeat".
    control: dict[tuple[str, str], int] = field(default_factory=dict)
    # topic -> records (data and control, aborted ones included; no markers).
    records: dict[str, int] = field(default_factory=dict)


def control_kind(headers: list[tuple[str, bytes]] | None) -> str | None:
    """A leadflow control record's kind (its marker's stage, or ``heartbeat``), else None.

    Example:
        >>> control_kind([("leadflow.marker", b"forward")]), control_kind([("x", b"1")])
        ('forward', None)
    """
    for key, value in headers or ():
        if key == MARKER:
            return value.decode()
        if key == HEARTBEAT:
            return "heartbeat"
    return None


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"bench-markers-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_uncommitted",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def _bounds(consumer: Consumer) -> dict[TP, tuple[int, int]]:
    """Every counted partition's (low, high) watermarks on the broker."""
    topics = consumer.list_topics(timeout=30).topics
    return {
        (name, p): watermarks(consumer, TopicPartition(name, p), time.monotonic() + 30)
        for name, meta in topics.items()
        if name not in SKIPPED
        for p in meta.partitions
    }


def ends(settings: Settings) -> dict[TP, int]:
    """Every counted partition's end offset now: where a phase to :func:`count` starts or ends.

    The end (high watermark) of a partition is past every transaction marker written so
    far; a transaction still open at the snapshot has its marker counted in the phase it
    ends in.
    """
    consumer = _consumer(settings)
    try:
        return {tp: high for tp, (_, high) in _bounds(consumer).items()}
    finally:
        consumer.close()


def count(
    settings: Settings,
    timeout: float = 120.0,
    *,
    since: Mapping[TP, int] | None = None,
    until: Mapping[TP, int] | None = None,
) -> LogCounts:
    """Markers, control records and records per topic on the broker of ``settings``.

    Reads every partition from ``since`` (an :func:`ends` snapshot; default its start) to
    ``until`` (a later snapshot; default its end now). A partition created after ``since``
    is read from its start.
    """
    consumer = _consumer(settings)
    try:
        bounds = {}
        for tp, (low, high) in _bounds(consumer).items():
            start = max(low, (since or {}).get(tp, low))
            bounds[tp] = (start, max(start, min(high, (until or {}).get(tp, high))))
        entries: Counter[str] = Counter()
        for (topic, _), (low, high) in bounds.items():
            entries[topic] += high - low
        records: Counter[str] = Counter()
        control: Counter[tuple[str, str]] = Counter()
        open_parts = {tp for tp, (low, high) in bounds.items() if high > low}
        consumer.assign([TopicPartition(t, p, bounds[(t, p)][0]) for t, p in open_parts])
        deadline = time.monotonic() + timeout
        while open_parts:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(open_parts)} partitions not read to their end")
            for message in consumer.consume(1000, 1.0):
                key = (str(message.topic()), int(message.partition() or 0))
                if message.error() is not None:
                    open_parts.discard(key)  # end of partition (or gone): read what there was
                    continue
                offset = int(message.offset() or 0)
                if key not in open_parts or offset >= bounds[key][1]:
                    open_parts.discard(key)  # past the phase's end
                    continue
                records[key[0]] += 1
                kind = control_kind(message.headers())
                if kind is not None:
                    control[(key[0], kind)] += 1
                if offset + 1 >= bounds[key][1]:
                    open_parts.discard(key)
    finally:
        consumer.close()
    found = {topic: markers(n, records[topic]) for topic, n in entries.items()}
    return LogCounts(found, dict(control), dict(records))
