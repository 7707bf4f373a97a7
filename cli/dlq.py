"""``leadflow dlq show|replay``: inspect the dead-letter topic and send a fixed record back.

Two writers use ``leadflow.events.dlq`` with different header names (the worker prefixes
``leadflow.``, the projector adds ``reason``/``error``/``stage``/``group``); both are read
here into one :class:`DeadLetter`. See docs/operations.md, "Poison records".
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Generator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass

import click
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from rich.console import Console
from rich.table import Table

from leadflow.cli.options import settings_of
from leadflow.processors.errors import LeadflowError
from leadflow.streams.engine.loop import PARKED_EVENT, PARTITION_UNASSIGNED, RESUMED_BY
from leadflow.streams.kafka_offsets import EndNotReached, read_to_end, watermarks
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.topics import ALL_TOPICS, DLQ, record_headers, writer_partitioner

log = get_logger(__name__)

# Headers the dead-lettering added; everything else is the record's own and travels back.
_DLQ_HEADERS = frozenset(
    {"reason", "error", "source.topic", "source.partition", "source.offset", "stage", "group"}
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, whoever wrote it.

    Attributes:
        dlq_partition: where it sits in ``leadflow.events.dlq``.
        dlq_offset: its offset there.
        by: ``worker`` or ``projector:<group>``.
        reason: the short reason (projector) or ``<Exception>: <message>`` (worker).
        error: the projector's detail message ('' from the worker).
        source: ``topic:partition:offset`` of the original record.
        key: the original key, as text ('' when it had none).
        size: bytes of the original value.
        parked: for an event the lead stage parked while its lead waited for a merge and
            that failed when the lead resumed: its event id and the record that resumed
            the lead ('' otherwise). ``source`` is the event's own record, or the resuming
            one for a lead parked before the worker kept offsets (then this says so).
    """

    dlq_partition: int
    dlq_offset: int
    by: str
    reason: str
    error: str
    source: str
    key: str
    size: int
    parked: str = ""


