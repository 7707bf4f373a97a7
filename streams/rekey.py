"""Re-key an inbound log written before keys carried the workspace (issue 19).

Records of ``leadflow.events`` written before issue 14 are keyed by the plain device or
lead id (``Event.person_id``); the worker and the projector now insist on
``Event.person_key`` (``["<workspace>","<id>"]``) and dead-letter the old ones as
``wrong_key``. :func:`rekey` copies a topic into another one, every record with the key the
collector would give it today, its value bytes and headers unchanged:

- keyed by its person key already: copied as it is (``kept``, ``person_key``);
- keyed by its plain id, as the collector keyed it before: copied with the person key
  (``rekeyed``, ``raw_id``);
- anything else goes to ``leadflow.events.dlq`` with its reason, as the worker would have
  refused it then and now: bytes that do not decode (the codec's reason, e.g.
  ``bad_magic``), a record that is no inbound event (``wrong_record_type``), an event that
  names nobody (``no_person``), no key (``missing_key``) or another person's key
  (``wrong_key``);
- collector heartbeats (header ``leadflow.heartbeat``) belong to the partition they were
  written to, which the new keys change: not copied (``skipped``, ``heartbeat``).

Exactly once: one Kafka transaction per batch holds the copies, the dead letters and the
source offsets (consumer group ``leadflow-rekey.<source>.<target>``), so a run that dies
leaves nothing half-copied for ``read_committed`` readers (the worker and the projector)
and the next run resumes after the last committed batch; a run after a finished one copies
only what was appended since. A target that already holds records but has no progress in
the group (someone else wrote it, or the group was deleted) is refused, so the same source
is never copied twice into one target. The run reads the source up to its end at the start
(read_committed); records appended later are for the next run.

Partitions follow the collector's producer (librdkafka's default partitioner on the same
key), so a person's re-keyed records sit on the partition its new events go to, in their
original order (one plain id maps to one person key per workspace, and one source
partition is read in order). docs/operations.md, "Records keyed before the workspace".
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from leadflow.processors.errors import InvalidEvent, LeadflowError
from leadflow.processors.events import Event
from leadflow.schemas.codec import Codec, DecodeError, codec_from_settings
from leadflow.streams.control import HEARTBEAT
from leadflow.streams.kafka_offsets import (
    EndNotReached,
    committed_offsets,
    read_to_end,
    topic_watermarks,
)
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.topics import (
    COLLECTOR_PARTITIONER,
    DLQ,
    EVENTS,
    TopicSpec,
    create_topics,
    dead_letter_headers,
    record_headers,
)

log = get_logger(__name__)

Headers = Sequence[tuple[str, bytes | None]]


class RekeyError(LeadflowError):
    """The re-key cannot start or cannot go on (nothing uncommitted is left behind)."""


class Outcome(StrEnum):
    """What became of one source record."""

    REKEYED = "rekeyed"
    KEPT = "kept"
    DEAD = "dead-lettered"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one record: the outcome, why, and the key to copy it with."""

    outcome: Outcome
    reason: str
    key: bytes | None = None
    error: str = ""


def decide(key: bytes | None, value: bytes | None, headers: Headers, codec: Codec) -> Decision:
    """The fate of one record of an old inbound log (see the module docstring).

    Example:
        >>> from leadflow.processors.events import Kind
        >>> from leadflow.schemas.codec import SingleObjectCodec
        >>> codec = SingleObjectCodec()
        >>> e = codec.encode(Event("e1", Kind.VISIT, "ws", 1, 1, anonymous_id="a1"))
        >>> d = decide(b"a1", e, [], codec)
        >>> d.outcome, d.reason, d.key
        (<Outcome.REKEYED: 'rekeyed'>, 'raw_id', b'["ws","a1"]')
        >>> decide(b'["ws","a1"]', e, [], codec).outcome, decide(b"b2", e, [], codec).reason
        (<Outcome.KEPT: 'kept'>, 'wrong_key')
        >>> decide(b"a1", b"nope", [], codec).reason
        'bad_magic'
    """
    if any(name == HEARTBEAT for name, _ in headers):
        return Decision(Outcome.SKIPPED, "heartbeat")
    try:
        obj = codec.decode(value or b"")
    except DecodeError as exc:
        return Decision(Outcome.DEAD, exc.reason, error=str(exc))
    except LeadflowError as exc:
        return Decision(Outcome.DEAD, "invalid_event", error=str(exc))
    if not isinstance(obj, Event):
        return Decision(
            Outcome.DEAD, "wrong_record_type", error=f"{type(obj).__name__} on an inbound log"
        )
    try:
        person_key = obj.person_key.encode()
        raw = obj.person_id.encode()
    except InvalidEvent as exc:
        return Decision(Outcome.DEAD, "no_person", error=str(exc))
    if key == person_key:
        return Decision(Outcome.KEPT, "person_key", person_key)
    if key == raw:
        return Decision(Outcome.REKEYED, "raw_id", person_key)
    shown = (key or b"").decode(errors="replace")
    if not key:
        return Decision(Outcome.DEAD, "missing_key", error=f"event {obj.event_id}: no key")
    return Decision(
        Outcome.DEAD,
        "wrong_key",
        error=f"event {obj.event_id}: keyed {shown!r}, neither its id nor its person key",
    )


