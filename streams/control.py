"""Control records: heartbeats and watermark markers, and how readers tell them from data.

The worker processes records in an order that is a function of the log (docs/architecture.md,
"Outputs a function of the log"). Two kinds of small records make that possible without
waiting on the wall clock:

- a **heartbeat** on every partition of ``leadflow.events``, written by whoever writes events
  there (the collector, ``leadflow simulate --via kafka``, tools): header
  ``leadflow.heartbeat`` = a ``received_at`` value in UTC ms, meaning "every record this writer
  puts on this partition from now on has a ``received_at`` of at least this";
- a **marker** a stage sends to every partition of the topic the next stage reads: header
  ``leadflow.marker`` = the stage name, value = JSON ``{"<source partition>": <watermark>}``,
  meaning "no record with an ``R'`` below the watermark will come from those source
  partitions" (the identity stage's markers on ``leadflow.events.by-lead``).

A heartbeat is a bump, not a contract the writer must keep: the identity stage's ``R'`` is
the running maximum of a partition's ``received_at`` values and heartbeats, so a record
written below an earlier heartbeat only sorts later (``processors.ordering``), never breaks
a promise. The collector still keeps it (``streams.collector.receive_clock``): a request
stamped before a heartbeat holds that heartbeat back until its records are queued.

Heartbeats and watermark markers have no key and an empty (heartbeat) or JSON (marker)
value; a model marker is keyed by its workspace. Every reader of these
topics skips a record that carries either header (:func:`is_control`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence

from confluent_kafka import Producer

from leadflow.processors.errors import LeadflowError
from leadflow.streams.logs import get_logger

log = get_logger(__name__)

HEARTBEAT = "leadflow.heartbeat"
MARKER = "leadflow.marker"
# R' of a record the identity stage forwards to events.by-lead (processors/ordering.py).
RECEIVED = "leadflow.r"
# The release position of the record a training example came from (lead stage -> trainer).
POSITION = "leadflow.at"
# A model marker's switch position S and the snapshot's version (trainer -> lead stage).
SWITCH = "leadflow.switch"
VERSION = "leadflow.version"
# Stage names in the ``leadflow.marker`` header.
IDENTITY_MARKER = "identity"  # identity -> events.by-lead: inbound partitions' R'
LEAD_MARKER = "lead"  # lead stage -> training-examples: by-lead partitions' positions
TRAINER_MARKER = "trainer"  # trainer -> events.by-lead: "every switch below this is sent"
MODEL_MARKER = "model"  # trainer -> events.by-lead: a snapshot and where it takes over

HeaderList = (
    Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None] | None
)  # confluent-kafka's message.headers(), or a record's header map


class ControlRecordError(LeadflowError):
    """A control record that does not parse."""


def header(headers: HeaderList, name: str) -> bytes | None:
    """The value of header ``name`` (the first one), or None.

    Example:
        >>> header([("a", b"1"), ("leadflow.heartbeat", b"42")], "leadflow.heartbeat")
        b'42'
        >>> header(None, "x") is None
        True
    """
    for key, value in _pairs(headers):
        if key == name:
            return value.encode() if isinstance(value, str) else (value or b"")
    return None


def _pairs(headers: HeaderList) -> Iterable[tuple[str, bytes | str | None]]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return headers.items()
    return headers


def is_control(headers: HeaderList) -> bool:
    """Whether a record is a heartbeat or a marker (readers of data skip it).

    Example:
        >>> is_control([("leadflow.marker", b"identity")]), is_control([("x", b"1")])
        (True, False)
    """
    return any(key in (HEARTBEAT, MARKER) for key, _ in _pairs(headers))


def heartbeat_value(headers: HeaderList) -> int | None:
    """The ``received_at`` bound a heartbeat carries, or None for any other record.

    Raises:
        ControlRecordError: the header is there but is not a whole number.

    Example:
        >>> heartbeat_value([("leadflow.heartbeat", b"1767225600000")])
        1767225600000
    """
    raw = header(headers, HEARTBEAT)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ControlRecordError(f"heartbeat {raw[:40]!r} is not a number") from None


def marker_record(
    stage: str, watermarks: Mapping[int, int]
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of a marker from ``stage``'s source partitions.

    Example:
        >>> marker_record("identity", {3: 10, 1: 7})
        (b'{"1":7,"3":10}', [('leadflow.marker', b'identity')])
    """
    value = json.dumps({str(p): w for p, w in sorted(watermarks.items())}, separators=(",", ":"))
    return value.encode(), [(MARKER, stage.encode())]


