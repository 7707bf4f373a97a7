"""Identity stitching: which lead a device (``anonymous_id``) belongs to.

State lives per device key, so a browser's anonymous touches and the identify that names
them arrive on one partition, in order (see ``Event.person_key``). Until the device is
identified its events are buffered in the state and NOT emitted: the lead processor only
sees events that carry a ``lead_id``. When identification happens (identify, a form submit
with an email, any event carrying a lead_id, or an alias whose ``previous_id`` is this
device) the buffer is emitted first, oldest first, with ``lead_id`` set and the SAME
``event_id`` (so a re-emission after a crash stays idempotent downstream), then the
identifying event; every later event of the device gets the lead_id too.

Buffer bound: :data:`MAX_BUFFERED` events. When full, the oldest event is always kept
(it is the first touch attribution needs) and the second-oldest is dropped, so the
buffer holds the first touch plus the most recent ones. ``dropped`` counts the losses.

Consent: after ``consent_changed`` with ``tracking: false`` the device is not stitched
(the buffer is discarded, no lead_id is attached to anonymous events, which are then not
emitted), and ``ip``/``user_agent`` are stripped from everything emitted. Declared data
(a form submit or identify) still reaches the lead, without device linking. Tracking
consent ``true`` restores stitching from then on.

Lead ids from a form submit without ``userId``: ``derive_lead_id(workspace, email)`` =
``"e-" + derived_id("lead", workspace_id, email.strip().lower())``; the same person
submitting on two devices therefore becomes one lead. (Provider-specific tricks such as
Gmail dot folding are deliberately not applied.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from leadflow.processors import codec
from leadflow.processors.derived import IdentityLinked, derived_id
from leadflow.processors.errors import InvalidEvent
from leadflow.processors.events import Event, Kind

MAX_BUFFERED = 50

# Kinds that carry declared identity in their payload.
_IDENTIFYING = frozenset({Kind.IDENTIFY, Kind.FORM_SUBMITTED})


@dataclass(frozen=True, slots=True)
class IdentityState:
    """What is known about one device.

    Attributes:
        anonymous_id: the device key.
        workspace_id: its tenant.
        lead_id: the lead it belongs to, once known.
        tracking: tracking consent (``True`` until the person says otherwise).
        buffer: events seen before identification (bounded, see module doc).
        dropped: buffered events lost to the bound.
    """

    anonymous_id: str
    workspace_id: str
    lead_id: str | None = None
    tracking: bool = True
    buffer: tuple[Event, ...] = ()
    dropped: int = 0


def encode_identity_state(state: IdentityState) -> bytes:
    """Compact bytes for the RocksDB table (positional JSON, see ``codec``)."""
    return codec.encode(state)


def decode_identity_state(data: bytes) -> IdentityState:
    """Inverse of :func:`encode_identity_state`."""
    return codec.decode(IdentityState, data)


def normalise_email(email: str) -> str:
    """Trim and lower-case an email; the form used for lead ids.

    Example:
        >>> normalise_email("  Ada@Example.COM ")
        'ada@example.com'
    """
    return email.strip().lower()


def derive_lead_id(workspace_id: str, email: str) -> str:
    """The deterministic lead id of a person who gave only an email.

    Example:
        >>> derive_lead_id("ws", "Ada@Example.com") == derive_lead_id("ws", "ada@example.com ")
        True
        >>> derive_lead_id("ws", "ada@example.com").startswith("e-")
        True
    """
    return "e-" + derived_id("lead", workspace_id, normalise_email(email))


def _declared_lead_id(event: Event) -> str | None:
    if event.lead_id:
        return event.lead_id
    if event.kind in _IDENTIFYING:
        email = event.payload.get("email")
        if isinstance(email, str) and "@" in email:
            return derive_lead_id(event.workspace_id, email)
    return None


def _strip(event: Event) -> Event:
    ctx = event.context
    if ctx.ip is None and ctx.user_agent is None:
        return event
    return dataclasses.replace(event, context=dataclasses.replace(ctx, ip=None, user_agent=None))


def _with_lead(event: Event, lead_id: str) -> Event:
    return event if event.lead_id == lead_id else dataclasses.replace(event, lead_id=lead_id)


def _buffered(buffer: tuple[Event, ...], event: Event) -> tuple[tuple[Event, ...], int]:
    if len(buffer) < MAX_BUFFERED:
        return (*buffer, event), 0
    oldest = min(buffer, key=lambda e: (e.occurred_at, e.event_id))
    rest = sorted((e for e in buffer if e is not oldest), key=lambda e: (e.occurred_at, e.event_id))
    return (oldest, *rest[1:], event), 1


def check_record_key(key: bytes | None, event: Event) -> None:
    """Insist that a record of the inbound log is keyed by its event's person key.

    State is stored under the record key and partitions follow it, so a record without a
    key, or keyed by someone else, would read and write another person's state and sit
    out of order with that person's other events. Such a record is refused, loudly.

    Example:
        >>> e = Event("e1", Kind.VISIT, "ws", 1, 1, anonymous_id="a1")
        >>> check_record_key(b'["ws","a1"]', e)
        >>> check_record_key(None, e)
        Traceback (most recent call last):
        ...
        leadflow.processors.errors.InvalidEvent: event e1: missing key (expected '["ws","a1"]')

    Raises:
        InvalidEvent: no key, another person's key, or an event that names no person.
    """
    expected = event.person_key  # raises for an event that names no person
    if not key:
        raise InvalidEvent(f"event {event.event_id}: missing key (expected {expected!r})")
    if key != expected.encode():
        raise InvalidEvent(
            f"event {event.event_id}: keyed {key.decode(errors='replace')!r}, "
            f"not by its person key {expected!r}"
        )


def identity_step(
    state: IdentityState | None, event: Event
) -> tuple[IdentityState | None, list[Event]]:
    """Fold one device-keyed event; return the new state and the events for the lead log.

    Events without an ``anonymous_id`` (keyed by lead) pass through untouched and keep no
    state. Campaign costs belong to no person: they stay on the inbound log (the projector
    reads them there) and produce nothing here. Returned events all carry ``lead_id``.

    Example:
        >>> from leadflow.processors.events import Context
        >>> v = Event("e1", Kind.VISIT, "ws", 1, 1, anonymous_id="a1",
        ...           context=Context(path="/pricing"))
        >>> s, out = identity_step(None, v)
        >>> out, len(s.buffer)
        ([], 1)
        >>> f = Event("e2", Kind.FORM_SUBMITTED, "ws", 2, 2, anonymous_id="a1",
        ...           payload={"email": "ada@example.com"})
        >>> s, out = identity_step(s, f)
        >>> [e.event_id for e in out], out[0].lead_id == s.lead_id, s.buffer
        (['e1', 'e2'], True, ())

    Raises:
        InvalidEvent: an event with neither anonymous_id nor lead_id.
    """
    if event.kind is Kind.CAMPAIGN_COST:
        return state, []
    if event.anonymous_id is None:
        if not event.lead_id and _declared_lead_id(event) is None:
            raise InvalidEvent(f"event {event.event_id} has neither lead_id nor anonymous_id")
        lead = _declared_lead_id(event)
        return state, [_with_lead(event, lead)] if lead else []
    if state is None:
        state = IdentityState(anonymous_id=event.anonymous_id, workspace_id=event.workspace_id)
    elif state.anonymous_id != event.anonymous_id:
        raise InvalidEvent(
            f"event {event.event_id} for device {event.anonymous_id} reached state of "
            f"{state.anonymous_id}"
        )

    if event.kind is Kind.CONSENT_CHANGED:
        tracking = bool(event.payload.get("tracking", True))
        new = dataclasses.replace(
            state,
            tracking=tracking,
            buffer=state.buffer if tracking else (),
            lead_id=state.lead_id if tracking else None,
        )
        # The lead must learn the consent change to drop contact PII it may not use.
        lead = state.lead_id or event.lead_id
        out = [_strip(_with_lead(event, lead))] if lead else []
        return new, out

    if not state.tracking:
        declared = _declared_lead_id(event)
        return state, [_strip(_with_lead(event, declared))] if declared else []

    lead = _declared_lead_id(event)
    if event.kind is Kind.ALIAS and event.payload.get("previous_id") == state.anonymous_id:
        lead = event.lead_id  # alias(previousId=this device, userId=lead) names the device
    if lead is None:
        lead = state.lead_id
    if lead is None:
        buffer, lost = _buffered(state.buffer, event)
        return dataclasses.replace(state, buffer=buffer, dropped=state.dropped + lost), []

    replay = sorted(state.buffer, key=lambda e: (e.occurred_at, e.event_id))
    out = [_with_lead(e, lead) for e in replay]
    out.append(_with_lead(event, lead))
    # A later identify with a different lead re-links the device from now on (shared
    # machines); earlier events stay with the lead they were credited to.
    return dataclasses.replace(state, lead_id=lead, buffer=()), out


def identity_link(
    before: IdentityState | None, after: IdentityState | None, event: Event
) -> IdentityLinked | None:
    """The ``leadflow.identities`` record when ``event`` linked a device to a (new) lead.

    Example:
        >>> a = IdentityState("a1", "ws")
        >>> b = dataclasses.replace(a, lead_id="L")
        >>> identity_link(a, b, Event("e", Kind.IDENTIFY, "ws", 5, 5, "a1", "L")).lead_id
        'L'
        >>> identity_link(b, b, Event("e", Kind.VISIT, "ws", 6, 6, "a1")) is None
        True
    """
    if after is None or after.lead_id is None:
        return None
    if before is not None and before.lead_id == after.lead_id:
        return None
    return IdentityLinked(
        workspace_id=after.workspace_id,
        anonymous_id=after.anonymous_id,
        lead_id=after.lead_id,
        linked_at=event.occurred_at,
        cause_event_id=event.event_id,
    )
