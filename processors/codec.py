"""Compact state (de)serialisation for the RocksDB tables: positional JSON.

A dataclass becomes a JSON array of its field values in declaration order, with trailing
fields that equal their defaults left out; decoding reads the type hints back. Field
names are not repeated per record, which keeps a typical lead well under 2 KB.

Records above :data:`COMPRESS_OVER` bytes are zlib-compressed (first byte ``z``; plain
records start with ``[``): long-lived leads repeat rule names and timestamps, which
compress 3-4x, while small records skip the CPU cost.

Evolution rule (because records are positional): only ever ADD fields, at the END of a
dataclass, with a default. Renaming, removing or reordering fields needs a new
``VERSION`` and a migration in :func:`decode`.

Every state write and read goes through here (identity and lead steps), so the class-level
work is done once per type: field names and plain defaults are cached per dataclass, and
decoding compiles one function per type instead of re-reading type hints per value. The
bytes written and the values read are the same as before that caching (checked against a
reference copy in ``tests/unit/processors/test_codec_equivalence.py``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import zlib
from collections.abc import Callable, Mapping
from enum import Enum
from functools import cache
from typing import Any, TypeVar

from leadflow.processors.errors import LeadflowError
from leadflow.processors.evolve import field_values

VERSION = 1
COMPRESS_OVER = 1024
# One encoder for every write (and every record key, processors/events.py): ``json.dumps``
# with options builds a new one per call.
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
T = TypeVar("T")


class StateDecodeError(LeadflowError):
    """Stored state bytes that this code cannot read (corrupt or from an unknown version)."""


@cache
def _hints(cls: type) -> tuple[tuple[str, Any, Any], ...]:
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append((f.name, hints[f.name], default))
    return tuple(out)


# Exact types that ``to_plain`` returns unchanged. Checked with ``type(obj) in ...`` (no
# subclasses): most values in a state are these, and one set lookup is far cheaper than the
# dataclass/Enum/Mapping isinstance chain they would otherwise fall through.
_PRIMITIVES = frozenset({str, int, float, bool, type(None)})

_DATACLASS, _ENUM, _SEQUENCE, _OTHER = range(4)


@cache
def _layout(cls: type) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """Field names and plain defaults of dataclass ``cls``, computed once per class.

    Why: trimming trailing defaults compares against ``to_plain(default)``; re-plaining every
    field's default for every object on every encode was most of the encoder's cost. The
    cached plain defaults are only compared, never returned, so sharing them is safe.
    """
    fields = _hints(cls)
    names = tuple(name for name, _, _ in fields)
    defaults = tuple(d if d is dataclasses.MISSING else to_plain(d) for _, _, d in fields)
    return names, defaults


@cache
def _encode_kind(cls: type) -> int:
    """How ``to_plain`` treats instances of ``cls``, in the order it always has.

    Why cached per type: a class's dataclass-ness and its Enum/tuple/list bases are fixed
    when it is created. ``Mapping`` is left out (``_OTHER``) and checked per value, because
    ``Mapping.register`` can change the answer later.
    """
    if dataclasses.is_dataclass(cls):
        return _DATACLASS
    if issubclass(cls, Enum):
        return _ENUM
    if issubclass(cls, tuple | list):
        return _SEQUENCE
    return _OTHER


def to_plain(obj: object) -> Any:
    """A JSON-ready value for ``obj`` (dataclasses as positional arrays).

    Primitives are answered first, in the caller's loop too (most values of a state are
    primitives, and a call per value was most of the encoder's cost), and everything
    class-level (field names, plain defaults, which branch a type takes) is cached per type,
    because this runs for every value of every state on every write. The output is exactly
    what the uncached version produced (``tests/unit/processors/test_codec_equivalence.py``).

    Example:
        >>> from leadflow.processors.derived import RuleHit
        >>> to_plain((RuleHit("pricing", 10.0),))
        [['pricing', 10.0]]
    """
    cls: Any = type(obj)
    if cls in _PRIMITIVES:
        return obj
    kind = _encode_kind(cls)
    if kind == _DATACLASS:
        values = [v if type(v) in _PRIMITIVES else to_plain(v) for v in field_values(cls)(obj)]
        defaults = _layout(cls)[1]
        n = len(values)
        while n and defaults[n - 1] is not dataclasses.MISSING and values[n - 1] == defaults[n - 1]:
            n -= 1
        del values[n:]
        return values
    if kind == _ENUM:
        return obj.value  # type: ignore[attr-defined]
    if kind == _SEQUENCE:
        return [v if type(v) in _PRIMITIVES else to_plain(v) for v in obj]  # type: ignore[attr-defined]
    # Anything else takes the original per-value checks, so an object whose ``__class__``
    # differs from its type (proxies) is treated exactly as before.
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): v if type(v) in _PRIMITIVES else to_plain(v) for k, v in obj.items()}
    return obj


Decoder = Callable[[Any], Any]


def _identity(data: Any) -> Any:
    return data


def _primitive_decoder(tp: type) -> Decoder:
    def check(data: Any) -> Any:
        if not isinstance(data, tp):
            raise StateDecodeError(f"expected {tp.__name__}, got {type(data).__name__}")
        return data

    return check


def _optional_decoder(inner: Decoder) -> Decoder:
    def optional(data: Any) -> Any:
        return None if data is None else inner(data)

    return optional


def _dataclass_decoder(tp: type) -> Decoder:
    # Field decoders are resolved on first use, not here: a dataclass that (indirectly)
    # refers to itself would otherwise recurse forever while its decoder is being built.
    fields: list[tuple[str, Decoder, Any]] = []
    resolved = False

    def record(data: Any) -> Any:
        nonlocal resolved
        if not resolved:
            fields[:] = [(name, _decoder(ftp), default) for name, ftp, default in _hints(tp)]
            resolved = True
        if not isinstance(data, list) or len(data) > len(fields):
            raise StateDecodeError(f"{tp.__name__}: expected at most {len(fields)} values")
        kwargs = {}
        n = len(data)
        for i, (name, decode_field, default) in enumerate(fields):
            if i < n:
                kwargs[name] = decode_field(data[i])
            elif default is dataclasses.MISSING:
                raise StateDecodeError(f"{tp.__name__}.{name} is missing")
        return tp(**kwargs)

    return record


def _unsupported_decoder(tp: Any) -> Decoder:
    # Raised when a value of this type is read, never when the decoder is built: an
    # unsupported ``X | None`` field that holds ``None`` has always decoded fine.
    def unsupported(data: Any) -> Any:
        raise StateDecodeError(f"cannot decode type {tp!r}")

    return unsupported


@cache
def _decoder(tp: Any) -> Decoder:
    """One decoding function per type, built once.

    Why: interpreting the type hints (``get_origin``, ``is_dataclass``, ``get_args``) for
    every value of every record was most of the decoder's cost. The branches, their order
    and the errors they raise are those :func:`from_plain` always had.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _optional_decoder(_decoder(args[0])) if len(args) == 1 else _identity
    if tp is Any or tp is object:
        return _identity
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass_decoder(tp)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp
    if origin is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            item = _decoder(targs[0])
            return lambda data: tuple(item(v) for v in data)
        items = [_decoder(a) for a in targs]
        return lambda data: tuple(f(v) for f, v in zip(items, data, strict=True))
    if origin in (dict, Mapping):
        _, vt = typing.get_args(tp)
        value = _decoder(vt)
        return lambda data: {k: value(v) for k, v in data.items()}
    if tp is float:
        return float
    if tp in (int, str, bool):
        return _primitive_decoder(tp)
    return _unsupported_decoder(tp)


