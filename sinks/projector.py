"""The ClickHouse projector: contract topics in, rows out, offsets committed last.

The loop, per batch:

1. consume up to ``batch_size`` records from the projected topics (confluent-kafka, manual
   commits): wait for the first, then at most ``linger`` seconds for more (a batch that
   waited for ``batch_size`` held a trickle's rows back for the whole poll timeout);
2. decode each (the codec) and map it to rows (:mod:`leadflow.sinks.projection`); a record
   that cannot be decoded or breaks an invariant goes to ``leadflow.events.dlq`` with its
   original key, value and headers plus ``reason``/``error``/source headers, and the batch
   goes on;
3. insert the rows table by table through clickhouse-connect, each insert carrying a
   deduplication token derived from the batch's offsets, retrying with exponential
   backoff while ClickHouse is unreachable (the batch is kept; nothing is committed);
4. flush the dead-letter producer, then commit the batch's offsets synchronously, and with
   them the position of every assigned partition the consumer moved past entries it never
   delivers (an aborted transaction's records and markers, a trailing commit marker:
   :func:`leadflow.streams.stall.skipped_to`, as the worker's engine does); an idle step
   commits only those, so the group's lag reaches 0 on such tails.

Between batches, every :data:`WATCH_EVERY` seconds, a stall watch looks at each assigned
partition (:class:`leadflow.streams.stall.StallWatch`): one behind its read_committed end
whose position has not moved for ``projector_stall_seconds`` gets a new consumer (librdkafka
#5153: an assigned consumer can stop fetching after a broker restart, without an error, until
it is recreated; the collector's PII key reader did, session 18). If the new consumer does not
move it either, :class:`ProjectorStalled` is raised and ``leadflow projector`` exits 70 for
its supervisor. Time spent riding out ClickHouse or the broker is not a stall.

Crash anywhere before step 4 and the batch is delivered again. That is safe because every
table is a ReplacingMergeTree keyed by the record's own id and analysts read through the
deduplicating ``v_*`` views (see docs/analytics.md): a re-delivered record can never be
counted twice, whether or not the batch boundaries are the same the second time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from leadflow.processors.bounds import BoundsTable, check_bounds
from leadflow.processors.bounds_load import load_bounds
from leadflow.processors.derived import (
    BecameSQL,
    IdentityLinked,
    LeadMerged,
    LeadScored,
    SlaBreached,
    StageChanged,
)
from leadflow.processors.errors import InvalidEvent, LeadflowError
from leadflow.processors.events import Event, Kind
from leadflow.processors.identity import check_record_key
from leadflow.schemas.codec import Codec, DecodeError, codec_from_settings
from leadflow.sinks.erasure import erase_person
from leadflow.sinks.migrations import migrate
from leadflow.sinks.paths import refresh_margin, refresh_paths
from leadflow.sinks.projection import Row, Rows, dead_letter_rows, rows_for
from leadflow.sinks.tables import PROJECTED_TABLES, TableSpec, check_identifier
from leadflow.streams.control import is_control
from leadflow.streams.engine.ends import EndOffsets
from leadflow.streams.logs import Throttle, get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.stall import PrefetchQueue, StallWatch, Verdict, behind, skipped_to
from leadflow.streams.topics import (
    DLQ,
    EVENTS,
    IDENTITIES,
    LEAD_BECAME_SQL,
    LEAD_MERGED,
    LEAD_SCORED,
    LEAD_STAGE_CHANGED,
    SLA_BREACHED,
    dead_letter_headers,
)

log = get_logger(__name__)

PROJECTED_TOPICS: tuple[str, ...] = (
    EVENTS.name, LEAD_STAGE_CHANGED.name, LEAD_SCORED.name, LEAD_BECAME_SQL.name,
    SLA_BREACHED.name, IDENTITIES.name, LEAD_MERGED.name, DLQ.name,
)  # fmt: skip
# The dead-letter topic is projected from its headers only (``dead_letters``: who refused
# what, why, which fields; never the value), and a record of it is never dead-lettered.
DEFAULT_GROUP = "leadflow-projector"

# What each projected topic carries. A record of another type is a producer's bug: it goes
# to the dead-letter topic instead of becoming a row in the wrong table.
TOPIC_RECORDS: dict[str, type] = {
    EVENTS.name: Event, LEAD_STAGE_CHANGED.name: StageChanged, LEAD_SCORED.name: LeadScored,
    LEAD_BECAME_SQL.name: BecameSQL, SLA_BREACHED.name: SlaBreached,
    IDENTITIES.name: IdentityLinked, LEAD_MERGED.name: LeadMerged,
}  # fmt: skip


def admission_error(
    topic: str, key: bytes | None, obj: object, bounds: BoundsTable | None = None
) -> tuple[str, str] | None:
    """``(reason, error)`` when a decoded record does not belong where it was found.

    The inbound log admits only events keyed by their person, with amounts and counts
    within their workspace's bounds (the worker applies the same rules, so ClickHouse never
    counts an event the worker dead-lettered; a campaign cost reaches only the projector).

    Example:
        >>> from leadflow.processors.derived import Stage
        >>> scored = LeadScored("s", "ws", "L1", 1, 0.0, 0.0, None, None, (), "e", Stage.LEAD)
        >>> admission_error("leadflow.events", b"L1", scored)[0]
        'wrong_record_type'
        >>> admission_error("leadflow.lead-scored", b"L1", scored) is None
        True
    """
    expected = TOPIC_RECORDS.get(topic)
    if expected is not None and not isinstance(obj, expected):
        return (
            "wrong_record_type",
            f"{type(obj).__name__} on {topic}, which carries {expected.__name__}",
        )
    if topic == EVENTS.name and isinstance(obj, Event):
        try:
            _ = obj.person_key
        except InvalidEvent as exc:
            return "no_person", str(exc)
        try:
            check_record_key(key, obj)
        except InvalidEvent as exc:
            return ("missing_key" if not key else "wrong_key"), str(exc)
        try:
            check_bounds(obj, bounds or BoundsTable())
        except InvalidEvent as exc:
            return "out_of_bounds", str(exc)
    return None


# Commit errors while the group's coordinator moves to another broker (one died).
MOVED = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._WAIT_COORD,
    }
)
# Offset lookups while a partition's leadership moves (a broker restarted or died): the
# admin client's metadata is behind the cluster's for a moment.
LEADER_MOVING = frozenset(
    {
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
    }
)
# Commit errors that mean the partitions were reassigned meanwhile.
REBALANCED = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._ASSIGNMENT_LOST,
    }
)


class ProjectorError(LeadflowError):
    """The projector cannot go on (e.g. the dead-letter topic refuses records)."""


class ProjectorStalled(ProjectorError):
    """A partition behind its end did not move, not even with a new consumer."""


# Seconds between two looks of the stall watch (as the worker's).
WATCH_EVERY = 5.0
# Seconds between two ``projector.progress`` lines (as the worker's ``worker.progress``).
PROGRESS_EVERY = 30.0


@dataclass(slots=True)
class ProjectorStats:
    """What one run did (for logs, tests and the CLI)."""

    records: int = 0
    rows: int = 0
    dead_lettered: int = 0
    batches: int = 0
    # Failed ClickHouse calls (migrations and erasures included), each retried.
    insert_retries: int = 0
    commit_retries: int = 0  # offset commits retried while the group coordinator moved
    # Consumers replaced because a partition behind its end did not move (the stall watch).
    stall_rebuilds: int = 0
    # Commits that moved a partition past entries never delivered (and the first commit of
    # a partition's position that this process has not committed yet).
    skip_commits: int = 0
    # Consume errors UNKNOWN_TOPIC_OR_PART: a projected topic (or partition) that does not
    # exist, deleted or never created. Nothing of it is projected, yet the rest reads as
    # caught up: counted (and logged) so that is not taken for an empty topic.
    unknown_topic_errors: int = 0
    per_table: dict[str, int] = field(default_factory=dict)


def batch_token(table: str, offsets: Sequence[tuple[str, int, int, int]]) -> str:
    """The insert deduplication token of ``table``'s rows from one batch.

    ``offsets`` holds ``(topic, partition, first, last)`` per partition in the batch. A
    retried insert of the same batch (say, the first attempt succeeded but its response was
    lost) carries the same token, and ClickHouse drops it instead of writing a second part.

    Example:
        >>> batch_token("events", [("t", 0, 5, 9)]) == batch_token("events", [("t", 0, 5, 9)])
        True
        >>> batch_token("events", [("t", 0, 5, 9)]) == batch_token("deals", [("t", 0, 5, 9)])
        False
    """
    text = table + "|" + ";".join(f"{t}:{p}:{a}-{b}" for t, p, a, b in sorted(offsets))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def insert_table(
    client: Any,
    database: str,
    table: TableSpec,
    rows: Sequence[Row],
    spans: Sequence[tuple[str, int, int, int]] = (),
    types: dict[str, Sequence[Any]] | None = None,
) -> None:
    """Insert ``rows`` into ``table`` (one insert; a token from ``spans`` when given).

    ``types``: the column types of each table as the server described them, by table name,
    filled by the first insert into a table and reused by the next ones. Without it the
    client asks the server (``DESCRIBE TABLE``) before every insert, a query that took a
    seventh of the projector's insert time (docs/benchmarks.md, session 30). Whoever keeps
    ``types`` forgets a table's entry when an insert into it fails or a migration runs.
    """
    name = f"{check_identifier(database, 'database')}.{table.name}"
    columns = list(table.insert_columns)
    known = None if types is None else types.get(table.name)
    if types is not None and known is None:
        known = types[table.name] = client.create_insert_context(name, columns).column_types
    settings = {"insert_deduplication_token": batch_token(table.name, spans)} if spans else None
    client.insert(name, list(rows), column_names=columns, column_types=known, settings=settings)


def insert_rows(client: Any, database: str, rows: Rows) -> None:
    """Insert every table's rows, no retries (tests, replays of in-memory objects)."""
    for table in PROJECTED_TABLES:
        if rows.by_table.get(table.name):
            insert_table(client, database, table, rows.by_table[table.name])


