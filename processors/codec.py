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
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import zlib
from collections.abc import Mapping
from enum import Enum
from functools import cache
from typing import Any, TypeVar

from leadflow.processors.errors import LeadflowError

VERSION = 1
COMPRESS_OVER = 1024
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


def to_plain(obj: object) -> Any:
    """A JSON-ready value for ``obj`` (dataclasses as positional arrays).

    Example:
        >>> from leadflow.processors.derived import RuleHit
        >>> to_plain((RuleHit("pricing", 10.0),))
        [['pricing', 10.0]]
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        values = [to_plain(getattr(obj, name)) for name, _, _ in _hints(type(obj))]
        defaults = [d if d is dataclasses.MISSING else to_plain(d) for _, _, d in _hints(type(obj))]
        while (
            values
            and defaults[len(values) - 1] is not dataclasses.MISSING
            and (values[-1] == defaults[len(values) - 1])
        ):
            values.pop()
        return values
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def from_plain(tp: Any, data: Any) -> Any:
    """Rebuild a value of type ``tp`` from :func:`to_plain` output.

    Example:
        >>> from leadflow.processors.derived import RuleHit
        >>> from_plain(tuple[RuleHit, ...], [["pricing", 10]])
        (RuleHit(rule='pricing', points=10.0),)
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        return from_plain(args[0], data) if len(args) == 1 else data
    if tp is Any or tp is object:
        return data
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        fields = _hints(tp)
        if not isinstance(data, list) or len(data) > len(fields):
            raise StateDecodeError(f"{tp.__name__}: expected at most {len(fields)} values")
        kwargs = {}
        for i, (name, ftp, default) in enumerate(fields):
            if i < len(data):
                kwargs[name] = from_plain(ftp, data[i])
            elif default is dataclasses.MISSING:
                raise StateDecodeError(f"{tp.__name__}.{name} is missing")
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(data)
    if origin is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            return tuple(from_plain(targs[0], v) for v in data)
        return tuple(from_plain(a, v) for a, v in zip(targs, data, strict=True))
    if origin in (dict, Mapping):
        _, vt = typing.get_args(tp)
        return {k: from_plain(vt, v) for k, v in data.items()}
    if tp is float:
        return float(data)
    if tp in (int, str, bool):
        if not isinstance(data, tp):
            raise StateDecodeError(f"expected {tp.__name__}, got {type(data).__name__}")
        return data
    raise StateDecodeError(f"cannot decode type {tp!r}")


def encode(obj: object) -> bytes:
    """``[VERSION, positional-record]`` as compact UTF-8 JSON, zlib'd when large."""
    raw = json.dumps([VERSION, to_plain(obj)], separators=(",", ":"), ensure_ascii=False)
    data = raw.encode()
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
        value = from_plain(cls, record)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise StateDecodeError(f"{cls.__name__}: {exc}") from None
    return typing.cast(T, value)
