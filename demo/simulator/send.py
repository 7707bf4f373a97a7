"""Deliver simulated Segment messages: through the collector's HTTP API, or straight to Kafka.

HTTP (the default) exercises the real ingest path: ``POST /v1/batch`` with the write key as
HTTP Basic user name, batches of at most 100 messages and under 500 KB, retries on 429 and
503 honouring ``Retry-After``. Kafka is for bulk volume: each message is mapped to an
:class:`Event` by the collector's own mapping function and encoded by the project codec,
so both paths put the same records on ``leadflow.events``.

Event time is compressed: messages go out as fast as the collector (or ``rate``) allows.
Because the collector corrects client clock skew as ``timestamp + (receivedAt - sentAt)``,
the HTTP sender stamps ``sentAt`` with the wall clock at the moment it sends (as a real
Segment library does when it flushes): the simulated event time survives unchanged.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from leadflow.demo.simulator.generator import Message, iso
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Producer

log = get_logger(__name__)

MAX_BATCH_MESSAGES = 100
MAX_BATCH_BYTES = 500 * 1024 - 2048  # Segment's 500 KB, minus room for the envelope
RETRY_STATUSES = frozenset({429, 503})
PROGRESS_EVERY = 500

OnSent = Callable[[int, Message], None]
"""Progress callback: how many messages just went out, and the last of them."""


class SendError(LeadflowError):
    """The collector or Kafka refused the simulation's messages for good."""


@dataclass(frozen=True, slots=True)
class SendReport:
    """What a sender did.

    Attributes:
        sent: messages acknowledged (HTTP 200 or Kafka delivery report).
        requests: HTTP requests or Kafka produce calls made, retries included.
        retries: retried requests (429, 503, transport errors).
        seconds: wall time spent sending.
    """

    sent: int
    requests: int
    retries: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Messages per wall-clock second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class Pacer:
    """Keeps a sender at or under ``rate`` messages per second (``None``: no limit).

    The clock and the sleep are parameters so that tests need no real waiting.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise SendError(f"rate must be > 0 events/s, got {rate}")
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.started: float | None = None
        self.allowed = 0

    def wait(self, count: int) -> None:
        """Block until ``count`` more messages fit under the rate."""
        if self.rate is None:
            return
        now = self.clock()
        if self.started is None:
            self.started = now
        due = self.started + self.allowed / self.rate
        if due > now:
            self.sleep(due - now)
        self.allowed += count


def batches(
    messages: Iterable[Message],
    max_messages: int = MAX_BATCH_MESSAGES,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[Message]]:
    """Group messages into batches of at most ``max_messages`` and ``max_bytes`` of JSON.

    Lazy: one batch is held at a time.

    Example:
        >>> [len(b) for b in batches(({"n": i} for i in range(250)), max_messages=100)]
        [100, 100, 50]
        >>> [len(b) for b in batches([{"x": "y" * 40}] * 5, max_bytes=120)]
        [2, 2, 1]
    """
    batch: list[Message] = []
    size = 0
    for message in messages:
        length = len(json.dumps(message, ensure_ascii=False).encode()) + 1
        if batch and (len(batch) >= max_messages or size + length > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += length
    if batch:
        yield batch


def retry_after_seconds(value: str | None, default: float, now: datetime) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    Example:
        >>> now = datetime(2026, 1, 1, tzinfo=UTC)
        >>> retry_after_seconds("3", 1.0, now), retry_after_seconds(None, 1.0, now)
        (3.0, 1.0)
        >>> retry_after_seconds("Thu, 01 Jan 2026 00:00:07 GMT", 1.0, now)
        7.0
    """
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, (when - now).total_seconds())


def _wall_now() -> datetime:
    return datetime.now(UTC)


