r"""A downstream consumer of ``leadflow.lead-became-sql``: the start of a CRM sync or alert.

It needs only confluent-kafka, fastavro and the schema file ``BecameSQL/v1.avsc`` (copy it
from leadflow's ``schemas/avsc/derived/``), not leadflow itself. Records use Avro
single-object encoding: 2 marker bytes ``C3 01``, the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema, then the Avro body.

Run it::

    python examples/handoff_consumer.py --bootstrap 127.0.0.1:19092 \\
        --schema schemas/avsc/derived/BecameSQL/v1.avsc

Delivery is at least once: a hand-off can arrive twice after a crash or a rebalance, always
with the same ``transition_id``. Keep the ids you have acted on (here: a set; in a real
service, a unique key in your database) and skip repeats.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer

TOPIC = "leadflow.lead-became-sql"
MARKER = b"\xc3\x01"


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
    """What a sales-alert bot would post."""
    contact = handoff["contact"]
    first = handoff["first_touch"] or {}
    owner = handoff["owner_id"] or "unassigned"
    return (
        f"New SQL #{handoff['sql_count']}: {contact.get('company') or '?'} "
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
    for handoff in handoffs(args.bootstrap, args.schema, args.group):
        out(alert_line(handoff))
        count += 1
    return count


if __name__ == "__main__":
    main()