def dead_letter(
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> DeadLetter:
    """Read either writer's headers into a :class:`DeadLetter`.

    Example:
        >>> dead_letter(0, 7, b"a1", b"xx", [("reason", b"bad_magic"), ("stage", b"projector"),
        ...     ("group", b"g"), ("source.topic", b"leadflow.events"),
        ...     ("source.partition", b"1"), ("source.offset", b"0")]).source
        'leadflow.events:1:0'
        >>> dead_letter(0, 8, None, b"", [("leadflow.reason", b"DecodeError: empty: no bytes"),
        ...     ("leadflow.source.topic", b"leadflow.events"),
        ...     ("leadflow.source.partition", b"1"), ("leadflow.source.offset", b"2")]).by
        'worker'
        >>> dead_letter(0, 9, b"k", b"xx", [("leadflow.reason", b"InvalidTransition: no"),
        ...     ("leadflow.source.topic", b"leadflow.events.by-lead"),
        ...     ("leadflow.source.partition", b"0"), ("leadflow.source.offset", b"2"),
        ...     ("leadflow.parked.event_id", b"s1"),
        ...     ("leadflow.parked.resumed_by", b"leadflow.events.by-lead:0:4")]).parked
        'event s1, parked for a merge, failed when leadflow.events.by-lead:0:4 resumed its lead'
    """
    h = {k: (v or b"").decode(errors="replace") for k, v in headers}
    worker = "leadflow.reason" in h
    prefix = "leadflow." if worker else ""
    source = ":".join(
        h.get(f"{prefix}source.{part}", "?") for part in ("topic", "partition", "offset")
    )
    parked = ""
    if PARKED_EVENT in h:
        resumed = h.get(RESUMED_BY, "?")
        parked = (
            f"event {h[PARKED_EVENT]}, parked for a merge, failed when {resumed} resumed its lead"
        )
        if resumed == source:
            # Parked before the worker kept the offset of the event's own record.
            parked += " (its own record unknown: source is the resuming record)"
    return DeadLetter(
        dlq_partition=partition,
        dlq_offset=offset,
        by="worker" if worker else f"{h.get('stage', '?')}:{h.get('group', '?')}",
        reason=h.get(f"{prefix}reason", "?"),
        error=h.get("error", ""),
        source=source,
        key=(key or b"").decode(errors="replace"),
        size=len(value or b""),
        parked=parked,
    )


def _read(
    settings: Settings, timeout: float = 3.0
) -> Generator[tuple[DeadLetter, Message], None, None]:
    """Every dead letter from the start, with its message (nothing committed)."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"leadflow-dlq-cli-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # The worker writes letters in its transactions: list the committed ones only.
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = consumer.list_topics(DLQ.name, timeout=10).topics.get(DLQ.name)
        if meta is None or meta.error is not None:
            raise LeadflowError(f"topic {DLQ.name} does not exist (leadflow topics create)")
        # From each partition's first record, wherever retention or a deletion moved it: an
        # offset 0 out of range reset to the end, and every letter was silently skipped.
        partitions = [TopicPartition(DLQ.name, p, OFFSET_BEGINNING) for p in meta.partitions]
        consumer.assign(partitions)
        pending: dict[tuple[str, int], int | None] = {(DLQ.name, p): None for p in meta.partitions}

        missed: dict[int, str] = {}

        def unreadable(message: Message) -> None:
            partition = int(message.partition() or 0)
            missed[partition] = str(message.error())
            pending.pop((DLQ.name, partition), None)  # counts as its end

        letters = read_to_end(consumer, pending, idle=timeout, on_error=unreadable)
        try:
            for message in letters:
                yield (
                    dead_letter(
                        int(message.partition() or 0),
                        int(message.offset() or 0),
                        message.key(),
                        message.value(),
                        record_headers(message),
                    ),
                    message,
                )
        except EndNotReached as exc:  # nothing more within the timeout
            missed.update({p: f"not read to its end in {timeout:g} s" for _t, p in exc.pending})
        _say_open_transactions(settings, consumer, sorted(set(meta.partitions) - set(missed)))
        if missed:
            # What follows (a list, "no dead letter from ...") may then be short of letters.
            log.warning("dlq.read_incomplete", partitions=missed)
            click.echo(
                f"warning: {DLQ.name} was not read whole, this may be incomplete: "
                + "; ".join(f"partition {p}: {why}" for p, why in sorted(missed.items())),
                err=True,
            )
    finally:
        consumer.close()


def _say_open_transactions(settings: Settings, consumer: Consumer, partitions: list[int]) -> None:
    """Name the partitions whose listing ended at a transaction still open.

    A ``read_committed`` read ends at a partition's last stable offset: the first record of
    a transaction still open (a worker mid-batch, or a dead transactional producer until
    the broker times its transaction out). Everything from there to the end, letters
    committed later included, is not listed yet; the read alone cannot tell. The count is
    of offsets, transaction markers included: "up to".
    """
    if not partitions:
        return
    # The end first: a transaction that commits in between can then only hide the gap.
    ends = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"leadflow-dlq-cli-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",  # its watermark: the end of the log
        }
    )
    deadline = time.monotonic() + 10
    held: dict[int, tuple[int, int]] = {}
    try:
        for p in partitions:
            end = watermarks(ends, TopicPartition(DLQ.name, p), deadline)[1]
            stable = watermarks(consumer, TopicPartition(DLQ.name, p), deadline)[1]
            if end > stable:
                held[p] = (stable, end - stable)
    except KafkaException as exc:
        log.warning("dlq.open_transactions_unchecked", error=str(exc))
        click.echo(
            f"warning: could not check {DLQ.name} for open transactions ({exc}); letters "
            "behind one would be missing from this",
            err=True,
        )
        return
    finally:
        ends.close()
    if not held:
        return
    log.warning(
        "dlq.open_transaction",
        partitions={p: {"stable_offset": at, "behind": n} for p, (at, n) in held.items()},
    )
    where = "; ".join(f"partition {p}: up to {n} records from offset {at}"
                      for p, (at, n) in held.items())  # fmt: skip
    click.echo(
        f"warning: {DLQ.name} was read up to a transaction still open; what follows it is not "
        f"listed: {where}. They show once it commits or aborts (its own records only if it "
        "commits); a dead producer's transaction is aborted after its transaction.timeout.ms "
        "(a worker's: LEADFLOW_WORKER_TRANSACTION_TIMEOUT_SECONDS, or at once when it restarts)",
        err=True,
    )


@click.group("dlq")
def dlq() -> None:
    """Inspect the dead-letter topic (leadflow.events.dlq) and replay fixed records."""


@dlq.command("show")
@click.option("--reason", help="Only letters whose reason contains this text.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def show_cmd(ctx: click.Context, reason: str | None, limit: int, fmt: str) -> None:
    """List dead letters: who refused them, why, and where they came from."""
    letters: list[DeadLetter] = []
    with closing(_read(settings_of(ctx))) as found:
        for letter, _message in found:
            if reason is None or reason in letter.reason:
                letters.append(letter)
            if len(letters) >= limit:
                break
    if fmt == "json":
        click.echo(json.dumps([asdict(x) for x in letters], indent=2))
        return
    parked = any(x.parked for x in letters)  # the column only when it says something
    table = Table("dlq", "by", "reason", "source", "key", "bytes", *(["parked"] if parked else []))
    for x in letters:
        table.add_row(
            f"{x.dlq_partition}:{x.dlq_offset}",
            x.by,
            x.reason,
            x.source,
            x.key,
            str(x.size),
            *([x.parked] if parked else []),
        )
    Console(width=200).print(table)


def _source(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    topic, _, rest = value.partition(":")
    partition, _, offset = rest.partition(":")
    if topic not in {t.name for t in ALL_TOPICS} or not partition.isdigit() or not offset.isdigit():
        raise click.BadParameter(
            f"{value!r} is not TOPIC:PARTITION:OFFSET of a leadflow topic (see `dlq show`)"
        )
    return value


@dlq.command("replay")
@click.option("--source", required=True, callback=_source, help="TOPIC:PARTITION:OFFSET.")
@click.option(
    "--key",
    help="Key to send it with (required when the record had none): the person key, "
    '\'["<workspace>","<device or lead id>"]\'.',
)
@click.pass_context
def replay_cmd(ctx: click.Context, source: str, key: str | None) -> None:
    """Send a dead letter's original bytes back to its source topic (after fixing the cause).

    The record must decode (a garbage record would only be dead-lettered again). Replaying
    a record that was in fact processed changes nothing: processors and ClickHouse dedupe
    by event id.
    """
    from leadflow.schemas.codec import DecodeError, codec_from_settings

    settings = settings_of(ctx)
    with closing(_read(settings)) as letters:
        message = next((m for x, m in letters if x.source == source), None)
    if message is None:
        raise click.ClickException(f"no dead letter from {source}")
    value = message.value() or b""
    try:
        codec_from_settings(settings).decode(value)
    except DecodeError as exc:
        raise click.ClickException(
            f"{source} does not decode ({exc.reason}); replaying it would only dead-letter it "
            "again: fix the producer instead"
        ) from None
    send_key = key.encode() if key else message.key()
    if not send_key:
        raise click.UsageError(f"{source} had no key: give --key (its person key)")
    headers: list[tuple[str, str | bytes | None]] = [
        (k, v)
        for k, v in record_headers(message)
        if k not in _DLQ_HEADERS and not k.startswith("leadflow.")
    ]
    topic, partition, _ = source.split(":")
    # Where its writer would put it: a by-lead record or an example on another partition
    # meets another task's state (a lead split in two), and the worker hashes keys as Java
    # does, not as librdkafka's default here would. Its own key: back to its own partition.
    producer = Producer(
        {**settings.kafka_client_config(), "acks": "all",
         "partitioner": writer_partitioner(topic)}
    )  # fmt: skip
    where = int(partition) if send_key == message.key() else PARTITION_UNASSIGNED
    delivered: list[int] = []

    def on_delivery(err: object, msg: Message) -> None:
        if err is None:
            delivered.append(msg.partition() or 0)

    producer.produce(
        topic, key=send_key, value=value, partition=where, headers=headers, on_delivery=on_delivery
    )
    if producer.flush(30) > 0 or not delivered:
        raise click.ClickException(f"Kafka did not acknowledge the replay to {topic}")
    click.echo(
        f"replayed {source} to {topic}:{delivered[0]} with key "
        f"{send_key.decode(errors='replace')!r}"
    )
