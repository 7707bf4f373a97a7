"""Conversions between leadflow's in-memory types and the Avro records of their schemas.

Inbound: :class:`~leadflow.processors.events.Event` <-> the kind's record (envelope fields,
``context`` record, then the kind's own fields taken from / put into ``payload``).
Derived: each dataclass of :mod:`leadflow.processors.derived` <-> the record of the same
name; nested dataclasses become nested records, tuples arrays, :class:`Stage` strings.

Converters are compiled once per type from the type hints (no reflection per event), and
checked against the current schema at build time, so a field added to a dataclass without
a schema version (or the other way round) fails at import, not in production.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeAlias

from leadflow.processors import derived
from leadflow.processors.derived import (
    BecameMQL,
    BecameSQL,
    DeadlineTick,
    IdentityLinked,
    LeadMerged,
    LeadScored,
    LeadTransfer,
    MergeRequest,
    NurtureAction,
    OwnerAssigned,
    SlaBreached,
    StageChanged,
    TrainingExample,
)
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Context, Event, Kind
from leadflow.schemas.catalog import DERIVED_NAMESPACE, KIND_PROPERTY, Catalog, CatalogError

DerivedEvent: TypeAlias = (
    StageChanged
    | LeadScored
    | BecameMQL
    | BecameSQL
    | SlaBreached
    | NurtureAction
    | TrainingExample
    | IdentityLinked
    | OwnerAssigned
    | DeadlineTick
    | MergeRequest
    | LeadTransfer
    | LeadMerged
)
"""Every derived event the codec writes as a top-level record (one per contract topic)."""

DERIVED_TYPES: tuple[type[DerivedEvent], ...] = typing.get_args(DerivedEvent)

ENVELOPE_FIELDS = (
    "event_id",
    "workspace_id",
    "occurred_at",
    "received_at",
    "anonymous_id",
    "lead_id",
    "context",
)
CONTEXT_FIELDS = tuple(f.name for f in dataclasses.fields(Context))

Convert = Callable[[Any], Any]


class EncodeError(LeadflowError):
    """An object that cannot be written with its schema (unknown payload field, bad type)."""


def _field_converters(tp: Any) -> tuple[Convert | None, Convert | None]:
    """``(to_avro, from_avro)`` for one annotated type; ``None`` means identity."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise CatalogError(f"unsupported union {tp}")
        inner_to, inner_from = _field_converters(args[0])
        if inner_to is None and inner_from is None:
            return None, None
        to_inner = inner_to or _identity
        from_inner = inner_from or _identity
        return (
            lambda v: None if v is None else to_inner(v),
            lambda v: None if v is None else from_inner(v),
        )
    if origin is tuple:
        item_to, item_from = _field_converters(typing.get_args(tp)[0])
        if item_to is None:
            to_list: Convert = list
        else:
            to_list = lambda v: [item_to(x) for x in v]  # noqa: E731
        if item_from is None:
            from_list: Convert = tuple
        else:
            from_list = lambda v: tuple(item_from(x) for x in v)  # noqa: E731
        return to_list, from_list
    if origin is dict:
        return dict, dict
    if isinstance(tp, type) and issubclass(tp, Enum):
        return (lambda v: v.value), tp
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _record_converters(tp)
    if tp in (str, int, float, bool):
        return None, None
    raise CatalogError(f"no Avro conversion for type {tp}")


def _identity(value: Any) -> Any:
    return value


def _record_converters(cls: type) -> tuple[Convert, Convert]:
    """Compile ``(to_avro, from_avro)`` for a dataclass from its type hints."""
    hints = typing.get_type_hints(cls, vars(derived))
    plan = [(f.name, *_field_converters(hints[f.name])) for f in dataclasses.fields(cls)]

    def to_avro(obj: Any) -> dict[str, Any]:
        record = {}
        for name, to, _ in plan:
            value = getattr(obj, name)
            record[name] = value if to is None else to(value)
        return record

    def from_avro(record: Mapping[str, Any]) -> Any:
        values = {}
        for name, _, back in plan:
            value = record[name]
            values[name] = value if back is None else back(value)
        return cls(**values)

    return to_avro, from_avro


def _check_fields(cls: type, schema: Mapping[str, Any], where: str) -> None:
    """Fail loudly when a dataclass and its current schema disagree on field names."""
    ours = [f.name for f in dataclasses.fields(cls)]
    theirs = [f["name"] for f in schema["fields"]]
    if ours != theirs:
        raise CatalogError(f"{where}: dataclass fields {ours} != schema fields {theirs}")
    hints = typing.get_type_hints(cls, vars(derived))
    for f in schema["fields"]:
        nested = _nested_dataclass(hints[f["name"]])
        record = _record_schema(f["type"])
        if nested is not None and record is not None:
            _check_fields(nested, record, f"{where}.{f['name']}")