def from_plain(tp: Any, data: Any) -> Any:
    """Rebuild a value of type ``tp`` from :func:`to_plain` output.

    Uses the cached decoder for ``tp`` (see ``_decoder``), so only the first record of a
    type pays for reading its hints.

    Example:
        >>> from leadflow.processors.derived import RuleHit
        >>> from_plain(tuple[RuleHit, ...], [["pricing", 10]])
        (RuleHit(rule='pricing', points=10.0),)
    """
    return _decoder(tp)(data)


def encode(obj: object) -> bytes:
    """``[VERSION, positional-record]`` as compact UTF-8 JSON, zlib'd when large."""
    data = COMPACT_JSON.encode([VERSION, to_plain(obj)]).encode()
    if len(data) > COMPRESS_OVER:
        return b"z" + zlib.compress(data, 6)
    return data


def decode(cls: type[T], data: bytes) -> T:
    """Inverse of :func:`encode` for a dataclass ``cls``.

    Raises:
        StateDecodeError: bytes that are not a version-1 record of ``cls``.
    """
    try:
        if data[:1] == b"z":
            data = zlib.decompress(data[1:])
        version, record = json.loads(data)
    except (ValueError, TypeError, zlib.error) as exc:
        raise StateDecodeError(f"{cls.__name__}: not a state record ({exc})") from None
    if version != VERSION:
        raise StateDecodeError(f"{cls.__name__}: unknown state version {version!r}")
    try:
        value = _decoder(typing.cast(Any, cls))(record)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise StateDecodeError(f"{cls.__name__}: {exc}") from None
    return typing.cast(T, value)
