"""Round trips through both codecs, old versions read into the current one, encode errors."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from fastavro import schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.processors.derived import (
    BecameSQL,
    Contact,
    EngagementSummary,
    Qualification,
    RuleHit,
    Stage,
    StageChanged,
    StageStep,
    Touch,
)
from leadflow.processors.events import Context, Event, Kind
from leadflow.schemas.catalog import build_version, load_catalog
from leadflow.schemas.codec import (
    SINGLE_OBJECT_MAGIC,
    ConfluentCodec,
    EncodeError,
    SingleObjectCodec,
    codec_from_settings,
)
from leadflow.schemas.convert import DERIVED_TYPES, Bindings
from leadflow.streams.settings import load_settings
from tests.unit.schemas.strategies import for_record

CATALOG = load_catalog()
BINDINGS = Bindings(CATALOG)
SINGLE = SingleObjectCodec()
CONFLUENT = ConfluentCodec("mock://")
CODECS = [pytest.param(SINGLE, id="single-object"), pytest.param(CONFLUENT, id="confluent")]
RECORDS = {name: for_record(CATALOG.current(name).raw) for name in sorted(BINDINGS.by_name)}
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _objects(fullname: str) -> st.SearchStrategy[Any]:
    return RECORDS[fullname].map(BINDINGS.by_name[fullname].from_avro)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", list(Kind), ids=str)
@FUZZ
@given(data=st.data())
def test_every_event_kind_round_trips(codec: Any, kind: Kind, data: st.DataObject) -> None:
    event = data.draw(_objects(CATALOG.by_kind[kind.value]))
    assert isinstance(event, Event)
    assert event.kind is kind
    assert codec.decode(codec.encode(event)) == event


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("cls", DERIVED_TYPES, ids=lambda c: c.__name__)
@FUZZ
@given(data=st.data())
def test_every_derived_event_round_trips(codec: Any, cls: type, data: st.DataObject) -> None:
    obj = data.draw(_objects(f"io.leadflow.derived.{cls.__name__}"))
    assert type(obj) is cls
    assert codec.decode(codec.encode(obj)) == obj


@pytest.mark.parametrize("fullname", sorted(BINDINGS.by_name))
@FUZZ
@given(data=st.data())
def test_object_conversion_is_lossless(fullname: str, data: st.DataObject) -> None:
    record = data.draw(RECORDS[fullname])
    binding = BINDINGS.by_name[fullname]
    assert binding.to_avro(binding.from_avro(record)) == record


HANDOFF = BecameSQL(
    transition_id="t-1",
    workspace_id="acme",
    lead_id="lead-1",
    became_sql_at=1_700_000_000_000,
    reason="sales_accepted",
    sql_count=2,
    contact=Contact(email="ana@corp.example", company_size=250),
    segments=("icp_tier_1", "emea"),
    fit_score=40.0,
    engagement_score=12.5,
    top_rules=(RuleHit("pricing_view", 10.0), RuleHit("title_vp", 15.0)),
    model_score=None,
    model_version=None,
    top_features=(),
    qualification=Qualification("BANT", {"budget": "yes"}, 0.25),
    owner_id="rep-1",
    team=None,
    first_touch=Touch("e-1", "ad_click", 1_690_000_000_000, "paid_search", "brand"),
    last_touch=None,
    engagement=EngagementSummary(visits=4, demo_requested=True, last_activity_at=5),
    stage_history=(
        StageStep(Stage.LEAD, 1_690_000_000_000, "identified"),
        StageStep(Stage.RECYCLED, 1_695_000_000_000, "no budget"),
    ),
)


@pytest.mark.parametrize("codec", CODECS)
def test_handoff_keeps_types_field_for_field(codec: Any) -> None:
    back = codec.decode(codec.encode(HANDOFF))
    assert back == HANDOFF
    assert isinstance(back.stage_history, tuple)
    assert back.stage_history[1].stage is Stage.RECYCLED
    assert isinstance(back.contact, Contact)
    assert back.first_touch == HANDOFF.first_touch
    assert back.last_touch is None


def test_stage_changed_first_transition_has_no_from_stage() -> None:
    sc = StageChanged("t", "w", "l", None, Stage.LEAD, 1, "identified", "e", 1)
    back = SINGLE.decode(SINGLE.encode(sc))
    assert back.from_stage is None
    assert back.to_stage is Stage.LEAD


def _visit_v1_record() -> dict[str, Any]:
    return {
        "event_id": "e-old",
        "workspace_id": "ws",
        "occurred_at": 1_600_000_000_000,
        "received_at": 1_600_000_000_100,
        "anonymous_id": "a-1",
        "lead_id": None,
        "context": {name: None for name in Context.__slots__} | {"path": "/pricing"},
        "name": "Pricing",
        "category": None,
    }


def test_old_visit_v1_bytes_decode_into_the_current_version() -> None:
    v1, v2 = CATALOG.versions["io.leadflow.events.Visit"][:2]
    buffer = io.BytesIO(SINGLE_OBJECT_MAGIC + v1.fingerprint)
    buffer.seek(0, io.SEEK_END)
    schemaless_writer(buffer, v1.parsed, _visit_v1_record())
    event = SINGLE.decode(buffer.getvalue())
    assert isinstance(event, Event)
    assert event.kind is Kind.VISIT
    assert event.payload == {
        "name": "Pricing",
        "category": None,
        "search": None,
        "extra_json": None,
    }
    assert event.context.path == "/pricing"
    assert "search" in v2.field_names


def test_confluent_reads_old_and_unknown_newer_writer_schemas() -> None:
    codec = ConfluentCodec("mock://")
    v1 = CATALOG.versions["io.leadflow.events.Visit"][0]
    raw = json.loads(CATALOG.current("io.leadflow.events.Visit").text)
    raw["fields"].append({"name": "later", "type": "string", "default": "x", "doc": "v3"})
    newer = build_version(json.dumps(raw), 99)
    for writer, record in ((v1, _visit_v1_record()), (newer, _visit_v1_record() | {"later": "y"})):
        schema_id = codec.client.register_schema(writer.fullname, Schema(writer.text, "AVRO"))
        buffer = io.BytesIO(struct.pack(">bI", 0, schema_id))
        buffer.seek(0, io.SEEK_END)
        record.setdefault("search", "?q=1")
        schemaless_writer(buffer, writer.parsed, record)
        event = codec.decode(buffer.getvalue())
        assert isinstance(event, Event)
        assert event.event_id == "e-old"
        assert set(event.payload) == {"name", "category", "search", "extra_json"}
    assert event.payload["search"] == "?q=1"


def test_confluent_codecs_sharing_a_registry_read_each_other() -> None:
    producer = ConfluentCodec("mock://")
    consumer = ConfluentCodec("mock://", client=producer.client)
    assert consumer.decode(producer.encode(HANDOFF)) == HANDOFF


def test_confluent_registers_under_the_record_name_subject() -> None:
    codec = ConfluentCodec("mock://")
    data = codec.encode(HANDOFF)
    (schema_id,) = struct.unpack_from(">I", data, 1)
    latest = codec.client.get_latest_version("io.leadflow.derived.BecameSQL")
    assert latest.schema_id == schema_id
    assert data[0] == 0


def test_single_object_header_is_the_current_fingerprint() -> None:
    data = SINGLE.encode(HANDOFF)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == CATALOG.current("io.leadflow.derived.BecameSQL").fingerprint


def test_codec_from_settings_picks_the_wire_format() -> None:
    assert isinstance(codec_from_settings(load_settings()), SingleObjectCodec)
    chosen = codec_from_settings(load_settings(schema_registry_url="mock://"))
    assert isinstance(chosen, ConfluentCodec)


VISIT = Event("e-1", Kind.VISIT, "ws", 1, 2, anonymous_id="a")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (Event("e", Kind.VISIT, "ws", 1, 2, payload={"nmae": "typo"}), r"no field\(s\) \['nmae'\]"),
        (Event("e", Kind.ALIAS, "ws", 1, 2), "previous_id"),
        (Event("e", Kind.DEAL_WON, "ws", 1, 2, payload={"amount": "ten"}), "DealWon"),
        (Event("e", Kind.VISIT, "ws", 2**63, 2), "Visit"),
        (Event("e", Kind.VISIT, "ws", 1, 2, payload={"name": "\ud800"}), "Visit"),
        (Event("e", Kind.CONSENT_CHANGED, "ws", 1, 2, payload={"tracking": "no"}), "bool"),
        (Contact(email="x"), "Contact is not an event"),
        ("a string", "str is not an event"),
    ],
    ids=[
        "unknown-field",
        "missing-required",
        "wrong-type",
        "long-overflow",
        "surrogate",
        "truthy-string-for-bool",
        "nested-record",
        "not-an-event",
    ],
)
def test_encode_errors_name_the_problem(codec: Any, obj: Any, match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        codec.encode(obj)
