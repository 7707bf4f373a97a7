r"""A downstream consumer of ``leadflow.lead-became-sql``: the start of a CRM sync or alert.

It needs only confluent-kafka, fastavro and the schema file ``BecameSQL/v1.avsc`` (copy it
from leadflow's ``schemas/avsc/derived/``), not leadflow itself. Records use Avro
single-object encoding: 2 marker bytes ``C3 01``, the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema, then the Avro body.

Run it::

    python examples/handoff_consumer.py --bootstrap 127.0.0.1:19092 \\
        --schema schemas/avsc/derived/BecameSQL/v1.avsc

leadflow writes each hand-off once for a ``read_committed`` reader (docs/handoff.md), but
this consumer acts on a record before it commits its offset, so its own crash or a
rebalance in between hands it the record again, always with the same ``transition_id``.
Keep the ids you have acted on (here: a set; in a real service, a unique key in your
database) and skip repeats.

With PII encryption on (leadflow's default) the contact's email, names and phone arrive
sealed (``enc:v2:<kid>:<base64url(nonce, ciphertext, tag)>``, AES-256-GCM). :class:`Keys`
opens them with the keys on the compacted topic ``leadflow.pii-keys`` (it needs the
``cryptography`` package and read access to that topic). After ``leadflow erase`` the
person's keys are gone and every hand-off's contact reads as null: do not copy the
plaintext anywhere you cannot erase it. Plain values (encryption off) pass through, and
then the key topic is never read.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOPIC = "leadflow.lead-became-sql"
KEYS_TOPIC = "leadflow.pii-keys"
MARKER = b"\xc3\x01"
SEALED_FIELDS = ("email", "first_name", "last_name", "phone")  # of the hand-off's contact


def load_schema(path: Path) -> tuple[Any, bytes]:
    """The parsed schema and its CRC-64-AVRO fingerprint, as the 8 bytes records carry."""
    schema = json.loads(path.read_text())
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    return fastavro.parse_schema(schema), fingerprint


def decode(value: bytes, schema: Any, fingerprint: bytes) -> dict[str, Any]:
    """One hand-off as a dict; refuses records written with a schema it does not know."""
    if value[:2] != MARKER:
        raise ValueError("not Avro single-object encoding")
    if value[2:10] != fingerprint:
        raise ValueError(f"unknown writer schema {value[2:10].hex()}: update the .avsc file")
    return dict(fastavro.schemaless_reader(io.BytesIO(value[10:]), schema, schema))


class Keys:
    """The live PII keys, read from ``leadflow.pii-keys`` and kept up to date.

    Records: key ``["key", workspace, subject, kid]`` (JSON) -> the 32 key bytes; a
    tombstone (null value) means the key was shredded. ``["link", ...]`` records tell
    leadflow which devices belong to a lead; a reader ignores them.

    Args:
        bootstrap: Kafka bootstrap servers.
        max_age: seconds after which the view is re-read before opening, so keys shredded
            by ``leadflow erase`` stop opening within that time.
    """

    def __init__(self, bootstrap: str, max_age: float = 5.0) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "handoff-example-keys",
             "enable.auto.commit": False, "enable.partition.eof": True}
        )  # fmt: skip
        partitions = self.consumer.list_topics(KEYS_TOPIC, timeout=10).topics[KEYS_TOPIC]
        self.next = dict.fromkeys(sorted(partitions.partitions), 0)
        self.consumer.assign([TopicPartition(KEYS_TOPIC, p, OFFSET_BEGINNING) for p in self.next])
        self.keys: dict[str, tuple[str, str, bytes]] = {}  # kid -> (workspace, subject, key)
        self.shredded: set[str] = set()
        self.max_age = max_age
        self.read_at: float | None = None

    def catch_up(self, timeout: float = 30.0) -> None:
        """Read every record written so far (up to each partition's current end)."""
        ends = {
            p: self.consumer.get_watermark_offsets(TopicPartition(KEYS_TOPIC, p), cached=False)[1]
            for p in self.next
        }
        deadline = time.monotonic() + timeout
        while any(self.next[p] < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{KEYS_TOPIC} not read to its end")
            message = self.consumer.poll(0.5)
            if message is None:
                continue
            partition, offset = message.partition() or 0, message.offset() or 0
            error = message.error()
            if error is not None:  # the end of a partition whose last records compacted away
                if error.code() == KafkaError._PARTITION_EOF:
                    self.next[partition] = max(self.next[partition], offset)
                continue
            self.next[partition] = offset + 1
            parts = json.loads(message.key() or b"[]")
            if not (isinstance(parts, list) and len(parts) == 4 and parts[0] == "key"):
                continue  # a link record
            _tag, workspace, subject, kid = parts
            value = message.value()
            if value is None:
                self.keys.pop(kid, None)
                self.shredded.add(kid)
            elif kid not in self.shredded:
                self.keys[kid] = (workspace, subject, value)
        self.read_at = time.monotonic()

    def open(self, workspace: str, field: str, value: str | None) -> str | None:
        """The plaintext of a sealed value; None once its key is shredded; plain passes."""
        if value is None or not value.startswith("enc:"):
            return value
        version, kid, blob = value.split(":", 3)[1:]
        if version not in ("v1", "v2"):
            raise ValueError(f"unknown PII envelope {version}: update this consumer")
        stale = self.read_at is None or time.monotonic() - self.read_at > self.max_age
        if stale or (kid not in self.keys and kid not in self.shredded):
            self.catch_up()  # a key younger than our view, or shreds we have not seen yet
        owner = self.keys.get(kid)
        if owner is None or owner[0] != workspace:
            return None
        raw = base64.urlsafe_b64decode(blob)
        # v2 binds the person (the key's subject) too; v1 envelopes are older ones.
        parts = ("leadflow-pii/v2", workspace, owner[1], field, kid)
        if version == "v1":
            parts = ("leadflow-pii/v1", workspace, field, kid)
        try:
            return (
                AESGCM(owner[2]).decrypt(raw[:12], raw[12:], "\x1f".join(parts).encode()).decode()
            )
        except InvalidTag:
            return None

    def close(self) -> None:
        """Release the consumer."""
        self.consumer.close()


def open_contact(handoff: dict[str, Any], keys: Callable[[], Keys]) -> dict[str, Any]:
    """The hand-off with its contact opened; ``keys`` is asked for only if something is sealed."""
    contact = dict(handoff["contact"])
    for field in SEALED_FIELDS:
        value = contact.get(field)
        if isinstance(value, str) and value.startswith("enc:"):
            contact[field] = keys().open(handoff["workspace_id"], field, value)
    return {**handoff, "contact": contact}


def handoffs(
    bootstrap: str, schema_file: Path, group: str, idle_timeout: float = 10.0
) -> Iterator[dict[str, Any]]:
    """Every new hand-off, each once (repeats of a transition_id are skipped).

    Stops after ``idle_timeout`` seconds without a record; a service would loop forever.
    Offsets are committed after the caller has handled each record.
    """
    schema, fingerprint = load_schema(schema_file)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([TOPIC])
    done: set[str] = set()
    try:
        while True:
            message = consumer.poll(idle_timeout)
            if message is None:
                return
            if message.error() is not None:
                continue
            handoff = decode(message.value(), schema, fingerprint)
            if handoff["transition_id"] not in done:
                done.add(handoff["transition_id"])
                yield handoff
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()


def alert_line(handoff: dict[str, Any]) -> str:
    """What a sales-alert bot would post (for a hand-off whose contact is opened)."""
    contact = handoff["contact"]
    first = handoff["first_touch"] or {}
    owner = handoff["owner_id"] or "unassigned"
    name = " ".join(n for n in (contact.get("first_name"), contact.get("last_name")) if n)
    email = contact.get("email")
    person = f"{name} <{email}>" if name and email else name or email or "contact withheld"
    return (
        f"New SQL #{handoff['sql_count']}: {person} at {contact.get('company') or '?'} "
        f"({contact.get('title') or 'unknown title'}), owner {owner}, "
        f"fit {handoff['fit_score']:.0f} / engagement {handoff['engagement_score']:.0f}, "
        f"first touch {first.get('channel', '?')}, why: {handoff['reason']}"
    )


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Print one alert line per hand-off; return how many were printed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument(
        "--schema", type=Path, default=Path("schemas/avsc/derived/BecameSQL/v1.avsc")
    )
    parser.add_argument("--group", default="crm-sync-example")
    args = parser.parse_args(argv)
    count = 0
    opened_keys: list[Keys] = []

    def keys() -> Keys:  # only sealed contacts need the key topic
        if not opened_keys:
            opened_keys.append(Keys(args.bootstrap))
        return opened_keys[0]

    try:
        for handoff in handoffs(args.bootstrap, args.schema, args.group):
            out(alert_line(open_contact(handoff, keys)))
            count += 1
    finally:
        for k in opened_keys:
            k.close()
    return count


if __name__ == "__main__":
    main()