@dataclass
class RekeyStats:
    """Counts of one run, per outcome and reason; ``total`` is what the run set out to read."""

    total: int = 0
    read: int = 0
    batches: int = 0
    counts: Counter[tuple[Outcome, str]] = field(default_factory=Counter)
    # Records between where the last run stopped and the log's start: gone to retention
    # before this run could copy them.
    expired: int = 0

    def of(self, outcome: Outcome) -> int:
        """Records with this outcome, whatever the reason."""
        return sum(n for (o, _), n in self.counts.items() if o is outcome)

    def lines(self) -> list[str]:
        """One line per outcome and reason, e.g. ``rekeyed  raw_id  1200``."""
        lines = [f"{o.value:13} {r:18} {n}" for (o, r), n in sorted(self.counts.items())]
        if self.expired:
            lines.append(f"{'not copied':13} {'expired':18} {self.expired}")
        return lines


def progress_group(source: str, target: str) -> str:
    """The consumer group whose offsets are the run's progress (and its restart point)."""
    return f"leadflow-rekey.{source}.{target}"


def rekey(
    settings: Settings,
    source: str,
    target: str,
    *,
    dry_run: bool = False,
    batch_size: int = 5000,
    on_batch: Callable[[RekeyStats], None] | None = None,
    on_start: Callable[[RekeyStats], None] | None = None,
) -> RekeyStats:
    """Copy ``source`` to ``target`` with person keys (see the module docstring).

    ``dry_run`` reads and counts, writes nothing and commits nothing. A missing ``target``
    is created like ``leadflow.events`` (kept forever, ``LEADFLOW_TOPIC_PARTITIONS``).

    Raises:
        RekeyError: same topic, a missing source, a target that holds records this re-key
            did not write, or Kafka refusing the transaction.
    """
    if source == target:
        raise RekeyError("--from and --to are the same topic: re-key into a new topic")
    group = progress_group(source, target)
    codec = codec_from_settings(settings)
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    producer: Producer | None = None
    try:
        deadline = time.monotonic() + 30
        ends = topic_watermarks(consumer, [source], deadline)
        if not ends:
            raise RekeyError(f"topic {source} does not exist")
        partitions = [TopicPartition(source, p) for _, p in ends]
        committed = committed_offsets(consumer, partitions, time.monotonic() + 60)
        started = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
        if not dry_run:
            if not topic_watermarks(consumer, [DLQ.name], deadline):
                raise RekeyError(f"topic {DLQ.name} does not exist (leadflow topics create)")
            _check_target(settings, consumer, target, group, bool(started), deadline)
        stats = RekeyStats()
        start: dict[int, int] = {}
        for (_, p), (low, high) in ends.items():
            start[p] = max(started.get(p, low), low)
            stats.total += max(0, high - start[p])
            if started.get(p, low) < low:
                stats.expired += low - started[p]
                log.warning(
                    "rekey.expired",
                    partition=f"{source}:{p}",
                    resumed_at=started[p],
                    log_start=low,
                    records=low - started[p],
                    why="removed by retention since the last run stopped; not copied",
                )
        if on_start is not None:
            on_start(stats)
        # Up to the end each partition had at the start; what is appended later is for the
        # next run (the copy resumes from the group's offsets).
        pending: dict[tuple[str, int], int | None] = {
            (source, p): high for (_, p), (_, high) in ends.items() if start[p] < high
        }
        if not pending:
            return stats
        consumer.assign([TopicPartition(source, p, start[p]) for _, p in sorted(pending)])
        if not dry_run:
            producer = Producer(
                {
                    **settings.kafka_client_config(),
                    # One id per (source, target): a second run of the same copy fences the first.
                    "transactional.id": group,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 20,
                    "compression.type": "lz4",
                    "on_delivery": _delivery_failed,
                    # The collector's: a re-keyed person sits where its new events go.
                    "partitioner": COLLECTOR_PARTITIONER,
                }
            )
            producer.init_transactions(30)
        while pending:
            try:
                _one_batch(consumer, producer, codec, target, group, pending, batch_size, stats)
            except KafkaException as exc:
                raise RekeyError(
                    f"Kafka refused a batch ({exc.args[0]}): nothing of it is committed; "
                    f"run the same command again to resume"
                ) from None
            stats.batches += 1
            if on_batch is not None:
                on_batch(stats)
        log.info(
            "rekey.done",
            source=source,
            target=target,
            dry_run=dry_run,
            read=stats.read,
            **{f"{o.value}.{r}": n for (o, r), n in stats.counts.items()},
        )
        return stats
    finally:
        consumer.close()
        if producer is not None:
            producer.close()


