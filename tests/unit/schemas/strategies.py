"""Hypothesis strategies that draw Avro records straight from the shipped schemas.

Drawing from the schema (not from hand-written lists of fields) means a field added in a
new schema version is fuzzed the moment it exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from leadflow.processors.derived import Stage

# Text the way it arrives: any valid Unicode (no lone surrogates, which UTF-8 cannot hold).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
# Fields whose strings must be Stage values for the dataclasses to accept them.
STAGE_FIELDS = frozenset({"stage", "from_stage", "to_stage"})
STAGES = st.sampled_from([s.value for s in Stage])


def _fullname(schema: Mapping[str, Any], namespace: str | None) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def for_type(
    avro_type: Any,
    named: dict[str, st.SearchStrategy[Any]],
    namespace: str | None = None,
    field_name: str = "",
) -> st.SearchStrategy[Any]:
    """A strategy producing data valid for ``avro_type`` (logical types as plain longs)."""
    if isinstance(avro_type, list):
        return st.one_of([for_type(t, named, namespace, field_name) for t in avro_type])
    if isinstance(avro_type, str):
        if avro_type == "null":
            return st.none()
        if avro_type == "string":
            return STAGES if field_name in STAGE_FIELDS else TEXT
        if avro_type == "int":
            return st.integers(-(2**31), 2**31 - 1)
        if avro_type == "long":
            return st.integers(-(2**63), 2**63 - 1)
        if avro_type == "double":
            return st.floats(allow_nan=False)
        if avro_type == "boolean":
            return st.booleans()
        full = avro_type if "." in avro_type or not namespace else f"{namespace}.{avro_type}"
        return named[full]
    kind = avro_type["type"]
    if kind == "record":
        full = _fullname(avro_type, namespace)
        ns = full.rsplit(".", 1)[0] if "." in full else None
        fields = {f["name"]: for_type(f["type"], named, ns, f["name"]) for f in avro_type["fields"]}
        named[full] = st.fixed_dictionaries(fields)
        return named[full]
    if kind == "map":
        return st.dictionaries(TEXT, for_type(avro_type["values"], named, namespace), max_size=3)
    if kind == "array":
        return st.lists(for_type(avro_type["items"], named, namespace, field_name), max_size=3)
    return for_type(kind, named, namespace, field_name)


def for_record(schema: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A strategy of Avro records (dicts) for a top-level record schema."""
    return for_type(schema, {})
