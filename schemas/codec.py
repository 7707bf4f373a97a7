"""The codec: leadflow objects <-> Avro bytes on Kafka.

Two wire formats, one API (:class:`Codec`):

- :class:`SingleObjectCodec` (default): Avro single-object encoding, ``C3 01`` + the
  writer schema's 8-byte little-endian CRC-64-AVRO fingerprint + the Avro body. The writer
  schema is found by fingerprint among *all* shipped versions, and the body is resolved into
  the current version of the record, so old events stay readable after a schema evolves.
- :class:`ConfluentCodec` (when ``LEADFLOW_SCHEMA_REGISTRY_URL`` is set): Confluent's wire
  format, byte ``0`` + 4-byte big-endian schema id + the Avro body. Schemas are registered
  under the record-name subject strategy (subject = full record name, e.g.
  ``io.leadflow.events.Visit``), because one topic carries many record types.

Only :class:`DecodeError` means "these bytes are bad": the caller dead-letters the record
with ``error.reason``. Anything else raised while decoding (e.g. a Schema Registry that is
down) is transient and must be retried, never dead-lettered.

Example:
    >>> from leadflow.processors.events import Event, Kind
    >>> codec = SingleObjectCodec()
    >>> event = Event("e-1", Kind.VISIT, "ws", 1_700_000_000_000, 1_700_000_000_050,
    ...               anonymous_id="a-1", payload={"name": "Pricing"})
    >>> data = codec.encode(event)
    >>> data[:2].hex()
    'c301'
    >>> back = codec.decode(data)
    >>> back.payload["name"], back.payload["search"]
    ('Pricing', None)
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event
from leadflow.schemas.catalog import Catalog, SchemaVersion, build_version, load_catalog
from leadflow.schemas.convert import Bindings, DerivedEvent, EncodeError

if TYPE_CHECKING:
    from leadflow.streams.settings import Settings

__all__ = [
    "SINGLE_OBJECT_MAGIC",
    "Codec",
    "ConfluentCodec",
    "DecodeError",
    "DerivedEvent",
    "EncodeError",
    "SingleObjectCodec",
    "codec_from_settings",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_SINGLE_OBJECT_HEADER = len(SINGLE_OBJECT_MAGIC) + 8
_CONFLUENT_MAGIC = 0
_CONFLUENT_HEADER = 5


class DecodeError(LeadflowError):
    """Bytes that cannot be decoded; ``reason`` is a short code for the dead-letter header.

    Reasons: ``empty``, ``truncated_header``, ``bad_magic``, ``unknown_fingerprint``,
    ``unknown_schema_id``, ``unknown_record``, ``incompatible_schema``, ``corrupt_body``,
    ``trailing_bytes``, ``invalid_record``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Codec(Protocol):
    """Writes and reads every leadflow event (inbound :class:`Event` or a derived event)."""

    def encode(self, obj: Event | DerivedEvent) -> bytes:
        """Avro bytes of ``obj`` in this codec's wire format (raises ``EncodeError``)."""
        ...

    def decode(self, data: bytes) -> Event | DerivedEvent:
        """The object ``data`` holds, as the current schema sees it (raises ``DecodeError``)."""
        ...


@cache
def _bindings() -> Bindings:
    return Bindings(load_catalog())


def _write_body(buffer: io.BytesIO, parsed: Any, record: Mapping[str, Any]) -> None:
    try:
        schemaless_writer(buffer, parsed, record)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise EncodeError(f"cannot write {parsed['name']}: {exc}") from exc


