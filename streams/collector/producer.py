"""The collector's Kafka producer: a 2xx only after the broker acknowledged every event.

confluent-kafka's producer is asynchronous and reports each delivery through a callback
served by ``poll()``. A background thread polls; each request's callbacks count down and
resolve one asyncio future on the request's event loop. ``acks=all`` with the idempotent
producer means an acknowledged event is on every in-sync replica, once, in order per
partition.

Reachability: a delivery error, a delivery that takes longer than the timeout, or
librdkafka reporting all brokers down marks Kafka *suspect*; a monitor thread then asks
for cheap metadata and declares it unavailable or back. While unavailable, requests are
answered 503 at once instead of queueing events nobody acknowledges.

Heartbeats: every ``heartbeat_ms`` while requests come, and as soon as each request's
records are queued (at most one early round per quarter period; until each request is
queued and a round promised past it by the allowed lateness, one more round the allowed
ahead of a stamp later; and once at close) a record with header
``leadflow.heartbeat`` = the receive clock's floor goes to every partition of the topic,
through the same producer, so it follows every record queued before it (the worker
releases records in event-time order once each inbound partition promised past them:
``streams/control.py``). An idle collector writes no heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from leadflow.processors.errors import LeadflowError
from leadflow.streams.collector.dead_letters import DeadLetter
from leadflow.streams.control import send_heartbeats
from leadflow.streams.logs import Throttle, get_logger
from leadflow.streams.topics import COLLECTOR_PARTITIONER, DLQ

log = get_logger(__name__)


def delivery_config(client_config: Mapping[str, Any]) -> dict[str, Any]:
    """The collector producer's delivery settings over ``client_config``.

    Every event acknowledged by all in-sync replicas, once, in order; records wait at most
    5 ms for a batch (an acknowledgement is a request's latency). ``bench.txn_floor``'s
    sender uses the same, so the floor is measured with what the collector sends.

    Example:
        >>> delivery_config({"bootstrap.servers": "127.0.0.1:9092"})["acks"]
        'all'
    """
    return {
        **client_config,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "socket.nagle.disable": True,  # an ack is latency: no request held back
        # librdkafka's default, said: `leadflow rekey` and `dlq replay` follow it.
        "partitioner": COLLECTOR_PARTITIONER,
    }


class KafkaUnavailable(LeadflowError):
    """Kafka did not acknowledge (all of) a request's events; the client must retry."""


class EventProducer:
    """Produce keyed records to one topic and await their acknowledgement.

    Args:
        client_config: librdkafka connection settings (``Settings.kafka_client_config()``).
        topic: the topic every event goes to.
        delivery_timeout: seconds a request waits for its acknowledgements.
        dead_letter_topic: where refused messages go (JSON, with their reasons).
        heartbeat: the floor a heartbeat carries now (none: no heartbeats).
        heartbeat_ms: the heartbeats' period (0: none).
        promised: whether the round that carried this floor promised past every record
            anyone waits for, so rounds can stop until the next request (default: never,
            a round every period).
        late_round_s: after the rounds stop, one more this much later (the allowed ahead
            of a receive stamp, for records held behind another writer's future stamp).
    """

    def __init__(
        self,
        client_config: Mapping[str, Any],
        topic: str,
        delivery_timeout: float,
        dead_letter_topic: str = DLQ.name,
        heartbeat: Callable[[], int] | None = None,
        heartbeat_ms: int = 0,
        promised: Callable[[int], bool] = lambda _floor: False,
        late_round_s: float = 0.0,
    ) -> None:
        self.topic = topic
        self.heartbeat = heartbeat
        self.heartbeat_ms = heartbeat_ms
        self.heartbeats = 0
        self.promised = promised
        self.late_round_s = late_round_s
        self._floor_sent: int | None = None  # the floor of the last round written
        self._partitions: list[int] = []
        self._metadata_log = Throttle(10.0)  # at most every 10 s through an outage
        self.dead_letter_topic = dead_letter_topic
        self.delivery_timeout = delivery_timeout
        self._producer = Producer(
            {
                **delivery_config(client_config),
                # librdkafka gives up (and calls back with an error) slightly before the
                # request stops waiting, so the usual failure is a reported one.
                "message.timeout.ms": max(1000, int(delivery_timeout * 1000) - 500),
                "error_cb": self._on_error,
                # librdkafka's own log lines go through logging (and so structlog, as JSON).
                "logger": logging.getLogger("leadflow.collector.rdkafka"),
                "log_level": 3,
            }
        )
        self.available = True
        self._suspect = threading.Event()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll_loop, name="collector-poll", daemon=True),
            threading.Thread(target=self._monitor_loop, name="collector-monitor", daemon=True),
        ]
        if heartbeat is not None and heartbeat_ms > 0:
            self._threads.append(
                threading.Thread(
                    target=self._heartbeat_loop, name="collector-heartbeat", daemon=True
                )
            )

    def start(self) -> None:
        """Check the broker once (so a dead broker is 503 from the first request), then poll."""
        self.available = self.reachable(timeout=3.0)
        if not self.available:
            log.warning("collector.kafka_unreachable", topic=self.topic)
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the threads."""
        self._stop.set()
        self._kick.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=5)
        if self.heartbeat is not None and self.heartbeat_ms > 0 and self.available:
            self._beat()  # a last promise: everything this process wrote can be released
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("collector.undelivered_at_close", records=remaining)
        self._producer.close()  # stop librdkafka's threads and reconnect attempts now

    def reachable(self, timeout: float = 2.0) -> bool:
        """Whether the broker answers a metadata request that knows the topic."""
        try:
            metadata = self._producer.list_topics(topic=self.topic, timeout=timeout)
        except KafkaException:
            return False
        topic = metadata.topics.get(self.topic)
        return bool(metadata.brokers) and topic is not None and topic.error is None

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._suspect.set()
        if error.fatal():
            log.error("collector.producer_fatal", error=str(error))
            self.available = False

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.poll(0.05)
            except Exception:  # a callback's error must not stop every later delivery
                log.exception("collector.poll_failed")

    def _heartbeat_loop(self) -> None:
        # Heartbeats only while there is something to release: until every request sent
        # so far is queued (its stamp closed: a round follows its records) and a round has
        # promised past it (``promised``), then one late round. An idle collector
        # writes nothing: a round after that costs the worker a chain of transactions that
        # releases nothing (a 10 s tail of them after each burst when this waited out the
        # delivery timeout, docs/benchmarks.md session 10).
        # The late round: a record another writer stamped in the future makes the worker
        # count this process's later records at that stamp, bounded by the record's Kafka
        # timestamp + the allowed ahead (processors/receive_bound.py); those records are
        # released by a floor past it, which the round ``late_round_s`` after the promise
        # carries (the timestamp came before the promise's own floor).
        # A request whose records are queued kicks an early round (they are released
        # without waiting for the period), at most one per quarter period.
        period = self.heartbeat_ms / 1000
        late: float | None = None  # when the late round is due (monotonic)
        while not self._stop.is_set():
            kicked = self._kick.wait(period)
            if self._stop.is_set():
                break
            self._kick.clear()
            if not self.available:
                continue
            if kicked:
                # Kicked as its records were queued, maybe within the millisecond they were
                # stamped in: a floor taken then would not pass that stamp (D = 0 needs
                # F > R'), and the round would release nothing until the next one.
                time.sleep(0.001)
            sent = self._floor_sent
            owed = sent is None or not self.promised(sent)
            if not owed:
                if late is None or time.monotonic() < late:
                    continue
                late = None
            try:
                self._beat()
                if owed:
                    late = time.monotonic() + self.late_round_s
            except Exception:  # a heartbeat is a latency aid: never let it stop the process
                log.exception("collector.heartbeat_failed")
            if kicked:
                self._stop.wait(period / 4)

    def _metadata_failed(self, error: str) -> None:
        if self._metadata_log.due(self.topic):
            log.warning(
                "collector.heartbeat_metadata_failed",
                topic=self.topic,
                error=error,
                partitions_known=len(self._partitions),
            )

    def kick(self) -> None:
        """A request's records were queued: heartbeat soon (they can be released then)."""
        self._kick.set()

    def _beat(self) -> None:
        """One heartbeat on every partition of the topic (in order with the records)."""
        assert self.heartbeat is not None
        if not self._partitions or self.heartbeats % 600 == 0:  # a grown topic is seen
            try:
                meta = self._producer.list_topics(topic=self.topic, timeout=2.0)
                topic = meta.topics.get(self.topic)
                error = "no such topic" if topic is None else topic.error
            except KafkaException as exc:
                topic, error = None, exc.args[0]
            if topic is not None and error is None:
                self._partitions = sorted(topic.partitions)
            else:
                # Without heartbeats the workers release nothing older than the floor they
                # last heard: say why, and keep beating on the partitions known so far.
                self._metadata_failed(str(error))
                if not self._partitions:
                    return
        floor = self.heartbeat()
        try:
            send_heartbeats(self._producer, self.topic, self._partitions, floor)
        except (BufferError, KafkaException) as exc:
            log.warning("collector.heartbeat_refused", error=str(exc))
            return
        self._floor_sent = floor
        self.heartbeats += 1

    def _monitor_loop(self) -> None:
        while not self._stop.wait(0.5):
            if self.available and not self._suspect.is_set():
                continue
            self._suspect.clear()
            # A round queued around a connection loss may never be delivered (heartbeats
            # have no delivery callback): promise again once Kafka answers.
            self._floor_sent = None
            ok = self.reachable(timeout=2.0)
            if ok != self.available:
                log.info("collector.kafka_reachable" if ok else "collector.kafka_unreachable")
            self.available = ok

    async def send(
        self,
        records: Sequence[tuple[bytes, bytes]],
        dead: Sequence[DeadLetter] = (),
        queued: Callable[[], None] | None = None,
    ) -> float:
        """Produce ``(key, value)`` records (and refused messages to the dead-letter topic).

        Returns the seconds until all of them were acknowledged. ``queued`` is called once
        they are all queued on the producer (or refused), before the wait: a heartbeat
        produced after that follows every one of them on its partition.

        Raises:
            KafkaUnavailable: Kafka is known to be unreachable (nothing produced), or some
                delivery failed or timed out (some records may be in Kafka: the client
                retries with the same event ids and downstream dedupes by them).
        """
        if not self.available:
            raise KafkaUnavailable("Kafka is unreachable")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[str]] = loop.create_future()
        total = len(records) + len(dead)
        pending = [total]
        failures: list[str] = []

        def resolve() -> None:
            if not done.done():
                done.set_result(failures)

        lock = threading.Lock()

        def count(settled: int, failure: str | None) -> None:
            # Delivery callbacks run on the poll thread, refusals on this one: hence the lock.
            with lock:
                if failure is not None:
                    failures.append(failure)
                pending[0] -= settled
                last = pending[0] == 0
            if last:
                # A closed loop (shutdown) raises: nobody waits for this answer any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(resolve)

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            count(1, None if err is None else str(err))

        started = time.perf_counter()
        produced = 0
        try:
            for key, value in records:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
                produced += 1
            for letter in dead:
                self._producer.produce(
                    self.dead_letter_topic,
                    value=letter.value,
                    key=letter.key or None,
                    headers=list(letter.headers),
                    on_delivery=on_delivery,
                )
                produced += 1
        except (BufferError, KafkaException) as exc:
            # The rest was never queued: settle it as failed so the future still resolves.
            count(total - produced, f"produce refused: {exc}")
        if queued is not None:
            queued()
        if not total:
            return 0.0
        try:
            outcome = await asyncio.wait_for(done, self.delivery_timeout)
        except TimeoutError:
            self.available = False
            self._suspect.set()
            raise KafkaUnavailable(
                f"no acknowledgement within {self.delivery_timeout:g} s"
            ) from None
        if outcome:
            self._suspect.set()
            raise KafkaUnavailable(f"{len(outcome)} of {total} deliveries failed: {outcome[0]}")
        return time.perf_counter() - started
