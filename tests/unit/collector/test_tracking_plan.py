"""The tracking plan agrees with the shipped Avro schemas, field for field and type for type."""

from __future__ import annotations

import pytest

from leadflow.processors.events import Kind
from leadflow.processors.identity import EMAIL_LEAD_KINDS
from leadflow.schemas.catalog import load_catalog
from leadflow.streams.collector.tracking_plan import (
    KEEPS_EXTRA,
    KIND_FIELDS,
    TRACK_KINDS,
    FieldType,
    kind_for_track,
)

AVRO = {
    FieldType.STRING: "string",
    FieldType.DATE: "string",
    FieldType.INT: "int",
    FieldType.DOUBLE: "double",
    FieldType.BOOLEAN: "boolean",
}


def avro_type(field: dict[str, object]) -> tuple[str, bool]:
    """(base type, nullable) of a payload field."""
    kind = field["type"]
    if isinstance(kind, list):
        rest = [t for t in kind if t != "null"]
        assert len(rest) == 1
        return (rest[0] if isinstance(rest[0], str) else rest[0]["type"]), "null" in kind
    if isinstance(kind, dict):
        return f"{kind['type']}<{kind['values']}>" if kind["type"] == "map" else kind["type"], False
    return str(kind), False


@pytest.mark.parametrize("kind", list(Kind))
def test_fields_match_the_current_schema(kind: Kind) -> None:
    catalog = load_catalog()
    schema = catalog.current(catalog.by_kind[kind.value]).raw
    fields = schema["fields"][7:]  # after the envelope
    if kind is Kind.CONSENT_CHANGED:  # the collector's own consent flag, last (issue 19)
        assert fields[-1]["name"] == "forget"
        assert (fields[-1]["type"], fields[-1]["default"]) == ("boolean", True)
        fields = fields[:-1]
    if kind in EMAIL_LEAD_KINDS:  # the collector's, set when it seals an email with a userId
        assert fields[-1]["name"] == "email_lead_id"
        assert (fields[-1]["type"], fields[-1]["default"]) == (["null", "string"], None)
        fields = fields[:-1]
    if kind in KEEPS_EXTRA:  # the collector's own field, last: not a property of the plan
        assert fields[-1]["name"] == "extra_json"
        assert (fields[-1]["type"], fields[-1]["default"]) == (["null", "string"], None)
        fields = fields[:-1]
    else:
        assert "extra_json" not in [f["name"] for f in fields]
    specs = KIND_FIELDS[kind]
    assert [f["name"] for f in fields] == [s.name for s in specs]
    for field, spec in zip(fields, specs, strict=True):
        base, nullable = avro_type(field)
        expected = "map<string>" if spec.type is FieldType.STRING_MAP else AVRO[spec.type]
        assert base == expected, field["name"]
        # A required field is one the schema cannot store as null; defaults agree.
        if spec.required:
            assert not nullable, field["name"]
            assert "default" not in field, field["name"]
        else:
            assert field.get("default") == spec.default, field["name"]


def test_names_outside_the_plan_are_custom() -> None:
    assert kind_for_track("Email Link Clicked") is Kind.EMAIL_CLICKED
    assert kind_for_track("Ad Clicked") is Kind.AD_CLICK
    assert kind_for_track("email link clicked") is Kind.CUSTOM
    assert kind_for_track("Pricing Viewed") is Kind.CUSTOM
    assert len(TRACK_KINDS) == 16
