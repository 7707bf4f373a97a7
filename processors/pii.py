"""Personal data in inbound events: which fields, how they are sealed, what erasure leaves.

Crypto-shredding keeps the event log immutable and still makes a person's PII
unrecoverable: every PII field is stored as an *envelope* encrypted with a key that belongs
to one subject (within a workspace: the device id, else the lead id), and
erasure deletes the key. The log keeps the event, its time, kind, ids, context and
firmographics; the PII then reads as ``None``.

This module is the pure part: the field list, the envelope format, and event rewrites
that take the actual cipher as a function (the AES-GCM code and the keys live in
``leadflow.streams.pii``), so everything here is deterministic.

Envelope: ``enc:v2:<kid>:<blob>`` where ``kid`` names the key (hex) and ``blob`` is the
url-safe base64 of nonce + ciphertext + tag; the ciphertext is bound (AES-GCM associated
data) to its workspace, its subject (the person whose key sealed it), its field and its key
id. ``enc:v1`` envelopes (sealed before the subject was bound) still open; for both versions
the opener also insists that the key belongs to the event's own workspace and subject, so a
ciphertext copied into another person's event opens to ``None``. A value that does not start
with ``enc:`` is plaintext (events produced before encryption was on, or with it off) and is
left as it is by :func:`open_event`. Only the collector seals: :func:`seal_event` treats
every value it is given as plaintext, whatever it looks like.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from leadflow.processors.derived import Contact
from leadflow.processors.errors import InvalidEvent
from leadflow.processors.events import Event, Kind
from leadflow.processors.evolve import evolve
from leadflow.processors.identity import EMAIL_LEAD_FIELD, EMAIL_LEAD_KINDS, derive_lead_id
from leadflow.processors.scoring import email_domain

# Fields that identify a person directly. Firmographics (company, title, company size,
# industry, country) stay plaintext: scoring, routing and analytics need them and they
# name a company, not a person. ``extra_json`` holds whatever properties/traits the kind
# has no field for: free-form, so it may name a person, and is sealed like an email.
EXTRA_FIELD = "extra_json"
PII_PAYLOAD_FIELDS: tuple[str, ...] = (
    "email", "first_name", "last_name", "phone", "subject_email", EXTRA_FIELD,
)  # fmt: skip
PII_CONTEXT_FIELDS: tuple[str, ...] = ("ip", "user_agent")
PII_FIELDS: tuple[str, ...] = PII_PAYLOAD_FIELDS + PII_CONTEXT_FIELDS
# The hand-off's contact fields that carry those values (sealed when encryption is on).
CONTACT_PII_FIELDS: tuple[str, ...] = ("email", "first_name", "last_name", "phone")

PREFIX = "enc:"
VERSION = "v2"
# v1: associated data without the subject (still opened, never written any more).
VERSIONS = ("v1", "v2")
_ENVELOPE = re.compile(r"enc:(v1|v2):([0-9a-f]{8,64}):([A-Za-z0-9_-]+={0,2})")
# Kinds whose lead id the identity processor derives from an email in the payload.
_EMAIL_OF = {
    Kind.IDENTIFY: "email",
    Kind.FORM_SUBMITTED: "email",
    Kind.ERASURE_REQUESTED: "subject_email",
}

# (workspace_id, subject, field, plaintext) -> envelope; the caller's closure holds the key.
Sealer = Callable[[str, str, str, str], str]
# (workspace_id, subject, field, envelope) -> plaintext, or None when the key is gone or
# belongs to someone else. ``subject`` None: any subject of the workspace (a hand-off's
# contact gathers values of the lead's several subjects; each was checked against its own
# event's subject when the lead agent kept it).
Opener = Callable[[str, "str | None", str, "Envelope"], "str | None"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A sealed value: which key (``kid``), the encrypted bytes (base64url), the format."""

    kid: str
    blob: str
    version: str = VERSION

    def __str__(self) -> str:
        return f"{PREFIX}{self.version}:{self.kid}:{self.blob}"


def parse_envelope(value: object) -> Envelope | None:
    """The envelope in ``value``, or ``None`` for plaintext (anything not ``enc:``).

    Example:
        >>> parse_envelope("enc:v2:00ff00ff00ff00ff:AAAA")
        Envelope(kid='00ff00ff00ff00ff', blob='AAAA', version='v2')
        >>> parse_envelope("ada@example.com") is None
        True
        >>> parse_envelope("enc:v9:x")
        Traceback (most recent call last):
        ...
        leadflow.processors.errors.InvalidEvent: malformed PII envelope (enc:v9:...)

    Raises:
        InvalidEvent: the value claims to be an envelope but is not a valid v1/v2 one.
    """
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return None
    match = _ENVELOPE.fullmatch(value)  # fullmatch: "$" would let a trailing newline in
    if match is None:
        raise InvalidEvent(f"malformed PII envelope ({value[:7]}...)")
    return Envelope(kid=match.group(2), blob=match.group(3), version=match.group(1))