def int_header(headers: HeaderList, name: str) -> int | None:
    """Header ``name`` as a whole number, or None when absent.

    Raises:
        ControlRecordError: the header is there but is not a whole number.

    Example:
        >>> int_header({"leadflow.switch": b"-5"}, "leadflow.switch")
        -5
    """
    raw = header(headers, name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ControlRecordError(f"header {name}={raw[:40]!r} is not a number") from None


def parse_marker(headers: HeaderList, value: bytes) -> tuple[str, dict[int, int]] | None:
    """``(stage, {source partition: watermark})`` of a marker, or None for any other record.

    Raises:
        ControlRecordError: a marker whose value is not the JSON :func:`marker_record` writes.

    Example:
        >>> parse_marker([("leadflow.marker", b"identity")], b'{"1":7}')
        ('identity', {1: 7})
    """
    stage = header(headers, MARKER)
    if stage is None:
        return None
    try:
        raw = json.loads(value)
        return stage.decode(), {int(p): int(w) for p, w in raw.items()}
    except (ValueError, AttributeError, TypeError):
        raise ControlRecordError(f"marker {value[:60]!r} is not a watermark map") from None


Promise = Callable[[int, int], None]
"""Takes one source partition's watermark (e.g. ``StoredRelease.promise``)."""


def take_marker(
    headers: HeaderList,
    value: bytes,
    promises: Mapping[str, tuple[Promise, int] | None],
    *,
    reject: Callable[[ControlRecordError], None],
    who: str,
) -> None:
    """Apply a watermark marker: each source's watermark to its stage's promise.

    ``promises`` maps a stage name to ``(promise, sources)``: the marker's watermarks of
    sources ``0 .. sources - 1`` go to ``promise``; a source beyond that (a topic with more
    partitions than this worker knows of) is logged and skipped, never applied. A stage
    mapped to None is known but not used here; any other stage is logged and skipped.
    A marker that does not parse goes to ``reject`` (the caller dead-letters it).
    ``who`` names the reader in the log events (``<who>.marker_unknown``).

    Example:
        >>> got = []
        >>> take_marker({MARKER: b"lead"}, b'{"0":5,"1":7}', {"lead": (lambda s, w:
        ...     got.append((s, w)), 2)}, reject=print, who="trainer")
        >>> got
        [(0, 5), (1, 7)]
        >>> take_marker({MARKER: b"lead"}, b"[]", {}, reject=print, who="trainer")
        marker b'[]' is not a watermark map
    """
    try:
        parsed = parse_marker(headers, value)
    except ControlRecordError as exc:
        reject(exc)
        return
    if parsed is None:
        return
    name, marks = parsed
    if name not in promises:
        log.warning(f"{who}.marker_unknown", stage=name)
        return
    taker = promises[name]
    if taker is None:
        return
    promise, sources = taker
    for source, mark in marks.items():
        if source < sources:
            promise(source, mark)
        else:
            log.warning(f"{who}.marker_unknown_source", stage=name, source=source,
                        sources=sources)  # fmt: skip


def send_heartbeats(producer: Producer, topic: str, partitions: Iterable[int], value: int) -> int:
    """Produce one heartbeat ``value`` to each partition of ``topic``; return how many.

    The caller flushes (or polls) its producer as for any other record.
    """
    headers: list[tuple[str, str | bytes | None]] = [(HEARTBEAT, str(value).encode())]
    count = 0
    for partition in partitions:
        producer.produce(topic, value=b"", partition=partition, headers=headers)
        count += 1
    return count
