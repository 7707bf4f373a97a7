"""Personal data in inbound events: which fields, how they are sealed, what erasure leaves.

Crypto-shredding keeps the event log immutable and still makes a person's PII
unrecoverable: every PII field is stored as an *envelope* encrypted with a key that belongs
to one subject (a workspace's ``person_key``: the device id, else the lead id), and
erasure deletes the key. The log keeps the event, its time, kind, ids, context and
firmographics; the PII then reads as ``None``.

This module is the pure part: the field list, the envelope format, and event rewrites
that take the actual cipher as a function (the AES-GCM code and the keys live in
``leadflow.streams.pii``), so everything here is deterministic.

Envelope: ``enc:v1:<kid>:<blob>`` where ``kid`` names the key (hex) and ``blob`` is the
url-safe base64 of nonce + ciphertext + tag. A value that does not start with ``enc:``
is plaintext (events produced before encryption was on, or with it off) and is left as it
is by :func:`open_event`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from leadflow.processors.errors import InvalidEvent
from leadflow.processors.events import Event, Kind
from leadflow.processors.identity import derive_lead_id

# Fields that identify a person directly. Firmographics (company, title, company size,
# industry, country) stay plaintext: scoring, routing and analytics need them and they
# name a company, not a person.
PII_PAYLOAD_FIELDS: tuple[str, ...] = ("email", "first_name", "last_name", "phone", "subject_email")
PII_CONTEXT_FIELDS: tuple[str, ...] = ("ip", "user_agent")
PII_FIELDS: tuple[str, ...] = PII_PAYLOAD_FIELDS + PII_CONTEXT_FIELDS

PREFIX = "enc:"
VERSION = "v1"
_ENVELOPE = re.compile(r"^enc:v1:([0-9a-f]{8,64}):([A-Za-z0-9_-]+={0,2})$")
# Kinds whose lead id the identity processor derives from an email in the payload.
_EMAIL_OF = {
    Kind.IDENTIFY: "email",
    Kind.FORM_SUBMITTED: "email",
    Kind.ERASURE_REQUESTED: "subject_email",
}

# (workspace_id, field, plaintext) -> envelope; the caller's closure holds the key.
Sealer = Callable[[str, str, str], str]
# (workspace_id, field, envelope) -> plaintext, or None when the key is gone.
Opener = Callable[[str, str, "Envelope"], str | None]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A sealed value: which key (``kid``) and the encrypted bytes (base64url)."""

    kid: str
    blob: str

    def __str__(self) -> str:
        return f"{PREFIX}{VERSION}:{self.kid}:{self.blob}"


def parse_envelope(value: object) -> Envelope | None:
    """The envelope in ``value``, or ``None`` for plaintext (anything not ``enc:``).

    Example:
        >>> parse_envelope("enc:v1:00ff00ff00ff00ff:AAAA")
        Envelope(kid='00ff00ff00ff00ff', blob='AAAA')
        >>> parse_envelope("ada@example.com") is None
        True
        >>> parse_envelope("enc:v9:x")
        Traceback (most recent call last):
        ...
        leadflow.processors.errors.InvalidEvent: malformed PII envelope (enc:v9:...)

    Raises:
        InvalidEvent: the value claims to be an envelope but is not a valid v1 one.
    """
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return None
    match = _ENVELOPE.match(value)
    if match is None:
        raise InvalidEvent(f"malformed PII envelope ({value[:7]}...)")
    return Envelope(kid=match.group(1), blob=match.group(2))


def associated_data(workspace_id: str, field: str, kid: str) -> bytes:
    r"""What each ciphertext is bound to: a sealed email cannot be replayed as a phone.

    Example:
        >>> associated_data("ws", "email", "ab12")
        b'leadflow-pii/v1\x1fws\x1femail\x1fab12'
    """
    return "\x1f".join(("leadflow-pii/v1", workspace_id, field, kid)).encode()


def subject_of(event: Event) -> str:
    """The key subject of an event: its Kafka key (device first, else lead).

    One subject's events share a partition and a key; a lead with several devices has
    several subjects, and erasure deletes the keys of all of them.

    Example:
        >>> subject_of(Event("e", Kind.VISIT, "ws", 1, 1, anonymous_id="a1", lead_id="L"))
        'a1'
    """
    return event.person_key


def has_pii(event: Event) -> bool:
    """Whether any PII field of ``event`` holds a value (sealed or not).

    Example:
        >>> has_pii(Event("e", Kind.IDENTIFY, "ws", 1, 1, lead_id="L", payload={"email": "a@b"}))
        True
        >>> has_pii(Event("e", Kind.VISIT, "ws", 1, 1, anonymous_id="a"))
        False
    """
    ctx = event.context
    return any(event.payload.get(f) is not None for f in PII_PAYLOAD_FIELDS) or any(
        getattr(ctx, f) is not None for f in PII_CONTEXT_FIELDS
    )