def associated_data(version: str, workspace_id: str, subject: str, field: str, kid: str) -> bytes:
    r"""What a ciphertext is bound to: its workspace, person, field and key.

    A sealed email cannot be replayed as a phone, in another workspace, or (``v2``) as
    another person's value even under a key of that person. ``v1`` (older envelopes) did
    not bind the subject; the opener checks the key's owner instead.

    Example:
        >>> associated_data("v2", "ws", "a1", "email", "ab12")
        b'leadflow-pii/v2\x1fws\x1fa1\x1femail\x1fab12'
        >>> associated_data("v1", "ws", "a1", "email", "ab12")
        b'leadflow-pii/v1\x1fws\x1femail\x1fab12'
    """
    if version == "v1":
        return "\x1f".join(("leadflow-pii/v1", workspace_id, field, kid)).encode()
    return "\x1f".join((f"leadflow-pii/{version}", workspace_id, subject, field, kid)).encode()


def subject_of(event: Event) -> str:
    """The key subject of an event: its device id, else its lead id (within its workspace).

    One subject's events share a partition; a lead with several devices has several
    subjects, and erasure deletes the keys of all of them. Deliberately not the Kafka record
    key: that one also names the workspace, which the key topic records separately.

    Example:
        >>> subject_of(Event("e", Kind.VISIT, "ws", 1, 1, anonymous_id="a1", lead_id="L"))
        'a1'
        >>> subject_of(Event("e", Kind.DEAL_WON, "ws", 1, 1, lead_id="L"))
        'L'

    Raises:
        InvalidEvent: the event names no person.
    """
    subject = event.anonymous_id or event.lead_id
    if not subject:
        raise InvalidEvent(f"event {event.event_id} has neither lead_id nor anonymous_id")
    return subject


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
    new_ctx = evolve(
        ctx,
        **{
            f: change(f, getattr(ctx, f)) for f in PII_CONTEXT_FIELDS if getattr(ctx, f) is not None
        },
    )
    if new_payload == dict(payload) and new_ctx == ctx:
        return event
    return evolve(event, payload=new_payload, context=new_ctx)


def seal_event(event: Event, seal: Sealer) -> Event:
    """Encrypt every PII field of ``event`` with ``seal``, bound to the event's subject.

    Every value is plaintext here, including one that looks like an envelope: only the
    collector seals, so a client cannot hand in a ciphertext (copied from another person,
    or malformed) and have it stored as if the collector had sealed it.

    The identity processor derives a lead id from a form's or identify's email when the
    sender gave no ``userId``; it cannot once the email is sealed, so sealing sets that
    lead id first (the same ``derive_lead_id`` the processor would compute). For an
    erasure request without ``userId`` the subject's email names the lead the same way.
    When the sender named a user too, the email's lead id goes in the record's
    ``email_lead_id`` instead, so identity can still merge that email's lead into the user.

    Example:
        >>> fake = lambda ws, subject, field, text: f"enc:v2:0000000{len(subject)}:" + text[::-1]
        >>> e = Event("e", Kind.FORM_SUBMITTED, "ws", 1, 1, anonymous_id="a1",
        ...           payload={"email": "ada@x.io", "company": "X"})
        >>> s = seal_event(e, fake)
        >>> s.payload["email"], s.payload["company"], s.lead_id == derive_lead_id("ws", "ada@x.io")
        ('enc:v2:00000002:oi.x@ada', 'X', True)
        >>> seal_event(s, fake).payload["email"]  # a sealed-looking value is sealed again
        'enc:v2:00000002:ada@x.io:20000000:2v:cne'
        >>> u = seal_event(evolve(e, lead_id="user-1"), fake)
        >>> u.lead_id, u.payload["email_lead_id"] == derive_lead_id("ws", "ada@x.io")
        ('user-1', True)

    Raises:
        InvalidEvent: the event names no person (no subject to seal for).
    """
    lead_id = event.lead_id
    field = _EMAIL_OF.get(event.kind)
    email = event.payload.get(field) if field is not None else None
    email_lead = (
        derive_lead_id(event.workspace_id, email)
        if isinstance(email, str) and "@" in email
        else None
    )
    ws = event.workspace_id
    subject = subject_of(event)
    sealed = _rewrite(event, lambda name, value: seal(ws, subject, name, str(value)))
    if email_lead is None:
        return sealed
    if lead_id is None:
        return evolve(sealed, lead_id=email_lead)
    if event.kind in EMAIL_LEAD_KINDS:
        # The sender named a user and an email: identity links that email's lead to the user
        # (rule 3 of processors.identity) through this field, the email being sealed.
        payload = {**sealed.payload, EMAIL_LEAD_FIELD: email_lead}
        return evolve(sealed, payload=payload)
    return sealed