DEFAULT_LINGER = 0.2
"""Seconds a batch waits for more records after its first (``--linger-ms``).

Measured in docs/benchmarks.md (session 14): waiting for ``batch_size`` records for up to
the 1 s poll timeout, as the projector did, put ack -> row p99 over 2 s with live traffic.
"""

FETCH_MIN_BYTES = 256 * 1024
"""What a projector fetch waits for (at most half the linger): about a full batch's records."""


class Projector:
    """Consumes the contract topics and keeps the ClickHouse tables in step.

    Args:
        settings: Kafka connection settings (and the codec choice).
        client: a clickhouse-connect client (chdb or HTTP).
        database: the target database (``leadflow`` in production).
        group_id: the consumer group; a replay into a fresh database uses a fresh group.
        batch_size: records per batch (one insert per table per batch).
        linger: how long a batch waits for more records after its first, seconds: the
            most consuming adds to a row's freshness, and under a trickle the least time
            between two inserts into a table (ClickHouse makes a part per insert).
        codec: decodes record values; defaults to the settings' codec.
        max_backoff: the longest wait between insert retries, seconds.
        sleep: how to wait between retries (tests pass a fake).
        on_batch: called with the running stats after each committed batch (progress).
        bounds: amounts and counts accepted per workspace (default: ``LEADFLOW_BOUNDS_FILE``).
        paths_every: refresh the attribution path tables (sinks/paths.py) at most this
            often, seconds, after committed batches, and once when the topics run dry;
            ``None`` never (reports refresh them before they read anyway).
        stall_after: seconds a partition behind its end may stand still before the stall
            watch acts (default: ``LEADFLOW_PROJECTOR_STALL_SECONDS``).
        watch_every: seconds between two looks of the stall watch.
    """

    def __init__(
        self,
        settings: Settings,
        client: Any,
        database: str,
        *,
        group_id: str = DEFAULT_GROUP,
        batch_size: int = 2000,
        linger: float = DEFAULT_LINGER,
        codec: Codec | None = None,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        on_batch: Callable[[ProjectorStats], None] | None = None,
        bounds: BoundsTable | None = None,
        paths_every: float | None = 10.0,
        stall_after: float | None = None,
        watch_every: float = WATCH_EVERY,
    ) -> None:
        self.settings = settings
        self.bounds = bounds if bounds is not None else load_bounds(settings.bounds_file)
        self.client = client
        self.database = check_identifier(database, "database")
        self.group_id = group_id
        self.batch_size = batch_size
        self.linger = linger
        self.codec = codec or codec_from_settings(settings)
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.stats = ProjectorStats()
        self.on_batch = on_batch
        self.caught_up_at_end = False
        self._migrated = False
        self._types: dict[str, Sequence[Any]] = {}  # insert_table's column types, by table
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self.paths_every = paths_every
        self._paths_pending = False
        self._paths_at = time.monotonic()
        # What this process committed per partition (a partition it has not committed
        # yet counts as -1, so its first known position is committed once).
        self._committed: dict[tuple[str, int], int] = {}
        self._unknown_log = Throttle(10.0)  # librdkafka repeats the error at every poll
        self.stall_after = (
            stall_after if stall_after is not None else (settings.projector_stall_seconds)
        )
        self.watch_every = watch_every
        self._watches: dict[tuple[str, int], StallWatch] = {}
        self._ends: EndOffsets | None = None  # the watch's side thread, started at its first look
        # The group's committed offsets as of the current assignment (_assigned_at).
        self._started: dict[tuple[str, int], int] = {}
        self._next_watch = time.monotonic() + watch_every
        self._next_progress = time.monotonic() + PROGRESS_EVERY
        self._troubles = 0
        self._queue = PrefetchQueue()  # since the stall watch's last look: full batches only?
        self._ends_log = Throttle(60.0)

    # -- lifecycle -------------------------------------------------------------------------

    def _migrate(self, stop_event: threading.Event) -> bool:
        """Apply the migrations, retrying with backoff while ClickHouse is unreachable."""
        delay = 0.5
        while not self._migrated:
            try:
                migrate(self.client, self.database, self.settings.clickhouse_cluster)
                self._types.clear()
                self._migrated = True
            except LeadflowError:
                raise  # edited migration history: retrying cannot help
            except Exception as exc:  # unreachable or failing server: wait and retry
                if stop_event.is_set():
                    return False
                self.stats.insert_retries += 1
                log.warning("projector.migrate_failed", retry_in=delay, error=str(exc))
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        return True

    def consumer_config(self) -> dict[str, Any]:
        """The consumer's configuration: the group's, and fetches sized for batches.

        A batch takes what arrives within the linger, so a fetch may wait half of it for
        ``FETCH_MIN_BYTES``: with the broker's default (answer at the first byte), each
        worker commit's markers, written partition by partition, let the pending fetch
        return with the first partition's records and the next ones follow in more
        fetches. Measured in docs/benchmarks.md (session 30): catch-up +5 %, broker CPU
        -5 %; a quiet stream's first record waits up to half the linger more.

        Example:
            >>> from leadflow.streams.settings import load_settings
            >>> p = Projector(load_settings(), client=None, database="leadflow", bounds=None)
            >>> c = p.consumer_config()
            >>> c["fetch.wait.max.ms"], c["fetch.min.bytes"], c["enable.auto.commit"]
            (100, 262144, False)
        """
        return {
            **self.settings.kafka_client_config(),
            "group.id": self.group_id,
            # A restart after a kill -9 waits for the dead member's session: kept short.
            **self.settings.kafka_group_config(),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.min.bytes": FETCH_MIN_BYTES,
            "fetch.wait.max.ms": int(self.linger * 500),
        }

    def _open(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self.consumer_config())
            self._consumer.subscribe(list(PROJECTED_TOPICS), on_assign=self._on_assign)
            self._producer = Producer(
                {**self.settings.kafka_client_config(), "acks": "all", "linger.ms": 5}
            )
        return self._consumer

    def _on_assign(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        # Another member may have committed meanwhile: the stall watch asks the group again.
        self._started = {}

    def close(self) -> None:
        """Leave the group and release the clients (safe to call twice)."""
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        self._close_consumer()
        if self._ends is not None:
            self._ends.stop()
            self._ends = None

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # -- running ---------------------------------------------------------------------------

    def run(self, stop_event: threading.Event, poll_timeout: float = 1.0) -> ProjectorStats:
        """Project until ``stop_event`` is set; return what was done."""
        try:
            while not stop_event.is_set():
                self.step(poll_timeout, stop_event)
                self._look()
        finally:
            self.close()
        return self.stats

    def run_until_idle(
        self, max_seconds: float = 60.0, poll_timeout: float = 0.5
    ) -> ProjectorStats:
        """Project until every assigned partition is at its end (or ``max_seconds`` passed).

        For tests and the demo: "idle" means the group has an assignment and the position
        of each assigned partition has reached its high watermark.
        """
        deadline = time.monotonic() + max_seconds
        stop = threading.Event()
        try:
            while time.monotonic() < deadline:
                consumed = self.step(poll_timeout, stop)
                if consumed == 0 and self._caught_up():
                    self.caught_up_at_end = True
                    break
                self._look()
        finally:
            self.close()
        log.info("projector.idle", group=self.group_id, records=self.stats.records)
        return self.stats

    def _caught_up(self) -> bool:
        consumer = self._open()
        assignment = consumer.assignment()
        if not assignment:
            log.debug("projector.waiting_for_assignment", group=self.group_id)
            return False
        positions = consumer.position(assignment)
        try:
            # The group's offsets come from its coordinator: NOT_COORDINATOR while it moves
            # off a restarted broker (session 26's fresh-clone CI died of it here).
            started = self._assigned_at(consumer, positions)
            ends = self._offsets(positions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
            starts = self._offsets(positions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        except KafkaException as exc:
            error = exc.args[0]
            if not (error.retriable() or error.code() in MOVED | LEADER_MOVING):
                raise
            # Not known yet, so not caught up: asked again at the next idle poll, with fresh
            # metadata (a cluster test's run_until_idle died of UNKNOWN_LEADER_EPOCH here
            # right after a broker restart, session 18).
            self._admin = None
            log.warning("projector.end_offsets_retry", error=str(error))
            return False
        for tp in positions:
            key = (tp.topic, tp.partition)
            position = tp.offset
            if position < 0:
                position = self._committed.get(key, started.get(key, -1))
            if position < 0:
                position = starts[key]
            if position < ends[key]:
                return False
        return True

    def backlog(self) -> int | None:
        """Records between the start and the end of every projected partition (progress bars).

        For a fresh group that is everything a replay will read. ``None`` (logged as
        ``projector.backlog_unknown``) when the broker does not tell within 10 s: a
        progress bar without a total, not a failed command, since the projection itself
        rides out the broker.
        """
        try:
            return self._backlog()
        except KafkaException as exc:
            log.warning(
                "projector.backlog_unknown",
                error=str(exc.args[0]),
                meaning="no total for the progress bar; the projection goes on",
            )
            return None

    def _backlog(self) -> int:
        admin = self._admin or AdminClient(self.settings.kafka_client_config())
        self._admin = admin
        topics = admin.list_topics(timeout=10.0).topics
        partitions = [
            TopicPartition(name, p)
            for name in PROJECTED_TOPICS
            if name in topics
            for p in topics[name].partitions
        ]
        if not partitions:
            return 0
        ends = self._offsets(partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        starts = self._offsets(partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        return sum(ends[k] - starts[k] for k in ends)

    def _offsets(self, partitions: list[TopicPartition], spec: Any) -> dict[tuple[str, int], int]:
        """Log end or start offsets of ``partitions`` in one request.

        The consumer's own watermark query queues behind its pending fetch (up to
        ``fetch.wait.max.ms`` per partition), so an admin request is far quicker.
        """
        if self._admin is None:
            self._admin = AdminClient(self.settings.kafka_client_config())
        futures = self._admin.list_offsets(
            {TopicPartition(tp.topic, tp.partition): spec for tp in partitions},
            request_timeout=10.0,
        )
        return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}

    def step(self, poll_timeout: float, stop_event: threading.Event) -> int:
        """Consume, project and commit one batch; return how many records it held."""
        if not self._migrate(stop_event):
            return 0
        consumer = self._open()
        messages = consumer.consume(num_messages=1, timeout=poll_timeout)
        if messages and self.batch_size > 1:
            more = self.batch_size - 1
            messages += consumer.consume(num_messages=more, timeout=self.linger)
        self._queue.took(len(messages), self.batch_size)
        records = [m for m in messages if not self._is_error(m)]
        if not records:
            skipped = self._skipped(consumer, {})
            if skipped:
                self._commit(consumer, skipped, stop_event, skipped=True)
            if self._paths_pending:
                self._refresh_paths()
            return 0
        rows = Rows()
        erasures: list[Event] = []
        offsets: dict[tuple[str, int], tuple[int, int]] = {}
        for message in records:
            key = (str(message.topic()), int(message.partition() or 0))
            offset = int(message.offset() or 0)
            first, _ = offsets.get(key, (offset, offset))
            offsets[key] = (min(first, offset), offset)
            if is_control(message.headers()):
                continue  # a heartbeat (or marker): ordering's, not a row (streams/control.py)
            if key[0] == DLQ.name:
                rows.extend(self._dead_letter_rows(message))
                continue
            try:
                obj = self.codec.decode(message.value() or b"")
                refused = admission_error(str(message.topic()), message.key(), obj, self.bounds)
                if refused is not None:
                    self._dead_letter(message, *refused)
                    continue
                rows.extend(rows_for(obj))
                if isinstance(obj, Event) and obj.kind is Kind.ERASURE_REQUESTED:
                    erasures.append(obj)
            except DecodeError as exc:
                self._dead_letter(message, exc.reason, str(exc))
            except LeadflowError as exc:
                # A broken invariant in one record must not stop the projection of the
                # rest: it goes to the dead-letter topic, named, with the record as it was.
                reason = "invalid_event" if isinstance(exc, InvalidEvent) else type(exc).__name__
                self._dead_letter(message, reason, str(exc))
        spans = [(t, p, a, b) for (t, p), (a, b) in offsets.items()]
        if not self.insert_batch(rows, spans, stop_event):
            return len(records)  # stopped while ClickHouse was down: nothing committed
        if erasures and not self.erase_batch(erasures, stop_event):
            return len(records)
        self._flush_dead_letters()
        batch = {(t, p): b + 1 for t, p, _, b in spans}
        skipped = self._skipped(consumer, batch)
        self._commit(consumer, {**batch, **skipped}, stop_event, skipped=bool(skipped))
        self.stats.records += len(records)
        self.stats.batches += 1
        if self.on_batch is not None:
            self.on_batch(self.stats)
        log.debug("projector.batch", records=len(records), rows=rows.count())
        self._paths_pending = True
        if self.paths_every is not None and time.monotonic() - self._paths_at >= self.paths_every:
            self._refresh_paths()
        return len(records)

    def _skipped(
        self, consumer: Consumer, batch: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        """Assigned partitions whose position is past what is (or is about to be) committed.

        Called after the batch's rows are in, before its commit: every record delivered so
        far is then projected, so between the committed offset (``batch``'s, else what this
        process committed last) and the consumer's position lie only entries a
        read_committed consumer skips. Without committing past them the group stays short
        of the end for good on a partition whose tail is an aborted transaction (a worker's
        batch aborted at a rebalance) while nothing new arrives there: seen as a drain that
        never finished in the 2-worker cluster bench (issue 18).
        """
        try:
            positions = consumer.position(consumer.assignment())
        except KafkaException as exc:  # a local call; nothing to commit past this time
            log.warning("projector.position_failed", error=str(exc.args[0]))
            return {}
        known = {(str(tp.topic), int(tp.partition)): int(tp.offset) for tp in positions}
        committed = {tp: batch.get(tp, self._committed.get(tp, -1)) for tp in known}
        return skipped_to(known, committed)

    def _commit(
        self,
        consumer: Consumer,
        offsets: dict[tuple[str, int], int],
        stop_event: threading.Event,
        skipped: bool = False,
    ) -> None:
        """Commit ``offsets``, riding out a group coordinator that moves.

        When the broker holding the group's coordinator dies, commits fail with
        NOT_COORDINATOR (and the like) until another broker takes the group over: retry.
        A commit refused because the group rebalanced meanwhile is given up: the rows are
        in ClickHouse and the partition's new owner reads the batch again (rows dedup).
        """
        delay = 0.2
        while True:
            try:
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=False,
                )
                self._committed.update(offsets)
                if skipped:
                    self.stats.skip_commits += 1
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() in REBALANCED:
                    log.warning("projector.commit_superseded", error=str(error))
                    return
                if stop_event.is_set() or not (error.retriable() or error.code() in MOVED):
                    raise
                self.stats.commit_retries += 1
                log.warning("projector.commit_retry", retry_in=delay, error=str(error))
                self.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- the stall watch -------------------------------------------------------------------

    def _look(self) -> None:
        """Between batches: log the running stats, run the stall watch, each when due."""
        now = time.monotonic()
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_EVERY
            log.info("projector.progress", **asdict(self.stats))
        if now < self._next_watch:
            return
        self._next_watch = now + self.watch_every
        self._watch(now)

    def _watch(self, now: float) -> None:
        """Act on an assigned partition behind its end whose position does not move.

        Where a partition stands is the furthest of what this process committed (or, before
        it committed there, what the group had committed when the partition was assigned),
        the consumer's position (past entries a read_committed consumer skips; unknown on
        an idle partition until something is delivered) and the log start. Its end is the
        broker's read_committed answer, asked from a side thread (:class:`EndOffsets`, as
        the worker's), so a broker that does not answer never blocks the batches, and a
        partition held by an open transaction is not behind. A partition whose end is not
        known fresh is not judged. Riding out ClickHouse or commits (retried calls) starts
        every watch over: it is not a stall. Neither is a look after nothing but full
        batches: the client's queue still holds what it prefetched, possibly the records of
        a partition that looks still. So a partition stuck while the others keep the
        projector at full batches is judged once they let its queue run dry.
        """
        consumer = self._consumer
        # Only full batches since the last look (PrefetchQueue): not a stall. Session 27's
        # fresh-clone CI: a new group catching up the test broker's backlog in batches of 5
        # read 8,370 records in ~70 s, none of events:0, took it for a stall twice, exited 70.
        draining = not self._queue.may_judge()
        troubles = self.stats.insert_retries + self.stats.commit_retries
        if consumer is None or troubles != self._troubles:
            self._troubles = troubles
            self._watches.clear()
            return
        assignment = consumer.assignment()
        if not assignment:
            for watch in self._watches.values():
                watch.wait(now)  # joining the group (a new consumer, a rebalance)
            return
        keys = {(str(tp.topic), int(tp.partition)) for tp in assignment}
        if self._ends is None:
            self._ends = EndOffsets(
                self.settings.kafka_client_config(), self.watch_every, who="projector",
                see='docs/operations.md, "A projector that stops reading"',
            )  # fmt: skip
            self._ends.start()
        self._ends.watch(keys)
        for key in set(self._watches) - keys:
            del self._watches[key]  # no longer ours (a rebalance): its new owner watches it
        if draining:
            for watch in self._watches.values():
                watch.wait(now)
            return
        try:
            positions = consumer.position(assignment)
            started = self._assigned_at(consumer, positions)
        except KafkaException as exc:  # the group's offsets not told: judged next time
            if self._ends_log.due("committed"):
                log.warning("projector.watch_unanswered", error=str(exc.args[0]))
            return
        for tp in positions:
            key = (str(tp.topic), int(tp.partition))
            end = self._ends.end(key, now, 3 * self.watch_every)
            if end is None:
                self._watches.pop(key, None)  # nothing fresh known: not judged
                continue
            committed = self._committed.get(key, started.get(key, -1))
            low, _ = consumer.get_watermark_offsets(tp, cached=True)
            lag = behind(end, committed, tp.offset, low=max(low, 0))
            watch = self._watches.setdefault(key, StallWatch(after=self.stall_after))
            verdict = watch.observe(now, lag=lag, processed=max(committed, tp.offset))
            if verdict is Verdict.OK:
                continue
            facts = {
                "partition": f"{key[0]}:{key[1]}",
                "lag": lag,
                "position": tp.offset,
                "committed": committed,
                "end": end,
                "seconds": self.stall_after,
            }
            if verdict is Verdict.EXIT:
                log.error("projector.stalled", **facts, action="exit 70 for the supervisor")
                raise ProjectorStalled(
                    f"{key[0]}:{key[1]} stays {lag} records behind its end with a new "
                    f"consumer too ({self.stall_after:g} s each)"
                )
            # A new client is the known cure (librdkafka #5153); the group's committed
            # offsets are where it starts, and every delivered record is committed by now.
            self.stats.stall_rebuilds += 1
            log.warning("projector.stalled", **facts, action="new consumer")
            self._close_consumer()
            for other in self._watches.values():
                other.acted(now)  # the new consumer is every partition's remedy
            return

    def _assigned_at(
        self, consumer: Consumer, positions: list[TopicPartition]
    ) -> dict[tuple[str, int], int]:
        """The group's committed offset, as of this assignment, of each partition not yet read.

        An idle partition's position stays unknown until a record is delivered, so without
        this a projector restarted on caught-up partitions would look behind. Asked once per
        assignment (``_on_assign`` forgets the answers; the group's offset of a partition
        only this process commits to does not change meanwhile), and only for partitions
        with no position and no commit here.
        """
        wanted = [
            TopicPartition(tp.topic, tp.partition)
            for tp in positions
            if tp.offset < 0
            and (tp.topic, tp.partition) not in self._committed
            and (tp.topic, tp.partition) not in self._started
        ]
        if wanted:
            for tp in consumer.committed(wanted, timeout=10.0):
                self._started[(str(tp.topic), int(tp.partition))] = int(tp.offset)
        return self._started

    def _refresh_paths(self) -> None:
        """Bring the attribution path tables up to date, so SQL on them reads fresh rows.

        Best effort: the offsets are committed already, and every report refreshes the
        tables before it reads, so a failure here costs freshness, never correctness.
        """
        if self.paths_every is None:
            return
        self._paths_at = time.monotonic()
        try:
            done = refresh_paths(
                self.client, self.database, margin_seconds=refresh_margin(self.client)
            )
        except Exception as exc:  # unreachable or failing server: the next batch retries
            log.warning("projector.paths_refresh_failed", error=str(exc))
            return
        self._paths_pending = False
        log.debug("projector.paths", full=done.full, persons=done.persons, seconds=done.seconds)

    def _is_error(self, message: Message) -> bool:
        """Whether ``message`` is an error event to skip; raise on one the projector cannot pass.

        A missing topic or partition (deleted, or never created) does not stop the
        projection of the others, but it is no end of partition: it is counted and named in
        a warning, at most every 10 s per topic and partition.
        """
        error = message.error()
        if error is None:
            return False
        if error.code() == KafkaError._PARTITION_EOF:
            return True
        if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            self.stats.unknown_topic_errors += 1
            topic, partition = message.topic(), message.partition()
            if self._unknown_log.due(f"{topic}:{partition}"):
                log.warning(
                    "projector.unknown_topic_or_partition",
                    topic=topic,
                    partition=partition,
                    errors=self.stats.unknown_topic_errors,
                    error=str(error),
                )
            return True
        raise ProjectorError(f"consume failed: {error}")

    # -- ClickHouse ------------------------------------------------------------------------

    def insert_batch(
        self, rows: Rows, spans: Sequence[tuple[str, int, int, int]], stop_event: threading.Event
    ) -> bool:
        """Insert every table's rows, retrying with exponential backoff while ClickHouse fails.

        Returns False when ``stop_event`` was set before the rows were all in (the caller
        then commits nothing, so the batch is delivered again after the restart).
        """
        pending = [t for t in PROJECTED_TABLES if rows.by_table.get(t.name)]
        delay = 0.5
        while pending:
            table = pending[0]
            try:
                insert_table(
                    self.client, self.database, table, rows.by_table[table.name], spans,
                    self._types,
                )  # fmt: skip
            except Exception as exc:  # any client failure means "retry later"
                self._types.pop(table.name, None)  # the table may have changed: ask again
                if stop_event.is_set():
                    return False
                self.stats.insert_retries += 1
                log.warning(
                    "projector.insert_failed", table=table.name, retry_in=delay, error=str(exc)
                )
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            pending.pop(0)
            count = len(rows.by_table[table.name])
            self.stats.rows += count
            self.stats.per_table[table.name] = self.stats.per_table.get(table.name, 0) + count
        return True

    def erase_batch(self, erasures: Sequence[Event], stop_event: threading.Event) -> bool:
        """Apply erasure requests after their batch's rows are in (docs/privacy.md).

        Runs before the offsets are committed, so a crash repeats it (it is idempotent);
        retried with backoff like inserts. Returns False when stopped first.
        """
        delay = 0.5
        for event in erasures:
            devices = [event.anonymous_id] if event.anonymous_id else []
            while True:
                try:
                    erase_person(
                        self.client,
                        self.database,
                        event.workspace_id,
                        event.lead_id or event.person_id,
                        devices,
                        self.settings.clickhouse_cluster,
                    )
                    break
                except Exception as exc:  # any client failure means "retry later"
                    if stop_event.is_set():
                        return False
                    self.stats.insert_retries += 1
                    log.warning("projector.erasure_failed", retry_in=delay, error=str(exc))
                    self.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
        return True

    # -- dead letters ----------------------------------------------------------------------

    def _dead_letter(self, message: Message, reason: str, error: str) -> None:
        assert self._producer is not None
        # A replay's group re-dead-letters: the group header tells them apart.
        headers = dead_letter_headers(
            message, reason, error, stage="projector", group=self.group_id
        )
        self._producer.produce(DLQ.name, value=message.value(), key=message.key(), headers=headers)
        self._producer.poll(0)
        self.stats.dead_lettered += 1
        log.warning("projector.dead_letter", reason=reason, topic=message.topic())

    @staticmethod
    def _dead_letter_rows(message: Message) -> Rows:
        raw = message.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        _, timestamp = message.timestamp()
        return dead_letter_rows(
            int(message.partition() or 0),
            int(message.offset() or 0),
            message.key(),
            list(pairs),
            int(timestamp) if timestamp and timestamp > 0 else int(time.time() * 1000),
            len(message.value() or b""),
        )

    def _flush_dead_letters(self) -> None:
        if self._producer is not None and self._producer.flush(30) > 0:
            raise ProjectorError("dead-letter records were not acknowledged within 30 s")
