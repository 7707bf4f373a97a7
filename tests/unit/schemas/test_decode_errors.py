"""Every DecodeError reason, so the dead-letter topic always says precisely what was wrong."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from fastavro import schemaless_writer

from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event, Kind
from leadflow.schemas.catalog import Catalog, SchemaVersion, build_version, load_catalog
from leadflow.schemas.codec import (
    SINGLE_OBJECT_MAGIC,
    ConfluentCodec,
    DecodeError,
    SingleObjectCodec,
)
from leadflow.schemas.convert import Bindings

CATALOG = load_catalog()
SINGLE = SingleObjectCodec()
BINDINGS = Bindings(CATALOG)
EVENT = Event("e-1", Kind.VISIT, "ws", 1, 2, anonymous_id="a", payload={"name": "Home"})
GOOD = SINGLE.encode(EVENT)
VISIT = "io.leadflow.events.Visit"


def _reason(codec: Any, data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert isinstance(info.value, LeadflowError)
    assert str(info.value).startswith(info.value.reason + ": ")
    return info.value.reason


def _single_object(writer: SchemaVersion, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO(SINGLE_OBJECT_MAGIC + writer.fingerprint)
    buffer.seek(0, io.SEEK_END)
    schemaless_writer(buffer, writer.parsed, record)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xc3", "truncated_header"),
        (b"\xc3\x01\x00\x01", "truncated_header"),
        (b"\x00\x00\x00\x00\x01\x02", "bad_magic"),
        (b"\xc3\x02" + GOOD[2:], "bad_magic"),
        (b"{}", "bad_magic"),
        (SINGLE_OBJECT_MAGIC + b"\x00" * 8 + GOOD[10:], "unknown_fingerprint"),
        (GOOD[:-3], "corrupt_body"),
        (GOOD[:10], "corrupt_body"),
        (GOOD + b"\x00", "trailing_bytes"),
    ],
    ids=[
        "empty",
        "one-byte",
        "short-header",
        "confluent-bytes",
        "wrong-version-byte",
        "json",
        "unknown-fingerprint",
        "truncated-body",
        "header-only",
        "trailing-bytes",
    ],
)
def test_single_object_reasons(data: bytes, reason: str) -> None:
    assert _reason(SINGLE, data) == reason


def test_invalid_utf8_is_a_corrupt_body() -> None:
    # event_id is the first field: a length byte, then the string's bytes.
    body = bytearray(GOOD)
    assert body[10] == 2 * len("e-1")  # zig-zag length of "e-1"
    body[11] = 0xFF
    assert _reason(SINGLE, bytes(body)) == "corrupt_body"


def test_a_huge_length_prefix_is_a_corrupt_body_not_an_allocation() -> None:
    huge = GOOD[:10] + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"
    assert _reason(SINGLE, huge) == "corrupt_body"


def test_undecodable_into_current_version_is_incompatible_schema() -> None:
    # A catalog whose Visit v2 added a field without default cannot read Visit v1 data.
    raw = json.loads(CATALOG.current(VISIT).text)
    raw["fields"].append({"name": "score", "type": "int", "doc": "breaking: no default"})
    versions = [sv for sv in CATALOG.by_fingerprint.values() if sv.fullname != VISIT]
    v1 = CATALOG.versions[VISIT][0]
    versions += [v1, build_version(json.dumps(raw), 2)]
    codec = SingleObjectCodec(Catalog(versions))
    record = BINDINGS.by_kind[Kind.VISIT].to_avro(EVENT)
    assert "search" not in record  # v1 has no such field
    assert _reason(codec, _single_object(v1, record)) == "incompatible_schema"


def test_a_record_the_dataclass_rejects_is_an_invalid_record() -> None:
    stage_changed = CATALOG.current("io.leadflow.derived.StageChanged")
    record = {
        "transition_id": "t",
        "workspace_id": "w",
        "lead_id": "l",
        "from_stage": None,
        "to_stage": "nirvana",
        "occurred_at": 1,
        "reason": "r",
        "cause_event_id": "e",
        "sequence": 1,
    }
    assert _reason(SINGLE, _single_object(stage_changed, record)) == "invalid_record"


def _confluent(schema_id: int, body: bytes = b"") -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


def test_confluent_reasons() -> None:
    codec = ConfluentCodec("mock://")
    good = codec.encode(EVENT)
    assert _reason(codec, b"") == "empty"
    assert _reason(codec, GOOD) == "bad_magic"
    assert _reason(codec, b"\x00\x00\x01") == "truncated_header"
    assert _reason(codec, _confluent(424242, good[5:])) == "unknown_schema_id"
    assert _reason(codec, good[:-2]) == "corrupt_body"
    assert _reason(codec, good + b"\x01") == "trailing_bytes"


def test_confluent_unknown_record_name() -> None:
    codec = ConfluentCodec("mock://")
    foreign = '{"type": "record", "name": "Order", "namespace": "com.shop", "fields": []}'
    schema_id = codec.client.register_schema("com.shop.Order", Schema(foreign, "AVRO"))
    assert _reason(codec, _confluent(schema_id)) == "unknown_record"


def test_confluent_writer_schema_that_cannot_resolve() -> None:
    codec = ConfluentCodec("mock://")
    raw = json.loads(CATALOG.current(VISIT).text)
    for field in raw["fields"]:
        if field["name"] == "workspace_id":
            field["type"] = "boolean"
    writer = build_version(json.dumps(raw), 0)
    schema_id = codec.client.register_schema(VISIT, Schema(writer.text, "AVRO"))
    record = SINGLE._bindings.by_kind[Kind.VISIT].to_avro(EVENT) | {"workspace_id": True}
    buffer = io.BytesIO()
    schemaless_writer(buffer, writer.parsed, record)
    assert _reason(codec, _confluent(schema_id, buffer.getvalue())) == "incompatible_schema"
