"""Identity stitching and merges: which lead a device (``anonymous_id``) belongs to.

State lives per inbound key (``Event.person_key``): a device, so a browser's anonymous
touches and the identify that names them arrive on one partition, in order. Until the
device is identified its events are buffered in the state and NOT emitted: the lead
processor only sees events that carry a ``lead_id``. When identification happens
(identify, a form submit with an email, any event carrying a lead_id, or an alias whose
``previous_id`` is this device) the buffer is emitted first, oldest first, with ``lead_id``
set and the SAME ``event_id`` (so a re-emission after a crash stays idempotent downstream),
then the identifying event; every later event of the device gets the lead_id too.

Buffer bound: :data:`MAX_BUFFERED` events. When full, the oldest event is always kept
(it is the first touch attribution needs) and the second-oldest is dropped, so the
buffer holds the first touch plus the most recent ones. ``dropped`` counts the losses.

Consent: after ``consent_changed`` with ``tracking: false`` the device is not stitched
(no lead_id is attached to anonymous events, which are then not emitted), and
``ip``/``user_agent`` are stripped from everything emitted. Declared data (a form submit or
identify) still reaches the lead, without device linking. A withdrawal with ``forget``
(the default for producers other than the collector) also discards the buffer and the link;
one without it (every write-key call: the collector writes ``forget: false``) only pauses,
so the buffer and link come back with tracking consent ``true``, which restores stitching
from then on.

Lead ids from a form submit without ``userId``: ``derive_lead_id(workspace, email)`` =
``"e-" + derived_id("lead", workspace_id, email.strip().lower())``; the same person
submitting on two devices therefore becomes one lead. (Provider-specific tricks such as
Gmail dot folding are deliberately not applied.) Such a lead is *soft*: known by an email
only, not identified by a user id (:func:`is_soft`).

Merges (docs/architecture.md, "Identity merges"; PostHog's and Segment's rules):

1. A device linked to a soft lead that is then identified as a user (identify, or any
   event with a ``userId``, or an alias of the device) merges the soft lead INTO the user
   (reason ``identify`` / ``alias``): the form-then-identify journey is one person.
2. A device already identified as user A and then identified as user B (a shared
   machine) does NOT merge A and B: PostHog refuses to merge an identified person
   without ``$merge_dangerously``, Segment allows one ``user_id`` per profile. The device
   follows B from then on; A keeps what it had.
3. An email a user declares (identify traits or a form carrying both ``userId`` and
   ``email``, or a form without ``userId`` on a device identified as that user) links the
   soft lead of that email to the user: merged INTO the user (reason ``email``/``form``),
   so the same person's form on another device joins them too.
4. ``alias(previousId=P, userId=U)`` with P not this device is explicit: P merges into U
   whether or not P was identified (Segment's alias; PostHog's ``$merge_dangerously``).
5. Bounds: a device links at most :data:`MAX_DEVICE_LEADS` distinct leads (Segment's
   default limit for identifiers other than ``user_id``); past that it is *shared*: no
   merge is asked from it any more and its anonymous events stay anonymous. Ids in
   :data:`BLOCKED_IDS` (``undefined``, ``null``, ``0`` ... from PostHog's and Segment's
   lists) never merge and never link a device. Two soft leads never merge (two emails on
   one anonymous browser are two people as often as one).

A merge is a :class:`~leadflow.processors.derived.MergeRequest` sent to both leads on
``leadflow.events.by-lead``; ``processors/merges.py`` does the rest. A key asks for each
merge once (``merged``).

In-flight records. This stage routes a device's events in arrival order; the lead stage
applies them in event-time order (``processors/ordering``). Records the device sent to its
soft lead before a late identify arrived can sort after that identify's merge, so the
merged lead would get them once it is a redirect and forward them, applied on arrival.
With ``R'`` and the lateness D (the worker passes both), the state keeps what the device
sent to soft leads that may still sort after a merge (``recent``: a key at or after
``R' - D``, at most :data:`MAX_RECENT`); a merge this device asks that absorbs one of them
sends those sorting after the merge's handover to the survivor (where the redirect would
forward them; same events, the merge's ``R'``: the same key, since they are within D) and
names them in ``MergeRequest.resent``: the merged lead drops its copies, or, if it
refuses the merge, tells the survivor to drop these (``LeadTransfer.resent``). Records for
the merged lead from other keys are still forwarded (docs/architecture.md, "Known limits").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from leadflow.processors import codec
from leadflow.processors.derived import IdentityLinked, MergeRequest, derived_id
from leadflow.processors.errors import InvalidEvent
from leadflow.processors.events import Event, Kind
from leadflow.processors.evolve import evolve
from leadflow.processors.ordering import (
    DEFAULT_LATENESS_MS,
    HANDOVER_RANK,
    ReleaseKey,
    release_key,
)

MAX_BUFFERED = 50
MAX_RECENT = 50  # records sent to soft leads that may still sort after a merge
MAX_DEVICE_LEADS = 5

# PostHog's illegal distinct ids (plugin-server person-state.ts) and Segment's suggested
# blocked values: placeholders a tracker sends by mistake, which would merge everyone.
BLOCKED_IDS = frozenset(
    {"anonymous", "guest", "distinctid", "distinct_id", "id", "not_authenticated", "email",
     "undefined", "true", "false", "null", "none", "nan", "[object object]", "-1", "void"}
)  # fmt: skip
_ZEROES_AND_DASHES = re.compile(r"^[0-]*$")
_SOFT = re.compile(r"^e-[0-9a-f]{32}$")

# Kinds that carry declared identity in their payload.
_IDENTIFYING = frozenset({Kind.IDENTIFY, Kind.FORM_SUBMITTED})

# Identify/FormSubmitted v3: the email's lead id, set by the collector when PII encryption
# seals an email this processor could otherwise not read (``processors.pii.seal_event``).
EMAIL_LEAD_FIELD = "email_lead_id"
EMAIL_LEAD_KINDS = _IDENTIFYING


@dataclass(frozen=True, slots=True)
class Sent:
    """A record the identity stage sent to a lead, with its ``R'`` (``processors/ordering``)."""

    event: Event
    received: int


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
        leads: the distinct leads this device was linked to, oldest first.
        merged: lead ids this key already asked to merge (each merge is asked once).
        shared: linked to more than :data:`MAX_DEVICE_LEADS` leads: no more merges.
        lead_keyed: the state of a lead-keyed stream (``anonymous_id`` is the lead id);
            it only remembers ``merged``.
        recent: records sent to email-only leads that may still sort after a merge this
            device asks later (within the allowed lateness of the newest ``R'``; see
            "In-flight records" in the module doc). Only kept when the caller passes ``R'``.
    """

    anonymous_id: str
    workspace_id: str
    lead_id: str | None = None
    tracking: bool = True
    buffer: tuple[Event, ...] = ()
    dropped: int = 0
    leads: tuple[str, ...] = ()
    merged: tuple[str, ...] = ()
    shared: bool = False
    lead_keyed: bool = False
    recent: tuple[Sent, ...] = ()


@dataclass(frozen=True, slots=True)
class Routed:
    """What the identity stage sends to ``leadflow.events.by-lead`` for one inbound event.

    Attributes:
        events: the events, each with its ``lead_id`` (buffer replays first).
        merges: merge requests, two per merge (one per lead), in the order to send.
    """

    events: list[Event] = field(default_factory=list)
    merges: list[MergeRequest] = field(default_factory=list)


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
    return event.lead_id or declared_email_lead(event)


def _strip(event: Event) -> Event:
    ctx = event.context
    if ctx.ip is None and ctx.user_agent is None:
        return event
    return evolve(event, context=evolve(ctx, ip=None, user_agent=None))


def _with_lead(event: Event, lead_id: str) -> Event:
    return event if event.lead_id == lead_id else evolve(event, lead_id=lead_id)


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


def declared_email_lead(event: Event) -> str | None:
    """The lead id of the email an identify or form declares, if it can be known.

    A plaintext email gives :func:`derive_lead_id`; a sealed one (PII encryption) cannot be
    read here, so the collector wrote its lead id in :data:`EMAIL_LEAD_FIELD` when it
    sealed it. Records sealed before that field existed (v2) give ``None``: their email
    links nothing, as before.

    Example:
        >>> form = Event("f", Kind.FORM_SUBMITTED, "ws", 1, 1, lead_id="u-1",
        ...              payload={"email": "Ada@x.io"})
        >>> declared_email_lead(form) == derive_lead_id("ws", "ada@x.io")
        True
        >>> sealed = evolve(form, payload={"email": "enc:v2:00000001:qq@zz",
        ...                                             EMAIL_LEAD_FIELD: "e-" + "0" * 32})
        >>> declared_email_lead(sealed)
        'e-00000000000000000000000000000000'
        >>> declared_email_lead(evolve(form, payload={"email": "enc:v2:1:x@y"}))
    """
    if event.kind not in _IDENTIFYING:
        return None
    written = event.payload.get(EMAIL_LEAD_FIELD)
    if isinstance(written, str) and written:
        return written
    email = event.payload.get("email")
    # "enc:" is the PII envelope's prefix (processors.pii.PREFIX; pii imports this module).
    if isinstance(email, str) and "@" in email and not email.startswith("enc:"):
        return derive_lead_id(event.workspace_id, email)
    return None


def is_soft(lead_id: str) -> bool:
    """Whether a lead id is an email's (:func:`derive_lead_id`), not a user id.

    Example:
        >>> is_soft(derive_lead_id("ws", "a@b.io")), is_soft("user-42")
        (True, False)
    """
    return _SOFT.match(lead_id) is not None


def is_blocked(ident: str) -> bool:
    """Whether an id is a placeholder that must never merge or link (see :data:`BLOCKED_IDS`).

    Example:
        >>> is_blocked(" Undefined "), is_blocked("0-0"), is_blocked("user-42")
        (True, True, False)
    """
    text = ident.strip().strip("'\"").lower()
    return text in BLOCKED_IDS or _ZEROES_AND_DASHES.match(text) is not None


def identity_step(
    state: IdentityState | None, event: Event
) -> tuple[IdentityState | None, list[Event]]:
    """Fold one inbound event; return the new state and the events for the lead log.

    The events only: merges are in :func:`identity_route` (the worker's call). Kept for
    callers that replay events without merges (benchmarks, the model evaluation).

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
    state, routed = identity_route(state, event)
    return state, routed.events


def identity_route(
    state: IdentityState | None,
    event: Event,
    *,
    received: int | None = None,
    lateness_ms: int = DEFAULT_LATENESS_MS,
) -> tuple[IdentityState | None, Routed]:
    """Fold one inbound event; return the new state and what goes to ``events.by-lead``.

    Events without an ``anonymous_id`` (keyed by lead) keep state only to ask for a merge
    once. Campaign costs belong to no person: they stay on the inbound log (the projector
    reads them there) and produce nothing here. Returned events all carry ``lead_id``.

    Example:
        >>> f = Event("f", Kind.FORM_SUBMITTED, "ws", 2, 2, anonymous_id="a1",
        ...           payload={"email": "ada@example.com"})
        >>> s, r = identity_route(None, f)
        >>> i = Event("i", Kind.IDENTIFY, "ws", 3, 3, anonymous_id="a1", lead_id="u-7")
        >>> s, r = identity_route(s, i)
        >>> [(m.lead_id == m.survivor_id, m.survivor_id, m.reason) for m in r.merges]
        [(False, 'u-7', 'identify'), (True, 'u-7', 'identify')]

    With ``received`` (the event's ``R'``) and ``lateness_ms`` (the lead stage's D), the
    device's in-flight records are sent to the survivor of a merge that absorbs an
    email-only lead they went to (module doc, "In-flight records"); without, nothing is
    tracked.

    Raises:
        InvalidEvent: an event with neither anonymous_id nor lead_id.
    """
    new, routed = _route(state, event)
    if received is None or new is None or event.anonymous_id is None:
        return new, routed
    return _track(state, new, routed, received, lateness_ms)


def _sort_key(sent: Sent, lateness_ms: int) -> ReleaseKey:
    e = sent.event
    return release_key(sent.received, e.occurred_at, e.event_id, lateness_ms=lateness_ms)


def _track(
    before: IdentityState | None,
    after: IdentityState,
    routed: Routed,
    received: int,
    lateness_ms: int,
) -> tuple[IdentityState, Routed]:
    """Re-send in-flight records of an absorbed email-only lead; remember what may be.

    ``before.recent`` holds what this device sent to email-only leads that may still sort
    after a later merge. When this event asks a merge that absorbs one of them, the records
    that sort after the merge's handover would reach the merged lead after it became a
    redirect and be forwarded to the survivor, on arrival. They are sent to the survivor
    now (same event, ``R'`` of the merge: the same place in the order), and both copies of
    the merge name them (``resent``): the merged lead drops its copies, or, if it refuses
    the merge, the survivor drops these (``processors/merges.py``).
    """
    recent = before.recent if before is not None else ()
    events, merges = routed.events, routed.merges
    asked = {m.absorbed_id: m for m in merges if m.lead_id == m.absorbed_id}
    if recent and asked:
        for absorbed, request in asked.items():
            handover = release_key(
                received,
                request.occurred_at,
                request.cause_event_id,
                rank=HANDOVER_RANK,
                lateness_ms=lateness_ms,
            )
            late = [
                s.event
                for s in recent
                if s.event.lead_id == absorbed and _sort_key(s, lateness_ms) > handover
            ]
            if late:
                ids = tuple(e.event_id for e in late)
                merges = [
                    evolve(m, resent=ids) if m.merge_id == request.merge_id else m for m in merges
                ]
                events = [*events, *(_with_lead(e, request.survivor_id) for e in late)]
        recent = tuple(s for s in recent if s.event.lead_id not in asked)
    keep: tuple[Sent, ...] = ()
    if not after.shared:
        floor = received - lateness_ms
        sent = (
            Sent(e, received)
            for e in routed.events
            if e.lead_id is not None and is_soft(e.lead_id) and e.lead_id not in asked
        )
        # A record sorting before R' - D sorts before any merge still to come.
        fresh = (*recent, *sent)
        keep = tuple(s for s in fresh if _sort_key(s, lateness_ms).at >= floor)[-MAX_RECENT:]
    if keep != after.recent:
        after = evolve(after, recent=keep)
    if events is routed.events and merges is routed.merges:
        return after, routed
    return after, Routed(events, merges)


def _route(state: IdentityState | None, event: Event) -> tuple[IdentityState | None, Routed]:
    if event.kind is Kind.CAMPAIGN_COST:
        return state, Routed()
    if event.anonymous_id is None:
        return _lead_keyed(state, event)
    if state is None:
        state = IdentityState(anonymous_id=event.anonymous_id, workspace_id=event.workspace_id)
    elif state.anonymous_id != event.anonymous_id:
        raise InvalidEvent(
            f"event {event.event_id} for device {event.anonymous_id} reached state of "
            f"{state.anonymous_id}"
        )

    if event.kind is Kind.CONSENT_CHANGED:
        tracking = bool(event.payload.get("tracking", True))
        # Only a withdrawal that may delete (``forget``: the CLI, an admin key, a direct
        # producer) drops the buffer and the link. The collector writes forget=false for
        # every write-key call, so whoever knows a device id can pause its stitching but
        # cannot make its touches disappear (issue 19).
        forget = not tracking and bool(event.payload.get("forget", True))
        new = evolve(
            state,
            tracking=tracking,
            buffer=() if forget else state.buffer,
            lead_id=None if forget else state.lead_id,
        )
        # The lead must learn the consent change to drop contact PII it may not use.
        lead = state.lead_id or event.lead_id
        return new, Routed([_strip(_with_lead(event, lead))] if lead else [])

    if not state.tracking:
        # Declared data still reaches its lead and declared ids still merge; the device
        # itself is linked to nothing.
        declared = _declared_lead_id(event)
        if declared is None:
            return state, Routed()
        state, asked = _declared_merges(state, event, declared)
        return state, Routed([_strip(_with_lead(event, declared))], asked)

    declared = _declared_lead_id(event)
    if event.kind is Kind.ALIAS and event.payload.get("previous_id") == state.anonymous_id:
        declared = event.lead_id  # alias(previousId=this device, userId=lead) names the device
    if declared is not None and is_blocked(declared):
        # A placeholder id: the event goes where it says, the device is not linked to it.
        return state, Routed([_with_lead(event, declared)])
    current = state.lead_id
    if declared is None:
        if current is None:
            buffer, lost = _buffered(state.buffer, event)
            return evolve(state, buffer=buffer, dropped=state.dropped + lost), Routed()
        if state.shared:
            return evolve(state, dropped=state.dropped + 1), Routed()
        return state, Routed([_with_lead(event, current)])

    merges: list[MergeRequest] = []
    target = declared
    if current is not None and current != declared and not state.shared:
        if is_soft(current) and not is_soft(declared):
            # Rule 1: the device's email-only lead was this user all along.
            state, merges = _ask(state, event, current, declared, _reason(event))
        elif not is_soft(current) and is_soft(declared) and _user_id(event) is None:
            # Rule 3: a form without userId on a device identified as a user is theirs.
            target = current
            state, merges = _ask(state, event, declared, current, "form")
        # Otherwise (rule 2, or two emails) the device follows the newly declared lead.
    state, declared_merges = _declared_merges(state, event, target)
    merges.extend(declared_merges)

    replay = sorted(state.buffer, key=lambda e: (e.occurred_at, e.event_id))
    out = [_with_lead(e, target) for e in replay]
    out.append(_with_lead(event, target))
    leads = state.leads if target in state.leads else (*state.leads, target)
    # A later identify with a different lead re-links the device from now on (shared
    # machines); earlier events stay with the lead they were credited to.
    new = evolve(
        state, lead_id=target, buffer=(), leads=leads, shared=len(leads) > MAX_DEVICE_LEADS
    )
    return new, Routed(out, merges)


def _user_id(event: Event) -> str | None:
    """The user id the sender gave; an email's lead id the collector set is none.

    With PII encryption the collector seals the email and puts its lead id in ``lead_id``
    itself (``processors.pii.seal_event``): such an event still names no user.
    """
    lead = event.lead_id
    return lead if lead and not is_soft(lead) else None


def _reason(event: Event) -> str:
    return "alias" if event.kind is Kind.ALIAS else "identify"


def _lead_keyed(state: IdentityState | None, event: Event) -> tuple[IdentityState | None, Routed]:
    lead = _declared_lead_id(event)
    if not event.lead_id or lead is None:
        raise InvalidEvent(f"event {event.event_id} has neither lead_id nor anonymous_id")
    base = state or IdentityState(
        anonymous_id=event.lead_id, workspace_id=event.workspace_id, lead_keyed=True
    )
    new, merges = _declared_merges(base, event, lead)
    # A lead-keyed stream keeps state only once it asked for a merge.
    return (new if merges else state), Routed([_with_lead(event, lead)], merges)


def _declared_merges(
    state: IdentityState, event: Event, target: str
) -> tuple[IdentityState, list[MergeRequest]]:
    """Rules 3 and 4: the ids an event declares for ``target`` besides the device."""
    merges: list[MergeRequest] = []
    if is_soft(target) or is_blocked(target):
        return state, merges
    email_lead = declared_email_lead(event)
    if _user_id(event) and email_lead is not None:
        state, asked = _ask(state, event, email_lead, target, "email")
        merges.extend(asked)
    previous = event.payload.get("previous_id") if event.kind is Kind.ALIAS else None
    if isinstance(previous, str) and previous and previous != state.anonymous_id:
        state, asked = _ask(state, event, previous, target, "alias", explicit=True)
        merges.extend(asked)
    return state, merges


def _ask(
    state: IdentityState,
    event: Event,
    absorbed: str,
    survivor: str,
    reason: str,
    *,
    explicit: bool = False,
) -> tuple[IdentityState, list[MergeRequest]]:
    """The two copies of one merge request, asked once per key and within the bounds."""
    if absorbed == survivor or absorbed in state.merged or is_blocked(absorbed):
        return state, []
    if not explicit and (state.shared or len(state.merged) >= MAX_DEVICE_LEADS):
        return state, []
    merge_id = derived_id("merge", event.workspace_id, absorbed, survivor, event.event_id)
    request = MergeRequest(
        merge_id=merge_id,
        workspace_id=event.workspace_id,
        lead_id=absorbed,
        absorbed_id=absorbed,
        survivor_id=survivor,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        reason=reason,
        cause_event_id=event.event_id,
    )
    merged = (*state.merged, absorbed)[-4 * MAX_DEVICE_LEADS :]
    return evolve(state, merged=merged), [
        request,
        evolve(request, lead_id=survivor),
    ]


def identity_link(
    before: IdentityState | None, after: IdentityState | None, event: Event
) -> IdentityLinked | None:
    """The ``leadflow.identities`` record when ``event`` linked a device to a (new) lead.

    Example:
        >>> a = IdentityState("a1", "ws")
        >>> b = evolve(a, lead_id="L")
        >>> identity_link(a, b, Event("e", Kind.IDENTIFY, "ws", 5, 5, "a1", "L")).lead_id
        'L'
        >>> identity_link(b, b, Event("e", Kind.VISIT, "ws", 6, 6, "a1")) is None
        True
    """
    if after is None or after.lead_id is None or after.lead_keyed:
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