def _delivery_failed(error: KafkaError | None, message: Message) -> None:
    if error is not None:
        log.error("rekey.delivery_failed", topic=message.topic(), error=str(error))


def _check_target(
    settings: Settings,
    consumer: Consumer,
    target: str,
    group: str,
    resuming: bool,
    deadline: float,
) -> None:
    """Create a missing target; refuse a target whose contents do not match the progress."""
    ends = topic_watermarks(consumer, [target], deadline)
    if not ends:
        if resuming:
            raise RekeyError(
                f"{target} does not exist but group {group} says part of the copy is done: "
                f"delete the group to copy from the start"
            )
        spec = TopicSpec(target, EVENTS.key, f"{EVENTS.name} re-keyed (leadflow replay rekey)")
        create_topics(settings, [spec])
        return
    held = sum(high - low for low, high in ends.values())
    if held and not resuming:
        raise RekeyError(
            f"{target} already holds {held} records and group {group} has no progress for "
            "this copy: re-key into a new, empty topic (a second copy would double every "
            "record)"
        )
    if resuming and not held:
        raise RekeyError(
            f"{target} is empty but group {group} says part of the copy is done (was the "
            "topic recreated?): delete the group to copy from the start"
        )


def _read_error(message: Message) -> None:
    raise RekeyError(f"reading {message.topic()}[{message.partition()}]: {message.error()}")


def _one_batch(
    consumer: Consumer,
    producer: Producer | None,
    codec: Codec,
    target: str,
    group: str,
    pending: dict[tuple[str, int], int | None],
    batch_size: int,
    stats: RekeyStats,
) -> None:
    """Read up to ``batch_size`` records and copy them in one transaction with their offsets.

    ``pending``: the partitions not copied to their end yet (:func:`read_to_end` removes
    each one as it gets there).
    """
    if producer is not None:
        producer.begin_transaction()
    positions: dict[int, int] = {}
    taken = 0
    try:
        for message in read_to_end(consumer, pending, idle=60, on_error=_read_error):
            taken += 1
            _copy(message, producer, codec, target, group, stats)
            positions[int(message.partition() or 0)] = int(message.offset() or 0) + 1
            if taken >= batch_size:
                break
    except EndNotReached as exc:
        partitions = sorted(p for _, p in exc.pending)
        raise RekeyError(f"no record and no end of partitions {partitions} for 60 s") from exc
    stats.read += taken
    if producer is None:
        return
    if positions:
        topic = next(iter(consumer.assignment())).topic
        offsets = [TopicPartition(topic, p, o) for p, o in sorted(positions.items())]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
    producer.commit_transaction(60)


def _copy(
    message: Message,
    producer: Producer | None,
    codec: Codec,
    target: str,
    group: str,
    stats: RekeyStats,
) -> None:
    headers = record_headers(message)
    decision = decide(message.key(), message.value(), headers, codec)
    stats.counts[(decision.outcome, decision.reason)] += 1
    if producer is None or decision.outcome is Outcome.SKIPPED:
        return
    if decision.outcome is Outcome.DEAD:
        producer.produce(
            DLQ.name,
            key=message.key(),
            value=message.value(),
            headers=dead_letter_headers(
                message, decision.reason, decision.error, stage="rekey", group=group
            ),
        )
        log.warning(
            "rekey.dead_letter",
            reason=decision.reason,
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
        )
    else:
        producer.produce(target, key=decision.key, value=message.value(), headers=[*headers])
    producer.poll(0)