def _rewrite(event: Event, change: Callable[[str, Any], Any]) -> Event:
    payload: Mapping[str, Any] = event.payload
    new_payload = {
        k: (change(k, v) if k in PII_PAYLOAD_FIELDS and v is not None else v)
        for k, v in payload.items()
    }
    ctx = event.context
    new_ctx = dataclasses.replace(
        ctx,
        **{
            f: change(f, getattr(ctx, f)) for f in PII_CONTEXT_FIELDS if getattr(ctx, f) is not None
        },
    )
    if new_payload == dict(payload) and new_ctx == ctx:
        return event
    return dataclasses.replace(event, payload=new_payload, context=new_ctx)


def seal_event(event: Event, seal: Sealer) -> Event:
    """Encrypt every PII field of ``event`` with ``seal``; already sealed values stay.

    The identity processor derives a lead id from a form's or identify's email when the
    sender gave no ``userId``; it cannot once the email is sealed, so sealing sets that
    lead id first (the same ``derive_lead_id`` the processor would compute). For an
    erasure request without ``userId`` the subject's email names the lead the same way.

    Example:
        >>> fake = lambda ws, field, text: "enc:v1:00000000:" + text[::-1]
        >>> e = Event("e", Kind.FORM_SUBMITTED, "ws", 1, 1, anonymous_id="a1",
        ...           payload={"email": "ada@x.io", "company": "X"})
        >>> s = seal_event(e, fake)
        >>> s.payload["email"], s.payload["company"], s.lead_id == derive_lead_id("ws", "ada@x.io")
        ('enc:v1:00000000:oi.x@ada', 'X', True)
    """
    lead_id = event.lead_id
    field = _EMAIL_OF.get(event.kind)
    if lead_id is None and field is not None:
        email = event.payload.get(field)
        if isinstance(email, str) and "@" in email and parse_envelope(email) is None:
            lead_id = derive_lead_id(event.workspace_id, email)
    ws = event.workspace_id

    def change(name: str, value: Any) -> Any:
        if parse_envelope(value) is not None:
            return value
        return seal(ws, name, str(value))

    sealed = _rewrite(event, change)
    return sealed if lead_id == sealed.lead_id else dataclasses.replace(sealed, lead_id=lead_id)


def open_event(event: Event, open_: Opener) -> Event:
    """Decrypt every sealed PII field with ``open_``; a shredded key reads as ``None``.

    Plaintext values pass through, so processors work the same with encryption off.

    Example:
        >>> opener = lambda ws, field, env: None if env.kid == "dead0000" else env.blob.upper()
        >>> e = Event("e", Kind.IDENTIFY, "ws", 1, 1, lead_id="L",
        ...           payload={"email": "enc:v1:0000aaaa:ada", "phone": "enc:v1:dead0000:1",
        ...                    "title": "CTO"})
        >>> dict(open_event(e, opener).payload)
        {'email': 'ADA', 'phone': None, 'title': 'CTO'}

    Raises:
        InvalidEvent: a PII field holds a malformed envelope.
    """
    ws = event.workspace_id

    def change(name: str, value: Any) -> Any:
        envelope = parse_envelope(value)
        return value if envelope is None else open_(ws, name, envelope)

    return _rewrite(event, change)


def blank_event(event: Event) -> Event:
    """The event as erasure leaves it: every PII field ``None``, everything else kept.

    Example:
        >>> from leadflow.processors.events import Context
        >>> e = Event("e", Kind.IDENTIFY, "ws", 1, 1, lead_id="L",
        ...           context=Context(ip="203.0.113.7", path="/p"),
        ...           payload={"email": "a@b.c", "company": "B"})
        >>> b = blank_event(e)
        >>> dict(b.payload), b.context.ip, b.context.path
        ({'email': None, 'company': 'B'}, None, '/p')
    """
    return _rewrite(event, lambda _name, _value: None)


def without_device_data(event: Event) -> Event:
    """The event without IP and user agent (what is stored without tracking consent).

    Example:
        >>> from leadflow.processors.events import Context
        >>> e = Event("e", Kind.VISIT, "ws", 1, 1, "a", context=Context(ip="1.2.3.4", path="/"))
        >>> without_device_data(e).context
        Context(url=None, path='/', referrer=None, title=None, utm_source=None, utm_medium=None, utm_campaign=None, utm_term=None, utm_content=None, channel=None, experiment=None, variant=None, user_agent=None, ip=None)
    """  # noqa: E501
    ctx = event.context
    if ctx.ip is None and ctx.user_agent is None:
        return event
    return dataclasses.replace(event, context=dataclasses.replace(ctx, ip=None, user_agent=None))


def tracking_consent(stated: bool | None, event: Event, default: bool) -> bool:
    """Whether a call may store device data (IP, user agent).

    A ``consent_changed`` event states consent for itself; otherwise the call's own
    statement (``context.consent.tracking``) wins, and without one the workspace
    default applies (privacy-preserving ``False`` unless configured).

    Example:
        >>> v = Event("e", Kind.VISIT, "ws", 1, 1, "a")
        >>> tracking_consent(None, v, False), tracking_consent(True, v, False)
        (False, True)
        >>> c = Event("e", Kind.CONSENT_CHANGED, "ws", 1, 1, "a", payload={"tracking": False})
        >>> tracking_consent(True, c, True)
        False
    """
    if event.kind is Kind.CONSENT_CHANGED and isinstance(event.payload.get("tracking"), bool):
        return bool(event.payload["tracking"])
    return default if stated is None else stated