def send_http(
    messages: Iterable[Message],
    *,
    collector_url: str,
    write_key: str,
    rate: float | None = None,
    on_sent: OnSent | None = None,
    max_retries: int = 10,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
    now: Callable[[], datetime] = _wall_now,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Post messages to the collector's ``/v1/batch``; return what was acknowledged.

    Args:
        messages: Segment messages (e.g. ``Simulation(config).messages()``), consumed lazily.
        collector_url: base URL such as ``http://127.0.0.1:8088``.
        write_key: the workspace's write key (HTTP Basic user name, empty password).
        rate: at most this many messages per second (``None``: as fast as allowed).
        on_sent: progress callback after each acknowledged batch.
        max_retries: attempts per batch on 429, 503 and transport errors before giving up.
        timeout: seconds per HTTP request.
        transport: an httpx transport (tests use ``httpx.MockTransport``).
        now: wall clock for ``sentAt`` (the collector's skew correction needs it).
        sleep: how to wait (tests pass a fake).

    Raises:
        SendError: a 4xx other than 429 (the body says what was wrong), or retries exhausted.
    """
    pacer = Pacer(rate, sleep=sleep)
    sent = requests = retries = 0
    started = time.monotonic()
    with httpx.Client(
        base_url=collector_url, auth=(write_key, ""), timeout=timeout, transport=transport
    ) as client:
        for batch in batches(messages):
            pacer.wait(len(batch))
            for attempt in range(max_retries + 1):
                stamp = iso(int(now().timestamp() * 1000))
                body = {"batch": [{**m, "sentAt": stamp} for m in batch], "sentAt": stamp}
                requests += 1
                try:
                    response = client.post(
                        "/v1/batch",
                        content=json.dumps(body, ensure_ascii=False).encode(),
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.TransportError as exc:
                    wait, reason = min(30.0, 0.5 * 2**attempt), f"transport: {exc}"
                else:
                    if response.status_code < 300:
                        break
                    if response.status_code not in RETRY_STATUSES:
                        raise SendError(
                            f"collector answered {response.status_code} to a batch of "
                            f"{len(batch)}: {response.text[:2000]}"
                        )
                    wait = retry_after_seconds(
                        response.headers.get("Retry-After"), min(30.0, 0.5 * 2**attempt), now()
                    )
                    reason = f"status {response.status_code}"
                if attempt == max_retries:
                    raise SendError(f"gave up after {max_retries} retries ({reason})")
                retries += 1
                log.debug("simulate.retry", reason=reason, wait_seconds=wait, attempt=attempt + 1)
                sleep(min(wait, 60.0))
            sent += len(batch)
            if on_sent is not None:
                on_sent(len(batch), batch[-1])
    return SendReport(sent, requests, retries, time.monotonic() - started)


def message_to_event(message: Message, workspace_id: str) -> Event:
    """Map one simulated Segment message to an inbound event with the collector's mapping.

    ``received_at`` is the message's own ``sentAt``, so the bulk path is as deterministic
    as the generator and ``occurred_at`` equals the simulated timestamp.

    Raises:
        SendError: the collector's mapping rejects the message (a simulator bug).
    """
    from leadflow.streams.collector.mapping import MapOptions, map_message

    sent_at = datetime.fromisoformat(str(message["sentAt"]).replace("Z", "+00:00"))
    received = int(sent_at.timestamp() * 1000)
    options = MapOptions(workspace_id=workspace_id, received_at=received, future_tolerance_ms=0)

    def no_id() -> str:
        raise SendError("simulated messages always carry a messageId")

    mapped = map_message(message, str(message["type"]), options, new_id=no_id)
    if isinstance(mapped, list):
        problems = "; ".join(f"{e.path}: {e.message}" for e in mapped)
        raise SendError(f"message {message.get('messageId')} does not map: {problems}")
    return mapped.event


def kafka_sender(settings: Settings) -> Producer:
    """The producer :func:`send_kafka` writes with: acks=all, idempotent, batched.

    Give one to several ``send_kafka`` calls to keep it warm. A new idempotent producer
    holds its records until the broker gave it a producer id, and librdkafka asks again
    only on a 500 ms timer when no connection was up at its first try: on a local broker
    the first records of a fresh producer left after ~0.5 s (measured: first delivery at
    0.52-0.59 s of a 0.45-0.5 s send of 5,000 records; 0.06-0.11 s once warm), which a
    benchmark would count as the pipeline's time (docs/benchmarks.md, session 26).
    """
    from confluent_kafka import Producer

    return Producer(
        {
            **settings.kafka_client_config(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 50,
            "batch.num.messages": 10_000,
        }
    )


def send_kafka(
    messages: Iterable[Message],
    *,
    settings: Settings,
    workspace_id: str,
    rate: float | None = None,
    on_sent: OnSent | None = None,
    flush_timeout: float = 60.0,
    producer: Producer | None = None,
) -> SendReport:
    """Produce messages straight to ``leadflow.events`` (bulk volume, no HTTP).

    Same records as the collector would write: mapped by its mapping function, encoded by
    the project codec, keyed by ``Event.person_key``, acks=all with an idempotent producer
    (``producer``, else a new :func:`kafka_sender`).

    Raises:
        SendError: a message does not map, or Kafka did not acknowledge every record.
    """
    from confluent_kafka import KafkaError

    from leadflow.schemas.codec import codec_from_settings
    from leadflow.streams.control import send_heartbeats
    from leadflow.streams.topics import EVENTS

    codec = codec_from_settings(settings)
    if producer is None:
        producer = kafka_sender(settings)
    failures: list[str] = []
    delivered = 0

    def on_delivery(err: KafkaError | None, _record: Any) -> None:
        nonlocal delivered
        if err is not None:
            failures.append(str(err))
        else:
            delivered += 1

    pacer = Pacer(rate)
    started = time.monotonic()
    produced = 0
    latest = 0
    last: Message | None = None
    for message in messages:
        pacer.wait(1)
        event = message_to_event(message, workspace_id)
        key, value = event.person_key.encode(), codec.encode(event)
        latest = max(latest, event.received_at)
        while True:
            try:
                producer.produce(EVENTS.name, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.2)  # the local queue is full: let deliveries drain
        produced += 1
        if produced % PROGRESS_EVERY == 0:
            producer.poll(0)
            if failures:
                raise SendError(f"Kafka refused records: {failures[:3]}")
            if on_sent is not None:
                on_sent(PROGRESS_EVERY, message)
        last = message
    if produced:
        # As the collector's next heartbeat would: every partition promises past the last
        # record, so the worker releases the tail in event-time order (streams/control.py).
        meta = producer.list_topics(EVENTS.name, timeout=10).topics[EVENTS.name]
        # Past the wall clock too: a collector's heartbeats may have moved R' there already.
        beat = max(latest + 1, time.time_ns() // 1_000_000)
        send_heartbeats(producer, EVENTS.name, sorted(meta.partitions), beat)
    remaining = producer.flush(flush_timeout)
    if on_sent is not None and last is not None and produced % PROGRESS_EVERY:
        on_sent(produced % PROGRESS_EVERY, last)
    if remaining or failures:
        raise SendError(
            f"{remaining} records unacknowledged after {flush_timeout}s; errors: {failures[:3]}"
        )
    return SendReport(delivered, produced, 0, time.monotonic() - started)
