"""Refused messages as records of the dead-letter topic (``leadflow.events.dlq``).

One bad message must not cost the good ones sent with it: the collector stores the rest of
the request and writes the refused message here, with its reasons, so it is visible and can
be fixed and sent again. The headers follow the projector's convention (``reason``,
``error``, ``stage``, ``group``, ``source.*``) so ``leadflow dlq show`` lists collector
refusals next to the others (``by`` = ``collector:<workspace>``).

The value is the message as sent, as compact JSON, except personal data: the log of
refusals must not keep a plaintext email that ``leadflow erase`` could never shred, so the
values of personal fields are replaced by ``"<redacted>"`` (the paths in ``error`` still
say what was wrong).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from leadflow.processors.events import scoped_key
from leadflow.streams.collector.models import FieldError

# Names whose values are personal data wherever they appear in a message.
PII_NAMES = frozenset(
    {
        "email",
        "subject_email",
        "first_name",
        "last_name",
        "firstName",
        "lastName",
        "firstname",
        "lastname",
        "name",
        "phone",
        "ip",
        "userAgent",
        "user_agent",
        "street",
        "address",
        "recipient",
    }
)
REDACTED = "<redacted>"
# The broker refuses records over its message.max.bytes (1 MB by default).
MAX_VALUE_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused message, ready to produce.

    Attributes:
        key: the person key it would have had, scoped to the write key's workspace
            (``["<workspace>","<userId, else anonymousId>"]``, like ``Event.person_key``);
            empty when the message names nobody.
        value: the message as compact JSON, personal values redacted, cut at 512 KB.
        headers: reason, errors and where it came from.
    """

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def redact(value: Any) -> Any:
    """The message with the values of personal fields replaced.

    Example:
        >>> redact({"traits": {"email": "a@b.c", "plan": "pro"}, "context": {"ip": "1.2.3.4"}})
        {'traits': {'email': '<redacted>', 'plan': 'pro'}, 'context': {'ip': '<redacted>'}}
    """
    if isinstance(value, dict):
        return {
            k: (REDACTED if k in PII_NAMES and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def dead_letter(
    raw: Any,
    reason: str,
    errors: Sequence[FieldError],
    *,
    workspace_id: str,
    source: str,
    index: int,
    received_at: int,
) -> DeadLetter:
    """The dead-letter record of one refused message.

    Args:
        raw: the message as parsed from the request.
        reason: ``invalid`` or ``too_large``.
        errors: every problem found, with paths.
        workspace_id: the write key's workspace.
        source: the path it was posted to (``/v1/batch``, ``/webhooks/sendgrid``...).
        index: its place in the request.
        received_at: the collector's receive time, UTC ms.

    Example:
        >>> letter = dead_letter({"userId": "u1", "traits": {"email": "x@y.z"}}, "invalid",
        ...     [FieldError(path="batch[2].timestamp", message="before 1970")],
        ...     workspace_id="acme", source="/v1/batch", index=2, received_at=5)
        >>> letter.key, json.loads(letter.value)["traits"]["email"]
        (b'["acme","u1"]', '<redacted>')
        >>> dict(letter.headers)["reason"], dict(letter.headers)["group"]
        (b'invalid', b'acme')
        >>> deep: dict = {"email": "x@y.z"}
        >>> for _ in range(5000):
        ...     deep = {"a": deep}
        >>> dead_letter(deep, "invalid", [], workspace_id="acme", source="/v1/track", index=0,
        ...     received_at=5).value
        b'{"not_stored": "the message could not be redacted (RecursionError)"}'
    """
    # Scoped like every other key (issue 19): another workspace may use the same id.
    key = ""
    if isinstance(raw, dict):
        for name in ("userId", "anonymousId"):
            if isinstance(raw.get(name), str) and raw[name]:
                key = scoped_key(workspace_id, raw[name])
                break
    try:
        value = json.dumps(redact(raw), ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        # Not the raw text: what could not be redacted may hold personal data.
        value = json.dumps(
            {"not_stored": f"the message could not be redacted ({type(exc).__name__})"}
        ).encode()
    truncated = len(value) > MAX_VALUE_BYTES
    error = json.dumps([e.model_dump() for e in errors], ensure_ascii=False)
    headers = [
        ("reason", reason.encode()),
        ("error", error.encode()),
        ("stage", b"collector"),
        ("group", workspace_id.encode()),
        ("source.topic", source.encode()),
        ("source.partition", str(index).encode()),
        ("source.offset", str(received_at).encode()),
    ]
    if truncated:
        headers.append(("truncated", str(len(value)).encode()))
    return DeadLetter(key.encode(), value[:MAX_VALUE_BYTES], tuple(headers))
