"""Every schema version shipped in the package, parsed once and indexed by fingerprint.

The ``.avsc`` files under ``schemas/avsc/<events|derived>/<Record>/v<N>.avsc`` are the
source of truth. Old versions are never deleted: a writer schema is found by its
CRC-64-AVRO fingerprint (single-object encoding) and the data is resolved into the
*current* (highest-numbered) version of the same record, so events written years ago
stay readable.

Inbound schemas carry the event kind as the schema property ``"leadflow.kind"`` (Avro
ignores unknown properties and the parsing canonical form drops them, so it does not
change the fingerprint).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from leadflow.processors.errors import LeadflowError

EVENTS_NAMESPACE = "io.leadflow.events"
DERIVED_NAMESPACE = "io.leadflow.derived"
KIND_PROPERTY = "leadflow.kind"

_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


class CatalogError(LeadflowError):
    """The shipped schemas are inconsistent (a bug in the package, never in the data)."""


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One version of one record schema.

    Attributes:
        fullname: the record's full Avro name, e.g. ``io.leadflow.events.Visit``.
        version: the ``N`` of ``vN.avsc``.
        text: the schema JSON exactly as shipped (what a Schema Registry receives).
        raw: the schema as a JSON object (docs and properties included).
        parsed: the fastavro-parsed schema used for reading and writing; logical types are
            dropped so that timestamps stay epoch-ms ints on the hot path.
        fingerprint: the 8-byte CRC-64-AVRO fingerprint as written on the wire.
    """

    fullname: str
    version: int
    text: str
    raw: Mapping[str, Any]
    parsed: Any
    fingerprint: bytes

    @property
    def field_names(self) -> tuple[str, ...]:
        """The record's top-level field names, in schema order."""
        return tuple(field["name"] for field in self.raw["fields"])

    @property
    def kind(self) -> str | None:
        """The inbound event kind this record carries (``None`` for derived records)."""
        value = self.raw.get(KIND_PROPERTY)
        return str(value) if value is not None else None


def _strip_logical_types(schema: Any) -> Any:
    """A copy of ``schema`` without ``logicalType`` annotations.

    fastavro turns ``timestamp-millis`` into ``datetime`` on read; leadflow keeps times as
    epoch-ms ints everywhere, and converting back and forth on every event would cost more
    than the decode itself. Resolution and fingerprints ignore logical types anyway.
    """
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(item) for item in schema]
    return schema


def fingerprint_of(schema: Mapping[str, Any]) -> bytes:
    """The CRC-64-AVRO fingerprint of a schema's parsing canonical form, wire byte order.

    Example:
        >>> fingerprint_of({"type": "record", "name": "A", "fields": []}).hex()
        '2aa77cd46205caab'
    """
    canonical = to_parsing_canonical_form(copy.deepcopy(dict(schema)))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def parse_for_io(schema: Mapping[str, Any]) -> Any:
    """Parse a schema for fastavro's readers and writers (logical types stripped)."""
    return parse_schema(_strip_logical_types(dict(schema)))


def build_version(text: str, version: int) -> SchemaVersion:
    """Build a :class:`SchemaVersion` from schema JSON text (shipped or from a registry)."""
    raw = json.loads(text)
    namespace = raw.get("namespace")
    name = raw["name"]
    fullname = name if "." in name or not namespace else f"{namespace}.{name}"
    return SchemaVersion(
        fullname=fullname,
        version=version,
        text=text,
        raw=raw,
        parsed=parse_for_io(raw),
        fingerprint=fingerprint_of(raw),
    )


def _walk(folder: Traversable) -> Iterator[tuple[Traversable, str, int]]:
    """Yield ``(file, record folder name, version)`` for every ``vN.avsc`` below ``folder``."""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(entry)
            continue
        match = _VERSION_FILE.match(entry.name)
        if match:
            yield entry, folder.name, int(match.group(1))


class Catalog:
    """All shipped schema versions, by record name and by fingerprint."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        by_name: dict[str, list[SchemaVersion]] = {}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for sv in versions:
            other = self.by_fingerprint.get(sv.fingerprint)
            if other is not None:
                raise CatalogError(
                    f"{sv.fullname} v{sv.version} has the same fingerprint as "
                    f"{other.fullname} v{other.version}: a version must change the schema"
                )
            self.by_fingerprint[sv.fingerprint] = sv
            by_name.setdefault(sv.fullname, []).append(sv)
        self.versions: dict[str, tuple[SchemaVersion, ...]] = {}
        for fullname, found in by_name.items():
            ordered = tuple(sorted(found, key=lambda sv: sv.version))
            numbers = [sv.version for sv in ordered]
            if numbers != list(range(1, len(numbers) + 1)):
                raise CatalogError(f"{fullname}: versions must be v1..vN, found {numbers}")
            self.versions[fullname] = ordered
        self.by_kind: dict[str, str] = {}
        for fullname, ordered in self.versions.items():
            kind = ordered[-1].kind
            if kind is not None:
                if kind in self.by_kind:
                    raise CatalogError(f"{fullname} and {self.by_kind[kind]} both declare {kind}")
                self.by_kind[kind] = fullname

    def current(self, fullname: str) -> SchemaVersion:
        """The newest version of a record: what every decode reads into."""
        try:
            return self.versions[fullname][-1]
        except KeyError:
            raise CatalogError(f"no schema for record {fullname}") from None


def _load_from(root: Traversable) -> Catalog:
    versions = []
    for entry, record_folder, number in _walk(root):
        sv = build_version(entry.read_text(encoding="utf-8"), number)
        if sv.fullname.rsplit(".", 1)[-1] != record_folder:
            raise CatalogError(f"{sv.fullname} v{number} is filed under {record_folder}/")
        versions.append(sv)
    if not versions:
        raise CatalogError("no .avsc files found in the package (broken install?)")
    return Catalog(versions)


@cache
def load_catalog() -> Catalog:
    """The package's catalog, loaded and parsed once per process."""
    return _load_from(resources.files("leadflow.schemas").joinpath("avsc"))
