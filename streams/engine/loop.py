"""The batch loop: poll, process, produce, send offsets, commit; one transaction per batch.

Per batch:

1. poll: block for the first record (so a lone record starts at once), then take what the
   client already fetched, up to ``worker_batch_max`` records;
2. begin a transaction; run each record's task (decode, pure processor, store writes,
   outputs, dead letters are all produced inside the transaction);
3. run each touched stage's ``settle`` (the lead stage hands its tasks' forward promises
   over in memory), then each touched task's ``on_batch_end``; produce the batch's store
   writes to the changelogs;
4. ``send_offsets_to_transaction`` (the next offset of every input partition in the batch,
   with the group metadata that fences a zombie) and commit.

A batch that produced nothing but store writes (a lead partition taking identity's
watermark markers and releasing nothing; under traffic that was a quarter of all
transactions, docs/benchmarks.md) does not commit: its transaction stays open and the next
batch runs in it, so the pair costs one commit. Such a transaction is committed when it has
been open ``worker_hold_ms``, when the worker is idle (a poll within that time returns
nothing), before the stall watch, before a rebalance and when the worker stops. Nothing
anyone reads waits for it: it holds no record (its changelog writes are produced at the
commit), only input offsets, and an abort or a crash redoes it with the batch after it.
The model switch's promise markers (lead stage <-> trainer) are held the same way: a record
waits for them only once its partition's gate, M records back, reaches the trainers'
promise (a backlog), so a transaction of promises and store writes rides with the next one
(without this, a sixth of the transactions under traffic carried only them: session 6 in
docs/benchmarks.md). Identity's markers, which every release waits for, are never held.

Faults (docs/operations.md, "What the worker does in each fault"):

- a transient error (broker away, coordinator moving, request timed out) is retried with
  backoff, forever, with a log line per attempt kind;
- an error that dooms the transaction aborts it, drops the batch's store writes and rewinds
  every input partition to its last committed offset: the batch is processed again;
- a fenced or fatal producer is closed and rebuilt, and so is one whose transaction's
  messages failed delivery (``kafka.classify``); the batch is processed again;
- an offsets call still running ``ABANDON_OFFSETS_CALL_S`` past its own timeout
  (``OFFSETS_CALL_S``), or past a failed batch's end, is left to its producer and a new
  producer fences it: librdkafka's ``send_offsets_to_transaction`` can stay blocked long
  after its timeout and its transaction's failure (30 s after a broker restart, until an
  idle connection closed), and no other transactional call may run on that producer
  meanwhile; the batch is processed again, and the abandoned call retries no more;
- a rebalance runs between batches (callbacks fire only inside ``poll``): revoked partitions
  forget their tasks and stores, assigned ones restore their stores first.

Nothing exits on an outage. A record whose task raises a :class:`LeadflowError` goes to
the dead-letter topic; any other exception is a bug and stops the worker loudly.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from leadflow.processors.errors import LeadflowError
from leadflow.streams.control import HEARTBEAT, LEAD_MARKER, MARKER, TRAINER_MARKER
from leadflow.streams.engine import kafka as k
from leadflow.streams.engine.ends import EndOffsets
from leadflow.streams.engine.stage import Record, Stage, Task, Unavailable
from leadflow.streams.engine.stores import Stores, changelog_topic
from leadflow.streams.logs import Throttle, get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.stall import (
    EXIT_STALLED,
    OpenTailWatch,
    PrefetchQueue,
    StallWatch,
    Verdict,
    behind,
    skipped_to,
)
from leadflow.streams.topics import DLQ, TopicSpec

log = get_logger(__name__)

TP = tuple[str, int]

# confluent-kafka's "let the partitioner choose" (librdkafka's RD_KAFKA_PARTITION_UA).
PARTITION_UNASSIGNED = -1

# Seconds between two looks of the stall watch (and two end-offset requests).
WATCH_EVERY = 5.0
# An input's last stable offset held this long (at least) is an open transaction gone wrong:
# the worker's own transactions end within their timeout, and the broker aborts a timed-out
# one within its cleanup interval (10 s).
OPEN_TAIL_SECONDS = 30.0
# The offsets call's own timeout. A healthy call takes milliseconds (what is left of it after
# the batch's processing averaged 4-5 ms a batch under traffic, session 15); one that fails
# by timing out is retried like every other call.
OFFSETS_CALL_S = 5.0
# How long past that timeout (or past a failed batch's end) the worker waits for the call
# before it gives up on the producer. After a broker restart one call stayed blocked 30 s
# (until the producer's idle connections closed) while the transaction it served had
# already failed, and the worker sent nothing meanwhile (docs/architecture.md, "After a
# broker restart"). A new producer with the same transactional id fences the blocked one.
ABANDON_OFFSETS_CALL_S = 2.0


# On the dead letter of an event parked while its lead waited for a merge, which failed when
# the lead resumed (streams/stages/lead.py): the event's id and the record that resumed the
# lead, which is not where the event came from (``leadflow dlq show`` shows both).
PARKED_EVENT = "leadflow.parked.event_id"
RESUMED_BY = "leadflow.parked.resumed_by"


def dlq_headers(exc: Exception, topic: str, partition: int, offset: int) -> dict[str, bytes]:
    """Why a record went to the dead-letter topic, and where it came from.

    Example:
        >>> dlq_headers(ValueError("bad"), "leadflow.events", 3, 42)["leadflow.reason"]
        b'ValueError: bad'
    """
    return {
        "leadflow.reason": f"{type(exc).__name__}: {exc}".encode()[:1000],
        "leadflow.source.topic": topic.encode(),
        "leadflow.source.partition": str(partition).encode(),
        "leadflow.source.offset": str(offset).encode(),
    }


# Records a held transaction may carry (module docstring): the model switch's promises.
_HOLDABLE = frozenset({LEAD_MARKER.encode(), TRAINER_MARKER.encode()})


def holdable(headers: Mapping[str, bytes] | None) -> bool:
    """Whether a record may wait in a held transaction: a lead or trainer promise marker.

    Example:
        >>> holdable({"leadflow.marker": b"trainer"}), holdable({"leadflow.marker": b"identity"})
        (True, False)
        >>> holdable(None)
        False
    """
    return headers is not None and headers.get(MARKER) in _HOLDABLE


# A dead letter keeps a control record's control headers under these names: under their
# own, readers would skip the letter as a control record (the projector's dead_letters
# would miss it) and a lead or trainer marker's letter would count as holdable.
_RENAMED_IN_LETTERS = {HEARTBEAT: "leadflow.source.heartbeat", MARKER: "leadflow.source.marker"}


def letter_headers(record: Record, exc: Exception) -> dict[str, bytes]:
    """A worker dead letter's headers: the record's own, then :func:`dlq_headers`.

    The record's own travel with it (``leadflow dlq replay`` sends back those that are not
    leadflow's, e.g. a producer's trace headers; leadflow's are there to look at). On a
    name clash the dead-letter headers win: a record carrying ``leadflow.reason`` was a
    dead letter before, copied back by something other than ``dlq replay`` (which drops
    them), and its new letter must say why it failed now and where it was read now.

    Example:
        >>> record = Record("leadflow.events.by-lead", 2, 7, b"k", b"v",
        ...                 {"leadflow.r": b"5", "leadflow.reason": b"KeyError: old"})
        >>> headers = letter_headers(record, ValueError("bad"))
        >>> headers["leadflow.r"], headers["leadflow.reason"], headers["leadflow.source.offset"]
        (b'5', b'ValueError: bad', b'7')
        >>> marker = Record("leadflow.events.by-lead", 0, 1, b"k", b"{}", {"leadflow.marker": b"x"})
        >>> sorted(letter_headers(marker, ValueError("bad")))[:2]
        ['leadflow.reason', 'leadflow.source.marker']
    """
    own = {_RENAMED_IN_LETTERS.get(name, name): value for name, value in record.headers.items()}
    return own | dlq_headers(exc, record.topic, record.partition, record.offset)


@dataclass
class Counters:
    """What the loop has done since it started (logged with ``worker.progress``)."""

    records: int = 0
    batches: int = 0
    dead_letters: int = 0
    aborts: int = 0
    rebuilds: int = 0
    retries: int = 0
    rebalances: int = 0
    restored: int = 0
    unavailable: int = 0
    # Offsets-only transactions that moved a committed offset over entries a read_committed
    # consumer never receives (an aborted tail, transaction markers): see Engine._watch.
    skip_commits: int = 0
    # Input partitions found held by an open transaction (worker.open_transaction).
    open_transactions: int = 0
    # Wall time in the two calls that end a batch (where its latency goes: docs/benchmarks.md).
    send_offsets_ms: int = 0
    commit_ms: int = 0
    # Batches that produced only store writes and left their transaction open for the next.
    held: int = 0
    # Transactions committed by the batch loop (batches minus those that rode in a later one).
    commits: int = 0
    # Offsets calls left blocked (past their timeout, or past a failed batch's end): their
    # producer was given up and rebuilt (each also counts in ``rebuilds``).
    abandoned: int = 0
    # Where the loop's wall time goes, in ms (kept as floats: most batches take under one).
    # Waiting in poll for a batch's first record: the worker had nothing to do.
    poll_ms: float = 0.0
    # Processing batches, from the first record to the commit (send_offsets_ms and
    # commit_ms are part of it), and this thread's CPU in that time. What is left of
    # batch_ms after the CPU and the two waits is time the worker was ready to run and did
    # not get a core: its machine is short of CPU (docs/operations.md, "Sizing").
    batch_ms: float = 0.0
    batch_cpu_ms: float = 0.0

    def as_dict(self) -> dict[str, int]:
        """The counters by name, in whole units, for a log line.

        Example:
            >>> Counters(records=3, poll_ms=1.6).as_dict()["poll_ms"]
            2
        """
        return {name: round(value) for name, value in vars(self).items()}


class Watchdog:
    """Ends the process when a Kafka client call blocks far past its own timeout.

    librdkafka's ``send_offsets_to_transaction`` can wait forever when the group coordinator
    goes away (librdkafka #5456: its timeout is never checked; #5511), seen here after a
    broker restart. A blocked C call cannot be interrupted, so the only way on is a fresh
    process: exit 70 for the supervisor (nothing is lost: the batch was not committed, and
    the next process fences this one's transaction).
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._call: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-watchdog", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()

    @contextmanager
    def guard(self, call: str) -> Iterator[None]:
        """Mark a blocking client call for the duration of the block.

        The latest call is watched; one ending clears only its own mark (an abandoned
        offsets call may return long after the main thread marked another).
        """
        mark = (call, time.monotonic())
        self._call = mark
        try:
            yield
        finally:
            if self._call is mark:
                self._call = None

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            current = self._call
            if current is not None and time.monotonic() - current[1] > self.limit:
                log.error(
                    "worker.client_hung",
                    call=current[0],
                    seconds=round(time.monotonic() - current[1]),
                    action="exit 70 for the supervisor",
                )
                os._exit(EXIT_STALLED)


class OffsetsCallBlocked(Exception):
    """An offsets call still ran when its result was due (its producer must be given up)."""

    def __init__(self, call: _Background, seconds: float) -> None:
        super().__init__(f"send_offsets_to_transaction still blocked after {seconds:g} s")
        self.call = call


class _Background:
    """A call running in its own thread; :meth:`result` joins it and raises what it raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self, timeout: float | None = None) -> None:
        """Wait for the call; raise its exception if it raised one.

        Raises:
            OffsetsCallBlocked: it still runs after ``timeout`` seconds.
        """
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise OffsetsCallBlocked(self, timeout or 0.0)
        if self._error is not None:
            raise self._error

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for the call, whatever it did (the batch failed anyway).

        Returns False if it still runs after ``timeout`` seconds.
        """
        self._thread.join(timeout)
        return not self._thread.is_alive()


class _Context:
    """A task's view of one input partition within the current transaction."""

    def __init__(self, engine: Engine, stage: Stage, partition: int) -> None:
        self._engine = engine
        self._stage = stage
        self._partition = partition

    @property
    def partition(self) -> int:
        return self._partition

    def _store(self, name: str) -> Stores:
        if name not in self._stage.stores:
            raise LeadflowError(f"stage {self._stage.name} has no store {name!r}")
        return self._engine.stores

    def get(self, store: str, key: bytes) -> bytes | None:
        return self._store(store).store(store, self._partition).get(key)

    def put(self, store: str, key: bytes, value: bytes | None) -> None:
        self._store(store).store(store, self._partition).put(key, value)

    def items(self, store: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return self._store(store).store(store, self._partition).items(prefix)

    def send(
        self,
        topic: TopicSpec,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes] | None = None,
        partition: int | None = None,
    ) -> None:
        self._engine.produce(topic.name, key, value, headers, partition)

    def dead_letter(self, record: Record, exc: Exception) -> None:
        self._engine.dead_letter(record, exc)


class Engine:
    """Runs stages over one consumer and one transactional producer.

    Args:
        settings: connection settings and the worker's tuning (batch size, timeouts).
        stages: the stages; each consumes its own input topic.
        worker_id: the stable id of this worker (see :class:`~.kafka.WorkerId`).
    """

    def __init__(self, settings: Settings, stages: Sequence[Stage], worker_id: str) -> None:
        topics = [stage.source.name for stage in stages]
        if len(set(topics)) != len(topics):
            raise LeadflowError(f"two stages consume the same topic: {topics}")
        self.settings = settings
        self.stages = {stage.source.name: stage for stage in stages}
        self.worker_id = worker_id
        self.stores = Stores(settings.kafka_client_config())
        self.counters = Counters()
        self.tasks: dict[TP, Task] = {}
        self.contexts: dict[TP, _Context] = {}
        # Where each owned input partition's committed offset is: where an abort rewinds to.
        self.positions: dict[TP, int] = {}
        self.watches: dict[TP, StallWatch] = {}
        self.open_tails: dict[TP, OpenTailWatch] = {}
        self._open_after = max(OPEN_TAIL_SECONDS, 3 * settings.worker_transaction_timeout_seconds)
        self.ready = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._next_progress = 0.0
        self._next_watch = 0.0
        self.ends = EndOffsets(settings.kafka_client_config(), WATCH_EVERY)
        self._logged = Throttle(10.0)
        self._unavailable_delay = 0.1
        self.watchdog = Watchdog(settings.worker_hung_call_seconds)
        self._troubles = 0
        self._queue = PrefetchQueue()  # since the stall watch's last look: full batches only?
        # The open transaction of held batches (module docstring): the input offsets it
        # carries, when it began, how many records it produced (changelogs and holdable
        # promise markers excluded), and its offsets call still running, if any. ``_open``
        # is None when none is open.
        self._open: dict[TP, int] | None = None
        self._opened_at = 0.0
        self._outputs = 0
        self._sender: _Background | None = None

    # -- clients ----------------------------------------------------------------------------

    @property
    def consumer(self) -> Consumer:
        """The input consumer (after :meth:`start`)."""
        assert self._consumer is not None, "engine not started"
        return self._consumer

    @property
    def producer(self) -> Producer:
        """The transactional producer of the current transaction (after :meth:`start`)."""
        assert self._producer is not None, "engine not started"
        return self._producer

    def _new_producer(self) -> None:
        producer = k.new_producer(self.settings, self.worker_id)
        self._retry("init_transactions", lambda: producer.init_transactions(30.0))
        self._producer = producer

    def start(self) -> None:
        """Create the clients (fencing this worker id's previous transaction) and subscribe."""
        self._new_producer()
        self._consumer = k.new_consumer(self.settings, self.worker_id)
        self.consumer.subscribe(
            list(self.stages),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def close(self) -> None:
        """Leave the group (revokes run) and release the clients; nothing is in flight."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(10.0)
            self._producer = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; rides out broker outages."""
        self.watchdog.start()
        self.ends.start()
        self.start()
        try:
            while not stop.is_set():
                messages = self._poll()
                if messages:
                    self._process(messages)
                elif self._open is not None:
                    self._flush()  # idle: nothing came to ride in the held transaction
                self._housekeeping()
            self._flush()
        finally:
            self.watchdog.stop()
            self.ends.stop()
            self.close()

    def _poll(self) -> list[Message]:
        wait = self.settings.worker_poll_seconds
        began = time.monotonic()
        if self._open is not None:
            left = self._opened_at + self.settings.worker_hold_ms / 1000 - began
            wait = min(wait, max(left, 0.0))
        first = self.consumer.poll(wait)
        self.counters.poll_ms += (time.monotonic() - began) * 1000
        most = self.settings.worker_batch_max
        if first is None:
            self._queue.took(0, most)
            return []
        rest = self.consumer.consume(num_messages=most - 1, timeout=0)
        self._queue.took(1 + len(rest), most)
        messages = []
        for message in (first, *rest):
            error = message.error()
            if error is None:
                messages.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                self._log_once("worker.consumer_error", error=str(error), fatal=error.fatal())
                if error.fatal():
                    raise KafkaException(error)
        return messages

    def _process(self, messages: Sequence[Message]) -> None:
        """Process one batch in the open transaction (or a new one); counts its time."""
        began, cpu = time.monotonic(), time.thread_time()
        try:
            self._process_batch(messages)
        finally:
            self.counters.batch_ms += (time.monotonic() - began) * 1000
            self.counters.batch_cpu_ms += (time.thread_time() - cpu) * 1000

    def _process_batch(self, messages: Sequence[Message]) -> None:
        # The input offsets this batch commits are known before it is processed (a task is
        # revoked only inside poll), so they go to the transaction while the records are
        # processed: the two requests of ``send_offsets_to_transaction`` overlap the work
        # instead of adding to every batch's end (docs/benchmarks.md). An abort or a failed
        # batch drops them with everything else the transaction holds.
        offsets: dict[TP, int] = {}
        for message in messages:
            tp = (str(message.topic()), int(message.partition() or 0))
            if tp in self.tasks:
                offsets[tp] = int(message.offset() or 0) + 1
        sender: _Background | None = None
        try:
            if self._open is None:
                self.producer.begin_transaction()
                self._open, self._opened_at, self._outputs = {}, time.monotonic(), 0
            else:
                # A held batch's offsets call must end before this batch's starts.
                running, self._sender = self._sender, None
                if running is not None:
                    running.result(self._offsets_wait_s())
            self._open.update(offsets)
            if offsets:
                sender = _Background(self._send_offsets(offsets))
            touched: dict[TP, _Context] = {}
            for message in messages:
                tp = (str(message.topic()), int(message.partition() or 0))
                task = self.tasks.get(tp)
                if task is None:
                    continue  # revoked since the fetch: its new owner processes it
                ctx = self.contexts[tp]
                record = Record(
                    topic=tp[0],
                    partition=tp[1],
                    offset=int(message.offset() or 0),
                    key=message.key(),
                    value=message.value() or b"",
                    headers=_headers(message),
                    timestamp=_timestamp(message),
                )
                try:
                    task.on_record(ctx, record)
                except LeadflowError as exc:
                    # Tasks dead-letter what they know to be bad; this is the safety net.
                    self.dead_letter(record, exc)
                touched[tp] = ctx
            self._settle_stages(touched)
            for tp, ctx in touched.items():
                self.tasks[tp].on_batch_end(ctx)
            # Only store writes so far: leave the transaction open for the next batch.
            held = self._outputs == 0 and time.monotonic() - self._opened_at < self._hold_s()
            if held:
                self._sender, sender = sender, None
            else:
                self._end_transaction(sender)
                sender = None
        except KafkaException as exc:
            self._recover(k.classify(exc), exc, sender)
            return
        except OffsetsCallBlocked as exc:
            self._abandon(exc)
            return
        except Unavailable as exc:
            # Something a task needs is out of reach: not the records' fault. Process the
            # batch again after a pause that grows while the outage lasts.
            self.counters.unavailable += 1
            self._log_once("worker.unavailable", error=str(exc), action="retry")
            self._recover(k.Failure.ABORT, None, sender)
            time.sleep(self._unavailable_delay)
            self._unavailable_delay = min(self._unavailable_delay * 2, 5.0)
            return
        except BaseException:
            # A bug: the transaction holds part of a batch and must never commit (a revoke
            # while the worker closes would otherwise flush it).
            held_sender, self._sender, self._open = self._sender, None, None
            self._settle(sender, held_sender)
            raise
        self._unavailable_delay = 0.1
        self.counters.records += len(messages)
        self.counters.batches += 1
        self.counters.held += held

    def _settle_stages(self, touched: dict[TP, _Context]) -> None:
        """Run each touched stage's ``settle`` over all its tasks; add what it touched."""
        for topic in sorted({tp[0] for tp in touched}):
            settle = self.stages[topic].settle
            if settle is None:
                continue
            owned = {tp[1]: (task, self.contexts[tp]) for tp, task in self.tasks.items()
                     if tp[0] == topic}  # fmt: skip
            for partition in settle(owned):
                tp = (topic, partition)
                touched.setdefault(tp, self.contexts[tp])

    def _hold_s(self) -> float:
        return self.settings.worker_hold_ms / 1000

    def _offsets_wait_s(self) -> float:
        """How long a batch waits for its offsets call: the call's own timeout, and a margin.

        librdkafka does not always keep that timeout (#5456); past it the call is treated as
        failed and its producer given up (module docstring, "Faults").
        """
        return OFFSETS_CALL_S + ABANDON_OFFSETS_CALL_S

    def _end_transaction(self, sender: _Background | None) -> None:
        """Produce the open transaction's store writes, wait for its offsets, commit it.

        ``sender`` is the offsets call of the batch just processed, if any (a held batch's
        was joined before it started). On success the stores take the writes and the input
        partitions' committed offsets move; on an error the caller recovers.
        """
        assert self._open is not None
        for name, partition, key, value in self.stores.pending():
            self.produce(changelog_topic(name).name, key, value, None, partition)
        if sender is not None:
            waited = time.monotonic()
            sender.result(self._offsets_wait_s())
            self.counters.send_offsets_ms += round((time.monotonic() - waited) * 1000)
        self._commit()
        self.stores.commit()
        self.positions.update(self._open)
        self._open = None
        self.counters.commits += 1

    def _flush(self) -> None:
        """Commit the held transaction, if one is open (idle, watch, rebalance, stop)."""
        if self._open is None:
            return
        running, self._sender = self._sender, None
        try:
            if running is not None:
                running.result(self._offsets_wait_s())
            self._end_transaction(None)
        except KafkaException as exc:
            self._recover(k.classify(exc), exc)
        except OffsetsCallBlocked as exc:
            self._abandon(exc)

    def _send_offsets(self, offsets: Mapping[TP, int]) -> Callable[[], None]:
        """``send_offsets_to_transaction`` of ``offsets``, retried like every other call."""
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        metadata = self.consumer.consumer_group_metadata()
        producer = self.producer

        def send() -> None:
            self._retry(
                "send_offsets_to_transaction",
                lambda: producer.send_offsets_to_transaction(tps, metadata, OFFSETS_CALL_S),
                # Abandoned (its producer given up, the batch redone on a new one): a retry
                # could only serve a transaction the new producer fences, and its retry lines
                # would read as the current batch's while the broker is away.
                given_up=lambda: self._producer is not producer,
            )

        return send

    def _commit(self, offsets: Mapping[TP, int] | None = None) -> None:
        """Commit the open transaction, sending ``offsets`` to it first if given."""
        timeout = self.settings.worker_transaction_timeout_seconds
        started = time.monotonic()
        if offsets:
            self._send_offsets(offsets)()
            self.counters.send_offsets_ms += round((time.monotonic() - started) * 1000)
            started = time.monotonic()
        self._retry("commit_transaction", lambda: self.producer.commit_transaction(timeout))
        self.counters.commit_ms += round((time.monotonic() - started) * 1000)

    def _retry(
        self, what: str, call: Callable[[], object], given_up: Callable[[], bool] | None = None
    ) -> None:
        """Call until it succeeds; retriable errors back off, others propagate.

        ``given_up``: whether the caller gave the call up meanwhile (an abandoned offsets
        call); then a retriable error propagates too, logged once.
        """
        delay = 0.05
        while True:
            try:
                with self.watchdog.guard(what):
                    call()
                return
            except KafkaException as exc:
                if k.classify(exc) is not k.Failure.RETRY:
                    raise
                if given_up is None or not given_up():
                    self.counters.retries += 1
                    self._log_once(f"worker.retry.{what}", action="retry", error=str(exc.args[0]))
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                if given_up is not None and given_up():
                    log.warning(
                        "worker.abandoned_call_stopped",
                        call=what,
                        error=str(exc.args[0]),
                        action="no retry: its producer was given up, the batch is redone",
                    )
                    raise

    def _abandon(self, blocked: OffsetsCallBlocked) -> None:
        """Give up the producer of an offsets call that outlived its timeout; redo the batch."""
        self._count_abandoned(str(blocked))
        self._recover(k.Failure.REBUILD, None)

    def _count_abandoned(self, why: str) -> None:
        self.counters.abandoned += 1
        log.warning(
            "worker.offsets_call_abandoned",
            why=why,
            action="rebuild the producer (the new one fences the blocked one), redo the batch",
        )

    def _settle(self, *calls: _Background | None) -> bool:
        """Wait for a failed batch's offsets calls, at most ``ABANDON_OFFSETS_CALL_S``.

        Returns False if one still runs: its producer must not make another transactional
        call, so it is given up.
        """
        deadline = time.monotonic() + ABANDON_OFFSETS_CALL_S
        settled = True
        for call in calls:
            if call is not None:
                settled &= call.settle(max(deadline - time.monotonic(), 0.0))
        return settled

    def _recover(
        self, failure: k.Failure, exc: KafkaException | None, sender: _Background | None = None
    ) -> None:
        """Undo the batch: abort (or rebuild the producer), forget its writes, rewind.

        ``sender`` is the failed batch's offsets call, if any; a held batch's is joined too:
        no other transactional call while they run.
        """
        if exc is not None:
            log.warning("worker.batch_failed", failure=failure.value, error=str(exc.args[0]))
        held, self._sender = self._sender, None
        if not self._settle(sender, held):
            self._count_abandoned("still running after the batch failed")
            failure = k.Failure.REBUILD
        self._open = None
        if failure is not k.Failure.REBUILD:
            try:
                self._retry("abort_transaction", lambda: self.producer.abort_transaction(30.0))
                self.counters.aborts += 1
            except KafkaException as abort_exc:
                log.warning("worker.abort_failed", error=str(abort_exc.args[0]))
                failure = k.Failure.REBUILD
        if failure is k.Failure.REBUILD:
            self.counters.rebuilds += 1
            self._producer = None
            self._new_producer()
        self.stores.abort()
        self._rewind()

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, bytes] | None,
        partition: int | None,
    ) -> None:
        """Produce in the open transaction; waits for room when the client's queue is full."""
        listed: list[tuple[str, str | bytes | None]] | None = (
            list(headers.items()) if headers else None
        )
        if not holdable(headers):
            self._outputs += 1
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=PARTITION_UNASSIGNED if partition is None else partition,
                    headers=listed,
                )
                return
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full: let deliveries drain

    def dead_letter(self, record: Record, exc: Exception) -> None:
        """Send ``record`` unchanged to the dead-letter topic, the reason added to its headers."""
        self.counters.dead_letters += 1
        earlier = record.headers.get("leadflow.reason")
        log.warning(
            "dead_letter",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=str(exc),
            # Its earlier letter's reason, which the new one replaces in the headers.
            **({"earlier_reason": earlier.decode(errors="replace")} if earlier else {}),
        )
        self.produce(DLQ.name, record.key, record.value, letter_headers(record, exc), None)

    # -- rebalances -------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._flush()  # (the revoke before an assignment has committed it already)
        self.counters.rebalances += 1
        tps = [(str(tp.topic), int(tp.partition)) for tp in partitions]
        # Stable committed offsets first: a dead owner's pending offsets are resolved
        # (committed or aborted) before they are returned, and with them its changelog
        # writes, so the restore below reads everything the offsets depend on.
        committed = self._committed(partitions)
        wanted = [(name, p) for t, p in tps for name in self.stages[t].stores]
        while True:
            try:
                self.counters.restored += self.stores.restore(wanted)
                break
            except (KafkaException, LeadflowError) as exc:
                self._log_once("worker.restore_failed", action="retry", error=str(exc))
                time.sleep(1.0)
        for tp in tps:
            stage = self.stages[tp[0]]
            ctx = _Context(self, stage, tp[1])
            self.contexts[tp] = ctx
            self.tasks[tp] = stage.task(ctx)
            self.positions[tp] = committed[tp]
            self.watches[tp] = StallWatch(after=self.settings.worker_stall_seconds)
            self.open_tails[tp] = OpenTailWatch(after=self._open_after)
        consumer.assign([TopicPartition(t, p, committed[(t, p)]) for t, p in tps])
        self.ends.watch(self.positions)
        log.info("worker.assigned", partitions=_describe(tps))
        if not self.ready.is_set():
            self.ready.set()
            log.info("worker.ready", partitions=len(tps))

    def _committed(self, partitions: list[TopicPartition]) -> dict[TP, int]:
        found: list[TopicPartition] = []

        def fetch() -> None:
            found[:] = self.consumer.committed(partitions, timeout=30.0)

        self._retry("committed", fetch)
        return {
            (str(tp.topic), int(tp.partition)): (tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            for tp in found
        }

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A held transaction carries these partitions' offsets and store writes: commit it
        # while they are still ours (if the group moved on, the commit fails and it aborts).
        self._flush()
        tps = [(str(tp.topic), int(tp.partition)) for tp in partitions]
        for tp in tps:
            self.tasks.pop(tp, None)
            self.contexts.pop(tp, None)
            self.positions.pop(tp, None)
            self.watches.pop(tp, None)
            self.open_tails.pop(tp, None)
            self.stores.drop(self.stages[tp[0]].stores, tp[1])
        self.ends.watch(self.positions)
        log.info("worker.revoked", partitions=_describe(tps))

    def _rewind(self) -> None:
        """Seek every owned partition back to its committed offset; rebuild its task.

        A seek refused on a partition that has not fetched yet is harmless (it starts at the
        committed offset anyway). One refused on a partition whose position is past its
        committed offset would let the next batch skip the undone records and commit past
        them, so the worker exits 70 for its supervisor instead (nothing is committed).
        """
        for tp, position in self.positions.items():
            try:
                self.consumer.seek(TopicPartition(tp[0], tp[1], position))
            except KafkaException as exc:
                at = self._consumer_positions().get(tp, -1001)
                if at >= 0 and at != position:
                    log.error(
                        "worker.rewind_failed",
                        partition=f"{tp[0]}:{tp[1]}",
                        committed=position,
                        position=at,
                        error=str(exc),
                        action="exit 70 for the supervisor",
                    )
                    os._exit(EXIT_STALLED)
                log.warning("worker.seek_failed", partition=f"{tp[0]}:{tp[1]}", error=str(exc))
            self.tasks[tp] = self.stages[tp[0]].task(self.contexts[tp])

    def dump(self) -> None:
        """Log where every owned partition stands (``kill -USR1 <worker>``).

        ``committed`` is the engine's committed offset, ``position`` the consumer's (past
        records and markers it skipped; -1001 before the first fetch after a seek), ``end``
        the broker's last answer (read_committed), ``-1`` when none is fresh.
        """
        positions = self._consumer_positions()
        now = time.monotonic()
        log.warning(
            "worker.dump",
            committed={f"{t}:{p}": o for (t, p), o in sorted(self.positions.items())},
            position={f"{t}:{p}": o for (t, p), o in sorted(positions.items())},
            end={
                f"{t}:{p}": _or_unknown(self.ends.end((t, p), now, 3 * WATCH_EVERY))
                for t, p in sorted(self.positions)
            },
            **self.counts(),
        )

    # -- housekeeping -----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """The loop's counters and every stage's (``Stage.counters``), for a log line."""
        counts = self.counters.as_dict()
        # Partitions whose end the broker is not telling now (the stall watch cannot judge them).
        counts["ends_unanswered"] = len(self.ends.unanswered())
        for stage in self.stages.values():
            if stage.counters is not None:
                counts.update(stage.counters())
        return counts

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_progress:
            self._next_progress = now + 30.0
            log.info("worker.progress", **self.counts())
        if now >= self._next_watch:
            self._next_watch = now + WATCH_EVERY
            self._flush()  # the watch reads committed offsets, and may open a transaction
            self._watch(now)

    def _watch(self, now: float) -> None:
        """Commit past what the consumer skipped; act on a partition that lags and does not move.

        Per input partition: its committed offset is moved over what the consumer skipped
        (:meth:`_commit_skipped`); a partition whose end is ahead of where the worker stands
        and which does not move is re-sought to its committed offset, then the worker exits 70.

        Where a partition stands is the larger of its committed offset and the consumer's
        position. A read_committed consumer never receives an aborted batch's records, its
        abort marker or a commit marker, so a partition whose tail is one of those keeps its
        committed offset short of the end for good while its position is at the end; before,
        the watch measured end minus committed (forgiving one marker) and such an idle
        partition exited the worker 70 in a loop. The end is the broker's own answer, asked
        from a side thread (:class:`~.ends.EndOffsets`), not the consumer's cache: a
        partition that fetches nothing does not refresh its cache, and would look caught up.

        Time spent riding out an outage (retries, aborted batches) is not a stall: every
        watch starts over after one, and a partition whose end the broker has not told for
        three looks is not judged. Neither is a look after nothing but full batches: the
        client's queue still holds what it prefetched, possibly the records of a partition
        that looks still. So a partition stuck while the others keep the worker at full
        batches is judged once they let the queue run dry.
        """
        # Only full batches since the last look (PrefetchQueue): not a stall. Measured,
        # session 28: a worker started on 200,000 inbound events with a 3 s limit re-sought
        # every by-lead partition, queued behind the events, and exited 70 after 19 s.
        draining = not self._queue.may_judge()
        c = self.counters
        troubles = c.retries + c.aborts + c.rebuilds + c.unavailable
        if troubles != self._troubles:
            self._troubles = troubles
            for tp in self.watches:
                self.watches[tp] = StallWatch(after=self.settings.worker_stall_seconds)
            return
        self._watch_open_tails(now)
        positions = self._consumer_positions()
        if not self._commit_skipped(positions):
            return  # the offsets-only transaction failed: recovered, watches start over
        if draining:
            for watch in self.watches.values():
                watch.wait(now)
            return
        for tp, watch in list(self.watches.items()):
            end = self.ends.end(tp, now, 3 * WATCH_EVERY)
            if end is None:
                self.watches[tp] = StallWatch(after=self.settings.worker_stall_seconds)
                continue  # no fresh answer from the broker for it: nothing known
            committed = self.positions[tp]
            position = positions.get(tp, -1)
            low, _ = self.consumer.get_watermark_offsets(TopicPartition(tp[0], tp[1]), cached=True)
            lag = behind(end, committed, position, low=max(low, 0))
            verdict = watch.observe(now, lag=lag, processed=max(committed, position))
            if verdict is Verdict.RESEEK:
                log.warning(
                    "worker.stalled",
                    partition=f"{tp[0]}:{tp[1]}",
                    lag=lag,
                    committed=committed,
                    position=position,
                    end=end,
                    action="seek to committed offset",
                )
                self.consumer.seek(TopicPartition(tp[0], tp[1], committed))
            elif verdict is Verdict.EXIT:
                log.error(
                    "worker.stalled",
                    partition=f"{tp[0]}:{tp[1]}",
                    lag=lag,
                    committed=committed,
                    position=position,
                    end=end,
                    action="exit 70 for the supervisor",
                )
                os._exit(EXIT_STALLED)

    def _watch_open_tails(self, now: float) -> None:
        """Say loudly when an open transaction holds an input (its lag reads 0 meanwhile)."""
        for tp, watch in self.open_tails.items():
            tail = self.ends.tail(tp, now, 3 * WATCH_EVERY)
            if tail is None or not watch.observe(now, stable=tail[0], high=tail[1]):
                continue
            self.counters.open_transactions += 1
            log.error(
                "worker.open_transaction",
                partition=f"{tp[0]}:{tp[1]}",
                last_stable_offset=tail[0],
                high_watermark=tail[1],
                seconds=round(watch.held_for(now)),
                meaning="a transaction left open holds every read_committed reader here",
                see='docs/operations.md, "The single-node broker killed -9"',
            )

    def _consumer_positions(self) -> dict[TP, int]:
        """The consumer's position of each owned input partition (-1001 when not known)."""
        if not self.positions:
            return {}
        asked = [TopicPartition(t, p) for t, p in self.positions]
        try:
            found = self.consumer.position(asked)
        except KafkaException as exc:
            self._log_once("worker.position_failed", error=str(exc.args[0]))
            return {}
        return {(str(tp.topic), int(tp.partition)): int(tp.offset) for tp in found}

    def _commit_skipped(self, positions: Mapping[TP, int]) -> bool:
        """Commit the position of every partition whose position is past its committed offset.

        Called between batches: every record the consumer delivered has been processed and
        its offset committed, and the position does not count fetched records not yet
        delivered (after a seek it is unknown until the next delivery), so between the
        committed offset and the position there are only entries a read_committed consumer
        skips. Committing past them (one offsets-only transaction for all such partitions)
        lets the group's lag reach 0 (``leadflow.streams.kafka_offsets.group_lag``,
        ``kafka-consumer-groups``) and a restarted worker start at the end.

        Returns:
            ``False`` if the transaction failed (it was aborted and every partition rewound).
        """
        ahead = skipped_to(positions, self.positions)
        if not ahead:
            return True
        try:
            self.producer.begin_transaction()
            self._commit(ahead)
        except KafkaException as exc:
            self._recover(k.classify(exc), exc)
            return False
        self.positions.update(ahead)
        self.counters.skip_commits += 1
        return True

    def _log_once(self, event: str, **fields: object) -> None:
        """Log ``event`` at most every 10 s (an outage would otherwise flood the log)."""
        if self._logged.due(event):
            log.warning(event, **fields)


def _headers(message: Message) -> dict[str, bytes]:
    """A record's headers as a mapping (a header without a value reads as empty bytes)."""
    raw = message.headers()
    pairs = raw.items() if isinstance(raw, dict) else (raw or ())
    return {
        str(name): value if isinstance(value, bytes) else (value or "").encode()
        for name, value in pairs
    }


def _timestamp(message: Message) -> int | None:
    """A record's Kafka timestamp in ms, or None when the log gives none."""
    kind, value = message.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else int(value)


def _or_unknown(offset: int | None) -> int:
    """An offset for a log line: -1 when not known (0 is a real end)."""
    return -1 if offset is None else offset


def _describe(tps: Sequence[TP]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for topic, partition in sorted(tps):
        out.setdefault(topic, []).append(partition)
    return out
