"""The shipped schemas are complete, documented and evolvable."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from leadflow.processors import derived
from leadflow.processors.events import Kind
from leadflow.schemas.catalog import (
    DERIVED_NAMESPACE,
    EVENTS_NAMESPACE,
    Catalog,
    CatalogError,
    build_version,
    fingerprint_of,
    load_catalog,
)
from leadflow.schemas.convert import DERIVED_TYPES, ENVELOPE_FIELDS, Bindings

CATALOG = load_catalog()
ALL_VERSIONS = [sv for versions in CATALOG.versions.values() for sv in versions]


def _fields(avro_type: Any) -> Iterator[Mapping[str, Any]]:
    """Every field of every record defined inline in a type, recursively."""
    if isinstance(avro_type, list):
        for branch in avro_type:
            yield from _fields(branch)
    elif isinstance(avro_type, dict):
        if avro_type.get("type") == "record":
            for field in avro_type["fields"]:
                yield field
                yield from _fields(field["type"])
        elif avro_type.get("type") == "array":
            yield from _fields(avro_type["items"])


def test_every_kind_has_exactly_one_inbound_record() -> None:
    assert set(CATALOG.by_kind) == {k.value for k in Kind}
    for fullname in CATALOG.by_kind.values():
        assert fullname.startswith(EVENTS_NAMESPACE + ".")


def test_every_derived_dataclass_has_a_record() -> None:
    dataclasses_in_module = {
        cls
        for _, cls in inspect.getmembers(derived, inspect.isclass)
        if dataclasses.is_dataclass(cls) and cls.__module__ == derived.__name__
    }
    nested: set[str] = set()
    for sv in ALL_VERSIONS:
        if sv.fullname.startswith(DERIVED_NAMESPACE):
            nested |= {
                name.rsplit(".", 1)[-1] for name in _record_names(sv.raw) if name != sv.raw["name"]
            }
    top = {cls.__name__ for cls in DERIVED_TYPES}
    missing = {cls.__name__ for cls in dataclasses_in_module} - (top | nested)
    assert not missing, (
        f"{sorted(missing)} in processors/derived.py have no Avro record: add "
        "schemas/avsc/derived/<Name>/v1.avsc and the class to DerivedEvent in schemas/convert.py"
    )
    assert top | nested <= {cls.__name__ for cls in dataclasses_in_module}
    for cls in DERIVED_TYPES:
        assert f"{DERIVED_NAMESPACE}.{cls.__name__}" in CATALOG.versions


def _record_names(avro_type: Any) -> Iterator[str]:
    if isinstance(avro_type, list):
        for branch in avro_type:
            yield from _record_names(branch)
    elif isinstance(avro_type, dict):
        if avro_type.get("type") == "record":
            yield str(avro_type["name"])
            for field in avro_type["fields"]:
                yield from _record_names(field["type"])
        elif avro_type.get("type") == "array":
            yield from _record_names(avro_type["items"])


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=lambda sv: f"{sv.fullname}-v{sv.version}")
def test_every_field_is_documented_and_evolvable(sv: Any) -> None:
    assert sv.raw.get("doc"), f"{sv.fullname} has no doc"
    for field in _fields(sv.raw):
        assert field.get("doc"), f"{sv.fullname}.{field['name']} has no doc"
        t = field["type"]
        if isinstance(t, list) and "null" in t:
            assert t[0] == "null", field["name"]
            assert field.get("default", "missing") is None, field["name"]
        if isinstance(t, dict) and t.get("type") in ("map", "array"):
            assert field.get("default") in ({}, []), field["name"]


@pytest.mark.parametrize("fullname", sorted(CATALOG.by_kind.values()))
def test_inbound_records_start_with_the_envelope(fullname: str) -> None:
    for sv in CATALOG.versions[fullname]:
        assert sv.field_names[: len(ENVELOPE_FIELDS)] == ENVELOPE_FIELDS


def test_fingerprints_are_unique_and_eight_bytes() -> None:
    assert len(CATALOG.by_fingerprint) == len(ALL_VERSIONS)
    assert all(len(fp) == 8 for fp in CATALOG.by_fingerprint)


def test_fingerprint_matches_the_avro_spec_vector() -> None:
    # Avro spec: CRC-64-AVRO of the canonical form "null" is 0x63dd24e7cc258f8a, written LE.
    assert fingerprint_of({"type": "null"}) == (0x63DD24E7CC258F8A).to_bytes(8, "little")


def test_bindings_reject_a_dataclass_schema_mismatch() -> None:
    raw = CATALOG.current("io.leadflow.derived.SlaBreached").raw
    broken = dict(raw, fields=[f for f in raw["fields"] if f["name"] != "owner_id"])
    versions = [sv for sv in ALL_VERSIONS if sv.fullname != "io.leadflow.derived.SlaBreached"]
    versions.append(build_version(json.dumps(broken), 1))
    with pytest.raises(CatalogError, match="SlaBreached"):
        Bindings(Catalog(versions))


def test_catalog_rejects_a_gap_in_versions() -> None:
    visit = CATALOG.versions["io.leadflow.events.Visit"][0]
    with pytest.raises(CatalogError, match=r"v1\.\.vN"):
        Catalog([build_version(visit.text, 2)])


def test_catalog_rejects_two_records_of_one_kind() -> None:
    raw = json.loads(CATALOG.current("io.leadflow.events.Custom").text)
    raw["name"] = "Custom2"
    with pytest.raises(CatalogError, match="both declare custom"):
        Catalog([CATALOG.current("io.leadflow.events.Custom"), build_version(json.dumps(raw), 1)])