def _read_body(
    data: bytes, offset: int, writer: SchemaVersion, reader: SchemaVersion, bindings: Bindings
) -> Event | DerivedEvent:
    """Resolve the body written with ``writer`` into ``reader`` and build the object."""
    stream = io.BytesIO(data)
    stream.seek(offset)
    try:
        record = schemaless_reader(
            stream, writer.parsed, None if writer is reader else reader.parsed
        )
    except (EOFError, struct.error, IndexError, MemoryError, OverflowError) as exc:
        raise DecodeError("corrupt_body", f"{writer.fullname} v{writer.version}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DecodeError("corrupt_body", f"{writer.fullname}: invalid UTF-8: {exc}") from exc
    except SchemaResolutionError as exc:
        raise DecodeError(
            "incompatible_schema",
            f"{writer.fullname} v{writer.version} -> v{reader.version}: {exc}",
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:
        # e.g. a union branch index or enum index out of range in corrupt bytes
        raise DecodeError("corrupt_body", f"{writer.fullname} v{writer.version}: {exc}") from exc
    if stream.tell() != len(data):
        raise DecodeError(
            "trailing_bytes",
            f"{len(data) - stream.tell()} byte(s) after the {writer.fullname} record",
        )
    if not isinstance(record, dict):
        raise DecodeError("corrupt_body", f"{writer.fullname}: not a record")
    try:
        decoded: Event | DerivedEvent = bindings.by_name[reader.fullname].from_avro(record)
        return decoded
    except LeadflowError as exc:
        raise DecodeError("invalid_record", f"{reader.fullname}: {exc}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise DecodeError("invalid_record", f"{reader.fullname}: {exc}") from exc


class SingleObjectCodec:
    """Avro single-object encoding with writer schemas resolved by fingerprint (the default).

    Args:
        catalog: the schema catalog (defaults to the schemas shipped in the package).
    """

    def __init__(self, catalog: Catalog | None = None) -> None:
        self._catalog = catalog or load_catalog()
        self._bindings = _bindings() if catalog is None else Bindings(catalog)
        self._headers: dict[str, bytes] = {
            name: SINGLE_OBJECT_MAGIC + self._catalog.current(name).fingerprint
            for name in self._catalog.versions
        }

    def encode(self, obj: Event | DerivedEvent) -> bytes:
        """Single-object bytes of ``obj``, written with its record's current schema."""
        binding = self._bindings.for_object(obj)
        current = self._catalog.current(binding.fullname)
        buffer = io.BytesIO()
        buffer.write(self._headers[binding.fullname])
        _write_body(buffer, current.parsed, binding.to_avro(obj))
        return buffer.getvalue()

    def decode(self, data: bytes) -> Event | DerivedEvent:
        """The object in single-object ``data``, resolved into the current schema."""
        if not data:
            raise DecodeError("empty", "no bytes")
        if len(data) < _SINGLE_OBJECT_HEADER:
            if not SINGLE_OBJECT_MAGIC.startswith(data[:2]):
                raise DecodeError("bad_magic", f"expected c301, got {data[:2].hex()}")
            raise DecodeError("truncated_header", f"{len(data)} byte(s), need 10")
        if data[:2] != SINGLE_OBJECT_MAGIC:
            raise DecodeError("bad_magic", f"expected c301, got {data[:2].hex()}")
        fingerprint = data[2:_SINGLE_OBJECT_HEADER]
        writer = self._catalog.by_fingerprint.get(fingerprint)
        if writer is None:
            raise DecodeError("unknown_fingerprint", f"no shipped schema has {fingerprint.hex()}")
        reader = self._catalog.current(writer.fullname)
        return _read_body(data, _SINGLE_OBJECT_HEADER, writer, reader, self._bindings)


class ConfluentCodec:
    """Confluent wire format with a Schema Registry (record-name subject strategy).

    Args:
        registry_url: the registry's URL; ``mock://`` gives confluent-kafka's in-memory
            registry (one per client, so pass ``client`` to share it between codecs).
        client: an existing ``SchemaRegistryClient`` to use instead of creating one.
        catalog: the schema catalog (defaults to the schemas shipped in the package).
    """

    def __init__(
        self, registry_url: str, *, client: Any | None = None, catalog: Catalog | None = None
    ) -> None:
        if client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            client = SchemaRegistryClient.new_client({"url": registry_url})
        self._client = client
        self._catalog = catalog or load_catalog()
        self._bindings = _bindings() if catalog is None else Bindings(catalog)
        self._headers: dict[str, bytes] = {}
        self._writers: dict[int, SchemaVersion] = {}

    @property
    def client(self) -> Any:
        """The Schema Registry client (share it to give two codecs the same mock registry)."""
        return self._client

    def _header(self, fullname: str) -> bytes:
        header = self._headers.get(fullname)
        if header is None:
            from confluent_kafka.schema_registry import Schema

            current = self._catalog.current(fullname)
            schema_id = self._client.register_schema(fullname, Schema(current.text, "AVRO"))
            header = struct.pack(">bI", _CONFLUENT_MAGIC, schema_id)
            self._headers[fullname] = header
            self._writers[schema_id] = current
        return header

    def _writer(self, schema_id: int) -> SchemaVersion:
        writer = self._writers.get(schema_id)
        if writer is not None:
            return writer
        from confluent_kafka.schema_registry import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError("unknown_schema_id", f"registry has no id {schema_id}") from exc
            raise
        if not isinstance(schema.schema_str, str):
            raise DecodeError("unknown_schema_id", f"registry id {schema_id} has no schema text")
        fetched = build_version(schema.schema_str, 0)
        writer = self._catalog.by_fingerprint.get(fetched.fingerprint, fetched)
        if writer.fullname not in self._catalog.versions:
            raise DecodeError("unknown_record", f"id {schema_id} is {writer.fullname}")
        self._writers[schema_id] = writer
        return writer

    def encode(self, obj: Event | DerivedEvent) -> bytes:
        """Confluent-framed bytes of ``obj``; registers its current schema on first use."""
        binding = self._bindings.for_object(obj)
        buffer = io.BytesIO()
        buffer.write(self._header(binding.fullname))
        _write_body(buffer, self._catalog.current(binding.fullname).parsed, binding.to_avro(obj))
        return buffer.getvalue()

    def decode(self, data: bytes) -> Event | DerivedEvent:
        """The object in Confluent-framed ``data``, resolved into the current schema."""
        if not data:
            raise DecodeError("empty", "no bytes")
        if data[0] != _CONFLUENT_MAGIC:
            raise DecodeError("bad_magic", f"expected 00, got {data[:1].hex()}")
        if len(data) < _CONFLUENT_HEADER:
            raise DecodeError("truncated_header", f"{len(data)} byte(s), need 5")
        (schema_id,) = struct.unpack_from(">I", data, 1)
        writer = self._writer(schema_id)
        reader = self._catalog.current(writer.fullname)
        return _read_body(data, _CONFLUENT_HEADER, writer, reader, self._bindings)


def codec_from_settings(settings: Settings) -> Codec:
    """The codec the settings ask for: Confluent when a registry URL is set, else single-object.

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> type(codec_from_settings(load_settings(schema_registry_url=""))).__name__
        'SingleObjectCodec'
    """
    if settings.schema_registry_url:
        return ConfluentCodec(settings.schema_registry_url)
    return SingleObjectCodec()