def _nested_dataclass(tp: Any) -> type | None:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        found = _nested_dataclass(arg)
        if found is not None:
            return found
    return None


def _record_schema(avro_type: Any) -> Mapping[str, Any] | None:
    """The inline record definition inside a field type (not a by-name reference)."""
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "record":
            return avro_type
        if avro_type.get("type") == "array":
            return _record_schema(avro_type["items"])
    if isinstance(avro_type, list):
        for branch in avro_type:
            found = _record_schema(branch)
            if found is not None:
                return found
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class RecordBinding:
    """How one current record maps to a Python object and back."""

    fullname: str
    to_avro: Callable[[Any], dict[str, Any]]
    from_avro: Callable[[Mapping[str, Any]], Any]


def _event_binding(
    fullname: str, kind: Kind, payload_fields: tuple[str, ...], booleans: tuple[str, ...]
) -> RecordBinding:
    allowed = frozenset(payload_fields)

    def to_avro(event: Event) -> dict[str, Any]:
        payload = event.payload
        unknown = payload.keys() - allowed
        if unknown:
            raise EncodeError(
                f"event {event.event_id}: {kind.value} has no field(s) {sorted(unknown)}"
            )
        for name in booleans:
            # fastavro writes any truthy value as true ("no" included): refuse non-bools.
            value = payload.get(name)
            if value is not None and not isinstance(value, bool):
                raise EncodeError(f"event {event.event_id}: {kind.value}.{name} must be a bool")
        ctx = event.context
        record: dict[str, Any] = {
            "event_id": event.event_id,
            "workspace_id": event.workspace_id,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
            "anonymous_id": event.anonymous_id,
            "lead_id": event.lead_id,
            "context": {name: getattr(ctx, name) for name in CONTEXT_FIELDS},
        }
        record.update(payload)
        return record

    def from_avro(record: Mapping[str, Any]) -> Event:
        return Event(
            event_id=record["event_id"],
            kind=kind,
            workspace_id=record["workspace_id"],
            occurred_at=record["occurred_at"],
            received_at=record["received_at"],
            anonymous_id=record["anonymous_id"],
            lead_id=record["lead_id"],
            context=Context(**record["context"]),
            payload={name: record[name] for name in payload_fields},
        )

    return RecordBinding(fullname, to_avro, from_avro)


class Bindings:
    """Bindings of every current record, by Python type / kind and by record name."""

    def __init__(self, catalog: Catalog) -> None:
        self.by_name: dict[str, RecordBinding] = {}
        self.by_kind: dict[Kind, RecordBinding] = {}
        self.by_type: dict[type, RecordBinding] = {}
        for kind in Kind:
            fullname = catalog.by_kind.get(kind.value)
            if fullname is None:
                raise CatalogError(f"no schema declares {KIND_PROPERTY}={kind.value!r}")
            current = catalog.current(fullname)
            names = current.field_names
            if names[: len(ENVELOPE_FIELDS)] != ENVELOPE_FIELDS:
                raise CatalogError(f"{fullname}: envelope fields must come first, in order")
            booleans = tuple(f["name"] for f in current.raw["fields"] if f["type"] == "boolean")
            binding = _event_binding(fullname, kind, names[len(ENVELOPE_FIELDS) :], booleans)
            self.by_kind[kind] = binding
            self.by_name[fullname] = binding
        for cls in DERIVED_TYPES:
            fullname = f"{DERIVED_NAMESPACE}.{cls.__name__}"
            current = catalog.current(fullname)
            _check_fields(cls, current.raw, fullname)
            to_avro, from_avro = _record_converters(cls)
            binding = RecordBinding(fullname, to_avro, from_avro)
            self.by_type[cls] = binding
            self.by_name[fullname] = binding
        unbound = set(catalog.versions) - set(self.by_name)
        if unbound:
            raise CatalogError(f"schemas without a Python type: {sorted(unbound)}")

    def for_object(self, obj: object) -> RecordBinding:
        """The binding that writes ``obj`` (an :class:`Event` or a derived event)."""
        if isinstance(obj, Event):
            return self.by_kind[obj.kind]
        binding = self.by_type.get(type(obj))
        if binding is None:
            raise EncodeError(f"{type(obj).__name__} is not an event leadflow can encode")
        return binding
