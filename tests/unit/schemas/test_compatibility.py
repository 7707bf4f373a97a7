"""Full compatibility: every version of a record reads every other version's data.

Data is generated from the writer schema (fastavro.utils.generate_many) and read with the
other version as reader schema, both ways. A schema change that breaks old data (or that
old readers cannot read) fails here, in CI, before any event is written with it.
"""

from __future__ import annotations

import io
import itertools
import json

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.utils import generate_many

from leadflow.schemas.catalog import SchemaVersion, build_version, load_catalog

CATALOG = load_catalog()
SAMPLES = 40


def assert_readable(writer: SchemaVersion, reader: SchemaVersion, samples: int = SAMPLES) -> None:
    """Write generated data with ``writer`` and read it back with ``reader``."""
    for datum in generate_many(writer.parsed, samples):
        buffer = io.BytesIO()
        schemaless_writer(buffer, writer.parsed, datum)
        buffer.seek(0)
        schemaless_reader(buffer, writer.parsed, reader.parsed)
        assert buffer.tell() == len(buffer.getvalue())


PAIRS = [
    pytest.param(w, r, id=f"{w.fullname.rsplit('.', 1)[-1]}-v{w.version}-to-v{r.version}")
    for versions in CATALOG.versions.values()
    for w, r in itertools.product(versions, repeat=2)
]


def test_some_record_really_has_two_versions() -> None:
    # Resolution across versions must be exercised, not theoretical.
    assert any(len(v) > 1 for v in CATALOG.versions.values())
    assert any(w.version != r.version for w, r in (p.values for p in PAIRS))


@pytest.mark.parametrize(("writer", "reader"), PAIRS)
def test_every_version_reads_every_other(writer: SchemaVersion, reader: SchemaVersion) -> None:
    assert_readable(writer, reader)


def _visit_with(extra_field: dict[str, object]) -> SchemaVersion:
    raw = json.loads(CATALOG.current("io.leadflow.events.Visit").text)
    raw["fields"].append(extra_field)
    return build_version(json.dumps(raw), 99)


def test_the_check_catches_a_field_added_without_default() -> None:
    old = CATALOG.current("io.leadflow.events.Visit")
    breaking = _visit_with({"name": "score", "type": "int", "doc": "no default"})
    with pytest.raises(SchemaResolutionError):
        assert_readable(old, breaking)  # new reader cannot fill `score` from old data


def test_the_check_catches_a_type_change() -> None:
    raw = json.loads(CATALOG.current("io.leadflow.events.DealWon").text)
    for field in raw["fields"]:
        if field["name"] == "amount":
            field["type"] = "string"
    changed = build_version(json.dumps(raw), 99)
    with pytest.raises(SchemaResolutionError):
        assert_readable(CATALOG.current("io.leadflow.events.DealWon"), changed)


def test_a_defaulted_field_is_compatible_both_ways() -> None:
    old = CATALOG.current("io.leadflow.events.Visit")
    added = _visit_with({"name": "score", "type": ["null", "int"], "default": None, "doc": "x"})
    assert_readable(old, added)
    assert_readable(added, old)
