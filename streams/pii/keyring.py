"""The PII keys, held in the compacted topic ``leadflow.pii-keys``, and who may use them.

Records on the topic (keys are compact JSON arrays, so no separator can be forged):

- ``["key", workspace_id, subject, kid]`` -> the 32-byte AES key. A subject is an event's
  ``person_id`` (device id, else lead id). Several collectors may create keys for one
  subject at the same moment; each gets its own ``kid`` and all of them stay valid.
- ``["link", workspace_id, lead_id, subject]`` -> ``b"1"``: the subject (a device) belongs
  to the lead, so erasing the lead erases the device's keys too.
- a tombstone (value ``null``) under either key deletes it. Compaction later removes the
  key bytes from the log itself; from the tombstone on, every reader forgets the key.

:class:`KeyringState` is the in-memory view (no I/O); :class:`Keyring` follows the topic
with a plain confluent-kafka consumer (faust's GlobalTable hung for us; see
``streams/model_feed.py``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from leadflow.streams.kafka_offsets import EndNotReached, read_to_end, watermarks
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.topics import PII_KEYS

log = get_logger(__name__)


class KeyringError(RuntimeError):
    """The key topic cannot be read or written (the caller must not go on without keys)."""


def _retry(message: Message) -> None:
    """A read error: a fatal one ends the refresh, others are retried.

    A broker going away is reported here too; the client fails over to the new leader by
    itself, within the deadline.
    """
    error = message.error()
    if error is not None and error.fatal():
        raise KeyringError(f"reading {PII_KEYS.name}: {error}")
    log.info("keyring.read_retry", error=str(error))


def key_record_key(workspace_id: str, subject: str, kid: str) -> bytes:
    """The record key of one PII key.

    Example:
        >>> key_record_key("ws", "anon-1", "ab")
        b'["key","ws","anon-1","ab"]'
    """
    return json.dumps(["key", workspace_id, subject, kid], separators=(",", ":")).encode()


def link_record_key(workspace_id: str, lead_id: str, subject: str) -> bytes:
    """The record key saying ``subject`` belongs to ``lead_id``.

    Example:
        >>> link_record_key("ws", "L", "anon-1")
        b'["link","ws","L","anon-1"]'
    """
    return json.dumps(["link", workspace_id, lead_id, subject], separators=(",", ":")).encode()


@dataclass
class KeyringState:
    """Keys and links as the topic says now (apply records in log order).

    Example:
        >>> s = KeyringState()
        >>> s.apply(key_record_key("ws", "a1", "k1"), b"K" * 32)
        >>> s.apply(link_record_key("ws", "L", "a1"), b"1")
        >>> s.current("ws", "a1")[0], s.subjects_of("ws", "L")
        ('k1', ['L', 'a1'])
        >>> s.apply(key_record_key("ws", "a1", "k1"), None)
        >>> s.key("k1") is None, s.current("ws", "a1"), "k1" in s.shredded
        (True, None, True)
    """

    keys: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)
    by_subject: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    links: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    shredded: set[str] = field(default_factory=set)

    def apply(self, record_key: bytes | None, value: bytes | None) -> None:
        """Fold one record of the key topic; records of unknown shape are ignored (logged)."""
        try:
            parts = json.loads(record_key or b"")
        except ValueError:
            parts = None
        if not (
            isinstance(parts, list) and len(parts) == 4 and all(isinstance(p, str) for p in parts)
        ):
            log.warning("pii.keyring.unknown_record")
            return
        tag, workspace_id, a, b = parts
        if tag == "key":
            subject, kid = a, b
            kids = self.by_subject[(workspace_id, subject)]
            if value is None:
                self.keys.pop(kid, None)
                if kid in kids:
                    kids.remove(kid)
                self.shredded.add(kid)
            elif kid not in self.shredded:
                self.keys[kid] = (workspace_id, subject, bytes(value))
                if kid not in kids:
                    kids.append(kid)
        elif tag == "link":
            lead_id, subject = a, b
            if value is None:
                self.links[(workspace_id, lead_id)].discard(subject)
            else:
                self.links[(workspace_id, lead_id)].add(subject)

    def key(self, kid: str) -> bytes | None:
        """The key with id ``kid``, if it exists and was not shredded."""
        entry = self.keys.get(kid)
        return entry[2] if entry else None

    def owner(self, kid: str) -> tuple[str, str] | None:
        """``(workspace_id, subject)`` of a live key."""
        entry = self.keys.get(kid)
        return (entry[0], entry[1]) if entry else None

    def current(self, workspace_id: str, subject: str) -> tuple[str, bytes] | None:
        """The newest live ``(kid, key)`` of a subject, to seal new values with."""
        kids = self.by_subject.get((workspace_id, subject))
        if not kids:
            return None
        kid = kids[-1]
        return kid, self.keys[kid][2]

    def kids_of(self, workspace_id: str, subject: str) -> list[str]:
        """Every live key id of a subject."""
        return list(self.by_subject.get((workspace_id, subject), ()))

    def subjects_of(self, workspace_id: str, lead_id: str) -> list[str]:
        """The lead itself and every device linked to it (sorted, lead first)."""
        linked = sorted(self.links.get((workspace_id, lead_id), set()) - {lead_id})
        return [lead_id, *linked]


def shred_records(
    state: KeyringState, workspace_id: str, lead_id: str, devices: Sequence[str] = ()
) -> tuple[tuple[str, ...], list[tuple[bytes, None]]]:
    """The subjects of an erasure and the tombstones that delete all their keys and links.

    Subjects: the lead, every device linked to it, and ``devices`` (ids the caller knows
    from elsewhere, e.g. the erasure request's own device). Applying the tombstones and
    asking again gives none: erasure is idempotent.

    Example:
        >>> s = KeyringState()
        >>> for rk, v in [(key_record_key("ws", "L", "k1"), b"K"),
        ...               (key_record_key("ws", "a1", "k2"), b"K"),
        ...               (link_record_key("ws", "L", "a1"), b"1")]:
        ...     s.apply(rk, v)
        >>> subjects, tombstones = shred_records(s, "ws", "L")
        >>> subjects, len(tombstones)
        (('L', 'a1'), 3)
        >>> for rk, v in tombstones:
        ...     s.apply(rk, v)
        >>> shred_records(s, "ws", "L")
        (('L',), [])
    """
    subjects = list(state.subjects_of(workspace_id, lead_id))
    subjects += [d for d in devices if d and d not in subjects]
    linked = state.links.get((workspace_id, lead_id), set())
    tombstones: list[tuple[bytes, None]] = []
    for subject in subjects:
        tombstones += [(key_record_key(workspace_id, subject, kid), None)
                       for kid in state.kids_of(workspace_id, subject)]  # fmt: skip
        if subject != lead_id and subject in linked:
            tombstones.append((link_record_key(workspace_id, lead_id, subject), None))
    return tuple(subjects), tombstones


class Keyring:
    """A :class:`KeyringState` kept up to date from ``leadflow.pii-keys``.

    ``refresh()`` reads every partition up to the high watermark it finds when called,
    so after it returns the state includes every key acknowledged before the call.
    Thread-safe: the collector seals from several threads.

    Args:
        settings: Kafka connection settings.
        timeout: how long one refresh may take before :class:`KeyringError`.
    """

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.state = KeyringState()
        self.lock = threading.RLock()
        self.refreshed_at: float | None = None
        self._consumer: Consumer | None = None
        # A second client only asks for end offsets: on the reading consumer's connection a
        # ListOffsets request queues behind the long-polling fetch (fetch.wait.max.ms, 500 ms),
        # which made one refresh of 12 partitions take 6 s even with nothing new.
        self._offsets: Consumer | None = None
        self._next: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset

    def _open(self) -> Consumer:
        if self._consumer is None:
            # Never subscribes or commits: every process reads the whole topic.
            config = {
                **self.settings.kafka_client_config(),
                "group.id": "leadflow-pii-keyring",
                "enable.auto.commit": False,
                "log_level": 3,
            }
            consumer = Consumer({**config, "enable.partition.eof": True})
            try:
                meta = consumer.list_topics(PII_KEYS.name, timeout=self.timeout)
            except Exception as exc:
                consumer.close()
                raise KeyringError(f"cannot reach {PII_KEYS.name}: {exc}") from exc
            topic = meta.topics.get(PII_KEYS.name)
            if topic is None or topic.error is not None or not topic.partitions:
                consumer.close()
                raise KeyringError(f"topic {PII_KEYS.name} missing: run `leadflow topics create`")
            partitions = sorted(topic.partitions)
            # A rebuilt client goes on where this keyring stopped (its state holds what came
            # before); a partition never read starts at its first record (OFFSET_BEGINNING:
            # offset 0 may be gone, and an out-of-range fetch would reset to the end).
            starts = {(PII_KEYS.name, p): self._next.get((PII_KEYS.name, p), 0) for p in partitions}
            consumer.assign(
                [TopicPartition(t, p, at or OFFSET_BEGINNING) for (t, p), at in starts.items()]
            )
            self._next = starts
            self._offsets = Consumer(config)
            self._consumer = consumer
        return self._consumer

    def refresh(self) -> int:
        """Read what was written since the last refresh; return how many records.

        Raises:
            KeyringError: the topic is missing, or not read to its end within the timeout.
        """
        with self.lock:
            consumer = self._open()
            deadline = time.monotonic() + self.timeout
            behind: dict[tuple[str, int], int | None] = {}
            for tp, position in self._next.items():
                high = self._high_watermark(tp[1], deadline)
                if position < high:
                    behind[tp] = high
            read = 0
            try:
                # The consumer reads on at the next refresh: every record it delivers is
                # applied, also one past the end a partition had when this refresh started.
                for message in read_to_end(
                    consumer,
                    behind,
                    deadline=deadline,
                    positions=self._next,
                    on_error=_retry,
                    past_end=True,
                ):
                    self.state.apply(message.key(), message.value())
                    read += 1
            except EndNotReached as exc:
                # The broker told these ends (the other client's ListOffsets answered), yet
                # the reader delivered nothing up to them. An assigned librdkafka consumer can
                # stop fetching for good after a broker restart (librdkafka #5153; a
                # collector's keyring here sealed nothing for 15 min, the records readable by
                # any new client): a new client reads on from ``_next`` at the next refresh.
                self._drop_clients()
                behind_now = {
                    f"{t}:{p}": [self._next.get((t, p)), end]
                    for (t, p), end in sorted(exc.pending.items())
                }
                log.warning(
                    "keyring.reader_rebuilt",
                    behind=behind_now,
                    seconds=self.timeout,
                    meaning="records the broker has were not delivered: a new client reads "
                    "them at the next refresh",
                )
                raise KeyringError(
                    f"{PII_KEYS.name} not read to its end in {self.timeout} s"
                ) from exc
            self.refreshed_at = time.monotonic()
            return read

    def _high_watermark(self, partition: int, deadline: float) -> int:
        assert self._offsets is not None
        try:
            return watermarks(self._offsets, TopicPartition(PII_KEYS.name, partition), deadline)[1]
        except KafkaException as exc:
            raise KeyringError(f"end of {PII_KEYS.name}[{partition}]: {exc}") from exc

    def refresh_if_older(self, seconds: float) -> None:
        """Refresh unless the last refresh is younger than ``seconds``."""
        if self.refreshed_at is None or time.monotonic() - self.refreshed_at >= seconds:
            self.refresh()

    def close(self) -> None:
        """Release the consumer (safe to call twice)."""
        with self.lock:
            self._drop_clients()

    def _drop_clients(self) -> None:
        """Close both clients; the next refresh opens new ones where this one stopped."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._offsets is not None:
            self._offsets.close()
            self._offsets = None