def open_event(event: Event, open_: Opener) -> Event:
    """Decrypt every sealed PII field with ``open_``; a shredded key reads as ``None``.

    Plaintext values pass through, so processors work the same with encryption off. The
    opener learns the event's subject: a value sealed for anyone else opens to ``None``.

    Example:
        >>> opener = lambda ws, subject, field, env: (
        ...     None if env.kid == "dead0000" else f"{env.blob.upper()} of {subject}")
        >>> e = Event("e", Kind.IDENTIFY, "ws", 1, 1, lead_id="L",
        ...           payload={"email": "enc:v2:0000aaaa:ada", "phone": "enc:v1:dead0000:1",
        ...                    "title": "CTO"})
        >>> dict(open_event(e, opener).payload)
        {'email': 'ADA of L', 'phone': None, 'title': 'CTO'}

    Raises:
        InvalidEvent: a PII field holds a malformed envelope, or the event names no person.
    """
    ws = event.workspace_id
    subject = subject_of(event) if has_pii(event) else None

    def change(name: str, value: Any) -> Any:
        envelope = parse_envelope(value)
        return value if envelope is None else open_(ws, subject, name, envelope)

    return _rewrite(event, change)


@dataclass(frozen=True, slots=True)
class PiiFacts:
    """What the processors may know of an event's PII without seeing it.

    Derived at the edge (the worker's lead agent) from the opened values, so the lead's
    state, its changelog and the hand-off keep only sealed PII. ``email_domain`` names a
    company or a mail provider, not a person (like ``company``, it is not PII here); fit
    rules and segments test it.
    """

    email_domain: str | None = None


def pii_facts(opened: Event) -> PiiFacts:
    """The non-personal facts of an opened event's PII.

    Example:
        >>> e = Event("e", Kind.IDENTIFY, "ws", 1, 1, lead_id="L",
        ...           payload={"email": "Ada@Example.COM"})
        >>> pii_facts(e)
        PiiFacts(email_domain='example.com')
        >>> pii_facts(Event("e", Kind.VISIT, "ws", 1, 1, "a"))
        PiiFacts(email_domain=None)
    """
    email = opened.payload.get("email")
    if parse_envelope(email) is not None:  # an opener that left a value sealed
        return PiiFacts()
    return PiiFacts(email_domain=email_domain(email if isinstance(email, str) else None))


def keep_sealed(sealed: Event, opened: Event) -> tuple[Event, PiiFacts]:
    """The event to hand to the processors: PII still sealed, plus its facts.

    A sealed value whose key is gone (erased, or never known) becomes ``None``, exactly
    as opening it would make it, so a processor treats it as absent (an erased email
    does not count as "known", does not overwrite an older value). Every other value
    stays as it arrived: sealed values sealed, plaintext (encryption off) plaintext.

    Args:
        sealed: the event as read from Kafka.
        opened: the same event after :func:`open_event`.

    Example:
        >>> opener = lambda ws, subject, field, env: None if env.kid == "dead0000" else "ada@x.io"
        >>> e = Event("e", Kind.IDENTIFY, "ws", 1, 1, lead_id="L",
        ...           payload={"email": "enc:v2:0000aaaa:QQ", "phone": "enc:v2:dead0000:QQ",
        ...                    "title": "CTO"})
        >>> kept, facts = keep_sealed(e, open_event(e, opener))
        >>> dict(kept.payload), facts.email_domain
        ({'email': 'enc:v2:0000aaaa:QQ', 'phone': None, 'title': 'CTO'}, 'x.io')

    Raises:
        InvalidEvent: ``opened`` is not ``sealed`` opened (another event).
    """
    if opened.event_id != sealed.event_id:
        raise InvalidEvent(f"event {opened.event_id} is not the opened {sealed.event_id}")

    def opened_value(name: str) -> Any:
        if name in PII_CONTEXT_FIELDS:
            return getattr(opened.context, name)
        return opened.payload.get(name)

    def change(name: str, value: Any) -> Any:
        return None if opened_value(name) is None else value

    return _rewrite(sealed, change), pii_facts(opened)


def open_contact(contact: Contact, workspace_id: str, open_: Opener) -> Contact:
    """A hand-off's contact with its sealed fields opened; erased ones read as ``None``.

    The hand-off carries the lead's contact as it arrived (sealed with the keys of the
    person's subjects, bound to the same field names), so a downstream consumer opens
    it the way the worker opens an event, with any subject of the workspace (the opener is
    called with subject ``None``): the lead agent kept only values that opened for their
    own event's subject. Plaintext (encryption off) passes through.

    Example:
        >>> opener = lambda ws, subject, field, env: None if env.kid == "dead0000" else env.blob
        >>> c = Contact(email="enc:v2:0000aaaa:ada", phone="enc:v2:dead0000:1", company="X")
        >>> o = open_contact(c, "ws", opener)
        >>> o.email, o.phone, o.company
        ('ada', None, 'X')
        >>> open_contact(Contact(email="ada@x.io"), "ws", opener).email
        'ada@x.io'

    Raises:
        InvalidEvent: a contact field holds a malformed envelope.
    """
    changes: dict[str, Any] = {}
    for name in CONTACT_PII_FIELDS:
        envelope = parse_envelope(getattr(contact, name))
        if envelope is not None:
            changes[name] = open_(workspace_id, None, name, envelope)
    return evolve(contact, **changes) if changes else contact


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
    return evolve(event, context=evolve(ctx, ip=None, user_agent=None))


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
