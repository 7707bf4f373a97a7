"""From one Segment message (parsed JSON) to one :class:`Event`, or the list of what is wrong.

Pure: the receive time, the tolerance and the id factory are parameters, so the same
message always maps to the same event (the tests check that with hypothesis). Every
problem is reported with the path of the offending field, prefixed by the message's
place in the request (``batch[3].properties.amount``), so a sender can fix all of them
in one round trip.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from leadflow.processors.bounds import Bounds, violations
from leadflow.processors.events import Context, Event, Kind
from leadflow.processors.identity import EMAIL_LEAD_FIELD, EMAIL_LEAD_KINDS
from leadflow.processors.pii import (
    EXTRA_FIELD,
    PII_CONTEXT_FIELDS,
    PII_PAYLOAD_FIELDS,
    PREFIX,
    tracking_consent,
    without_device_data,
)
from leadflow.streams.collector.channels import ChannelInputs, group_channel
from leadflow.streams.collector.leftovers import Leftovers, Loc
from leadflow.streams.collector.models import (
    MESSAGE_MODELS,
    AliasMessage,
    FieldError,
    GroupMessage,
    IdentifyMessage,
    PageMessage,
    ScreenMessage,
    SegmentContext,
    TrackMessage,
)
from leadflow.streams.collector.timing import epoch_ms, occurred_at, too_far_ahead
from leadflow.streams.collector.tracking_plan import (
    CONTEXT_PROPERTIES,
    FORGET_FIELD,
    KEEPS_EXTRA,
    KIND_FIELDS,
    STAGE_NAMES,
    FieldSpec,
    FieldType,
    field_names,
    kind_for_track,
)
from leadflow.streams.collector.traits import account, contact

INT32 = (-(2**31), 2**31 - 1)
# Standard page properties analytics.js adds to every page call: they feed the context.
PAGE_PROPERTIES = frozenset({"url", "path", "referrer", "title"})
# Context members the event contract stores (traits feed the payload; library, integrations
# and _metadata are SDK bookkeeping, never data about the person).
STORED_CONTEXT = frozenset(
    {"page", "campaign", "consent", "referrer", "traits", "userAgent", "ip", "library"}
)
# Kinds whose payload is a person's contact fields (they read traits and company objects).
CONTACT_KINDS = frozenset({Kind.IDENTIFY, Kind.FORM_SUBMITTED})
# Segment's ecommerce spec calls the amount of an order ``revenue`` (or ``value``).
AMOUNT_ALIASES = ("revenue", "value", "total")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UTM = ("source", "medium", "campaign", "term", "content")
SEALED_LOOKING = "values starting with 'enc:' are reserved for data the collector sealed"
_NUMERIC = re.compile(r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$")


@dataclass(frozen=True, slots=True)
class MapOptions:
    """What the mapping needs to know besides the message.

    Attributes:
        workspace_id: the tenant the write key selected.
        received_at: the collector's clock when the request arrived, UTC ms.
        future_tolerance_ms: how far after ``received_at`` an event may claim to happen.
        strict: refuse properties a known kind does not define instead of keeping them.
        sent_at: the batch's ``sentAt`` (UTC ms) for messages without their own.
        context: the batch's ``context`` for messages without their own.
        tracking_consent_default: keep IP and user agent of calls that state no consent.
        bounds: the workspace's accepted ranges of amounts and counts.
    """

    workspace_id: str
    received_at: int
    future_tolerance_ms: int
    strict: bool = False
    sent_at: int | None = None
    context: SegmentContext | None = None
    tracking_consent_default: bool = False
    bounds: Bounds = field(default_factory=Bounds)


@dataclass(frozen=True, slots=True)
class Mapped:
    """A valid message as an event, with what had no field in it.

    Attributes:
        event: the event (unsealed; the collector seals it before producing).
        ignored: paths of members that were not stored at all.
        warnings: values stored differently from how they were sent.
        kept: paths of members the kind has no field for, stored in ``extra_json``.
    """

    event: Event
    ignored: tuple[str, ...] = ()
    warnings: tuple[FieldError, ...] = ()
    kept: tuple[str, ...] = ()


def join(prefix: str, loc: tuple[int | str, ...] | list[int | str]) -> str:
    """A field path: names joined by dots, list positions in brackets.

    Example:
        >>> join("batch[3]", ("properties", "amount"))
        'batch[3].properties.amount'
        >>> join("", ("batch", 0, "type"))
        'batch[0].type'
    """
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "body"


def pydantic_errors(exc: ValidationError, prefix: str) -> list[FieldError]:
    """Pydantic's errors as field errors with our paths (the union tag is left out)."""
    errors = []
    for error in exc.errors(include_url=False):
        loc = [p for p in error["loc"] if not (isinstance(p, str) and p in MESSAGE_MODELS)]
        errors.append(FieldError(path=join(prefix, loc), message=error["msg"]))
    return errors


def check_value(spec: FieldSpec, value: Any, path: str) -> tuple[Any, FieldError | None]:
    """Check one payload value against its spec; return the stored value or the problem.

    Example:
        >>> check_value(FieldSpec("n", FieldType.INT), 12.0, "p.n")
        (12, None)
        >>> check_value(FieldSpec("n", FieldType.INT), "12", "p.n")
        (12, None)
        >>> check_value(FieldSpec("n", FieldType.INT), "twelve", "p.n")[1].message
        'expected an integer, got string'
    """
    kind = spec.type
    bad = None
    if kind is FieldType.STRING:
        if not isinstance(value, str):
            bad = "expected a string"
        elif spec.choices is not None and value not in spec.choices:
            return value, FieldError(
                path=path, message=f"must be one of {', '.join(sorted(spec.choices))}"
            )
    elif kind is FieldType.INT:
        value = _number(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            bad = "expected an integer"
        elif not INT32[0] <= value <= INT32[1]:
            return value, FieldError(path=path, message="out of range for a 32-bit integer")
    elif kind is FieldType.DOUBLE:
        value = _number(value)
        if not isinstance(value, int | float) or isinstance(value, bool):
            bad = "expected a number"
        else:
            try:
                value = float(value)  # a huge JSON integer overflows here
            except OverflowError:
                value = math.inf
            if not math.isfinite(value):
                return value, FieldError(path=path, message="must be a finite number")
    elif kind is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            bad = "expected true or false"
    elif kind is FieldType.DATE:
        if not isinstance(value, str) or not _DATE.match(value):
            bad = "expected a date YYYY-MM-DD"
        else:
            try:
                date.fromisoformat(value)
            except ValueError:
                return value, FieldError(path=path, message="not a calendar date")
    elif kind is FieldType.STRING_MAP:
        return _check_map(value, path)
    if bad is not None:
        return value, FieldError(path=path, message=f"{bad}, got {_json_type(value)}")
    return value, None


def _number(value: Any) -> Any:
    """A numeric string as the number it spells (web forms send ``"250"``); else unchanged.

    Example:
        >>> _number("250"), _number(" 12.5 "), _number("12 apples")
        (250, 12.5, '12 apples')
    """
    if not isinstance(value, str) or not _NUMERIC.match(value):
        return value
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def _check_map(value: Any, path: str) -> tuple[Any, FieldError | None]:
    if not isinstance(value, dict):
        return value, FieldError(
            path=path, message=f"expected an object of strings, got {_json_type(value)}"
        )
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            out[key] = item
        elif isinstance(item, bool | int | float) and not (
            isinstance(item, float) and not math.isfinite(item)
        ):
            out[key] = json.dumps(item)  # answers are text; 50000 -> "50000", true -> "true"
        else:
            return value, FieldError(
                path=f"{path}.{key}", message=f"expected a string, got {_json_type(item)}"
            )
    return out, None


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
    if value is None:
        return "null"
    return names.get(type(value), "array" if isinstance(value, list) else type(value).__name__)


def _payload(
    kind: Kind,
    fields: Mapping[str, Any],
    where: str,
    sources: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[FieldError]]:
    """The kind's payload fields from properties/traits, each value checked."""
    payload: dict[str, Any] = {}
    errors: list[FieldError] = []
    for spec in KIND_FIELDS[kind]:
        value = fields.get(spec.name)
        path = f"{(sources or {}).get(spec.name, where)}.{spec.name}"
        if value is None:
            if spec.required:
                errors.append(FieldError(path=path, message="required"))
            payload[spec.name] = spec.default
            continue
        stored, error = check_value(spec, value, path)
        if error is not None:
            errors.append(error)
        payload[spec.name] = stored
    return payload, errors


def _unknown(kind: Kind, fields: Mapping[str, Any], *, properties: bool) -> list[str]:
    """Names in ``fields`` the kind has no field for (``properties``: channel & co. are known).

    Example:
        >>> _unknown(Kind.DEAL_WON, {"amount": 1, "channel": "x", "plan": "pro"}, properties=True)
        ['plan']
        >>> _unknown(Kind.IDENTIFY, {"title": "CTO", "channel": "x"}, properties=False)
        ['channel']
    """
    known = field_names(kind) | (CONTEXT_PROPERTIES if properties else frozenset())
    if kind is Kind.VISIT:
        known |= PAGE_PROPERTIES
    return [name for name in fields if name not in known]


def _text(fields: Mapping[str, Any], name: str, path: str, errors: list[FieldError]) -> str | None:
    value = fields.get(name)
    if value is None or isinstance(value, str):
        return value
    errors.append(FieldError(path=path, message=f"expected a string, got {_json_type(value)}"))
    return None


def _context(
    kind: Kind,
    segment: SegmentContext | None,
    props: Mapping[str, Any],
    payload: Mapping[str, Any],
    where: str,
    errors: list[FieldError],
) -> Context:
    page = segment.page if segment else None
    campaign = segment.campaign if segment else None
    from_props = kind is Kind.VISIT
    # A page call's own properties, typed like context.page's (a number there is refused,
    # not read as absent).
    own = {
        name: _text(props, name, f"{where}.{name}", errors) if from_props else None
        for name in sorted(PAGE_PROPERTIES)
    }
    url = (page.url if page else None) or own["url"]
    utm: dict[str, str | None] = {}
    if campaign is not None:
        utm = {
            "source": campaign.source,
            "medium": campaign.medium,
            "campaign": campaign.name,
            "term": campaign.term,
            "content": campaign.content,
        }
    elif url and "utm_" in url:
        query = parse_qs(urlsplit(url).query)
        utm = {name: query.get(f"utm_{name}", [None])[0] for name in _UTM}
    referrer = _referrer(
        (page.referrer if page else None)
        or (segment.referrer.url if segment and segment.referrer else None)
        or own["referrer"]
    )
    explicit = _text(props, "channel", f"{where}.channel", errors)
    return Context(
        url=url,
        path=(page.path if page else None) or own["path"],
        referrer=referrer,
        title=(page.title if page else None) or own["title"],
        utm_source=utm.get("source"),
        utm_medium=utm.get("medium"),
        utm_campaign=utm.get("campaign"),
        utm_term=utm.get("term"),
        utm_content=utm.get("content"),
        channel=group_channel(
            ChannelInputs(
                kind=kind,
                explicit=explicit,
                utm_source=utm.get("source"),
                utm_medium=utm.get("medium"),
                referrer=referrer,
                url=url,
                ad_network=_str(payload.get("network")),
            )
        ),
        experiment=_text(props, "experiment", f"{where}.experiment", errors),
        variant=_text(props, "variant", f"{where}.variant", errors),
        user_agent=segment.userAgent if segment else None,
        ip=segment.ip if segment else None,
    )


def _referrer(value: str | None) -> str | None:
    """The referring URL; RudderStack's JS SDK writes ``$direct`` when there is none.

    Example:
        >>> _referrer("$direct"), _referrer("https://www.google.com/")
        (None, 'https://www.google.com/')
    """
    return None if value == "$direct" else value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _canonical_json(value: Mapping[str, Any]) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def map_message(
    raw: Any, msg_type: str, options: MapOptions, new_id: Callable[[], str], prefix: str = ""
) -> Mapped | list[FieldError]:
    """Validate one Segment message and map it to an event.

    Args:
        raw: the message as parsed from JSON.
        msg_type: ``track``, ``page``, ``screen``, ``identify``, ``alias`` or ``group``.
        options: workspace, receive time, tolerance, strictness, batch defaults.
        new_id: makes an event id when the message has no ``messageId``.
        prefix: where the message sits in the request, for error paths.

    Returns:
        the event (with the kept and dropped paths), or every problem found.

    Example:
        >>> opts = MapOptions(workspace_id="ws", received_at=61_000, future_tolerance_ms=0)
        >>> msg = {"event": "Deal Won", "userId": "u1", "messageId": "m1",
        ...        "properties": {"amount": 1200, "plan": "pro"},
        ...        "timestamp": "1970-01-01T00:00:01Z", "sentAt": "1970-01-01T00:00:01Z"}
        >>> mapped = map_message(msg, "track", opts, new_id=lambda: "x")
        >>> mapped.event.kind, mapped.event.occurred_at, mapped.event.payload["amount"]
        (<Kind.DEAL_WON: 'deal_won'>, 61000, 1200.0)
        >>> mapped.kept, mapped.event.payload["extra_json"]
        (('properties.plan',), '{"properties":{"plan":"pro"}}')
        >>> map_message({"event": "Deal Won", "userId": "u1"}, "track", opts, lambda: "x")
        [FieldError(path='properties.amount', message='required')]
    """
    model_type = MESSAGE_MODELS.get(msg_type)
    if model_type is None:
        return [FieldError(path=join(prefix, ["type"]), message=f"unknown type {msg_type[:40]!r}")]
    try:
        message = model_type.model_validate(raw)
    except ValidationError as exc:
        return pydantic_errors(exc, prefix)
    errors: list[FieldError] = []
    warnings: list[FieldError] = []
    left = Leftovers()
    segment_context = message.context or options.context
    context_traits = (segment_context.traits if segment_context else None) or {}
    props: Mapping[str, Any] = {}
    where = join(prefix, ["properties"])
    sources: dict[str, str] = {}  # field name -> where it came from, for error paths
    if isinstance(message, TrackMessage):
        kind = kind_for_track(message.event)
        props = message.properties or {}
        if kind is Kind.CUSTOM:
            fields: Mapping[str, Any] = {
                "name": message.event,
                "properties_json": _canonical_json(props),
            }
        elif kind is Kind.FORM_SUBMITTED:
            fields = _contact_fields(
                kind,
                [(context_traits, ("context", "traits")), (props, ("properties",))],
                prefix,
                sources,
                left,
                warnings,
                full_name=False,
            )
        else:
            fields = _track_fields(kind, props, where, warnings)
            for name in _unknown(kind, fields, properties=True):
                left.keep(("properties", name), fields[name])
    elif isinstance(message, PageMessage | ScreenMessage):
        kind = Kind.VISIT
        props = message.properties or {}
        segment_page = (segment_context or SegmentContext()).page
        fields = {
            **props,
            "name": message.name or props.get("name"),
            "category": message.category or props.get("category"),
            "search": props.get("search") or (segment_page.search if segment_page else None),
        }
        for name in _unknown(kind, props, properties=True):
            left.keep(("properties", name), props[name])
    elif isinstance(message, IdentifyMessage):
        kind, where = Kind.IDENTIFY, join(prefix, ["traits"])
        # RudderStack's SDKs put identify traits in context.traits (rudder-sdk-python only
        # there); the top-level traits win where both name a field.
        fields = _contact_fields(
            kind,
            [(context_traits, ("context", "traits")), (message.traits or {}, ("traits",))],
            prefix,
            sources,
            left,
            warnings,
            full_name=True,
        )
    elif isinstance(message, AliasMessage):
        kind = Kind.ALIAS
        fields = {"previous_id": message.previousId}
    else:
        assert isinstance(message, GroupMessage)
        # For B2B the group call is where the account lives: its traits are the company's
        # firmographics, which the lead takes over like identify traits.
        kind, where = Kind.GROUP, join(prefix, ["traits"])
        firm = account(message.traits or {})
        fields = {**firm.fields, "group_id": message.groupId}
        for name in _unknown(kind, firm.fields, properties=False):
            left.keep(("traits", name), firm.fields[name])
        if "group_id" in firm.fields:  # the call's groupId names the account, not a trait
            left.keep(("traits", "group_id"), firm.fields["group_id"])
        for member, value in firm.unmapped:
            left.keep(("traits", *member), value)
        warnings.extend(FieldError(path=f"{where}.{p}", message=m) for p, m in firm.warnings)
    payload, payload_errors = _payload(kind, fields, where, sources)
    errors.extend(payload_errors)
    errors.extend(
        FieldError(path=f"{sources.get(v.field, where)}.{v.field}", message=v.reason)
        for v in violations(kind, payload, options.bounds)
    )
    if options.strict:
        errors.extend(
            FieldError(path=join(prefix, loc), message=f"not in the tracking plan for {kind.value}")
            for loc in left.kept_locs
        )
    if kind in KEEPS_EXTRA:
        payload[EXTRA_FIELD] = left.extra_json()
    else:
        left.drop_kept()
    if kind in EMAIL_LEAD_KINDS:
        payload[EMAIL_LEAD_FIELD] = None  # only sealing writes it (processors.pii.seal_event)
    if kind is Kind.CONSENT_CHANGED:
        # A write key is public: its withdrawal pauses stitching and device data; deleting
        # the device's past takes an admin credential (docs/privacy.md, threat model).
        payload[FORGET_FIELD] = False
    unstored = _unstored_context(segment_context, kind) if segment_context else []
    if message.context is not None:
        left.dropped_locs.extend(unstored)
        unstored = []
    context = _context(kind, segment_context, props, payload, where, errors)
    errors.extend(_looks_sealed(payload, context, where, sources, prefix))
    if not (message.anonymousId or message.userId) and kind is not Kind.CAMPAIGN_COST:
        errors.append(
            FieldError(path=join(prefix, ["userId"]), message="anonymousId or userId is required")
        )
    moment = message.timestamp or message.originalTimestamp
    sent = epoch_ms(message.sentAt) if message.sentAt else options.sent_at
    when = occurred_at(epoch_ms(moment) if moment else None, sent, options.received_at)
    if too_far_ahead(when, options.received_at, options.future_tolerance_ms):
        # A device clock far ahead must not lose the event: store it at the receive time
        # (future events would poison decay, SLAs and velocity) and say so.
        warnings.append(
            FieldError(
                path=join(prefix, ["timestamp"]),
                message=f"{(when - options.received_at) / 1000:.0f} s in the future after "
                "clock-skew correction; stored at the collector's receive time",
            )
        )
        when = options.received_at
    elif when < 0:
        errors.append(FieldError(path=join(prefix, ["timestamp"]), message="before 1970"))
    if errors:
        return errors
    stated = (
        segment_context.consent.tracking
        if segment_context is not None and segment_context.consent is not None
        else None
    )
    event = Event(
        event_id=message.messageId or new_id(),
        kind=kind,
        workspace_id=options.workspace_id,
        occurred_at=when,
        received_at=options.received_at,
        anonymous_id=message.anonymousId,
        lead_id=message.userId,
        context=context,
        payload=payload,
    )
    if not tracking_consent(stated, event, options.tracking_consent_default):
        event = without_device_data(event)  # docs/privacy.md: no IP/UA without consent
    return Mapped(
        event=event,
        # The batch's own context is one for every message: its paths carry no prefix.
        ignored=(*_paths(prefix, left.dropped_locs), *_paths("", unstored)),
        warnings=tuple(warnings),
        kept=tuple(_paths(prefix, left.kept_locs)),
    )


def _paths(prefix: str, locs: list[Loc]) -> list[str]:
    return [join(prefix, loc) for loc in locs]


def _looks_sealed(
    payload: Mapping[str, Any],
    context: Context,
    where: str,
    sources: Mapping[str, str],
    prefix: str,
) -> list[FieldError]:
    """PII values that start with ``enc:``: only the collector seals (docs/privacy.md).

    A client could otherwise hand in a ciphertext (copied from someone else) or a malformed
    envelope that every reader then chokes on.

    Example:
        >>> _looks_sealed({"email": "enc:v1:00ff00ff:AAAA"}, Context(ip="1.2.3.4"), "traits",
        ...               {}, "")
        [FieldError(path='traits.email', message="values starting with 'enc:' are reserved for data the collector sealed")]
    """  # noqa: E501
    found = [
        f"{sources.get(name, where)}.{name}"
        for name in PII_PAYLOAD_FIELDS
        if isinstance(payload.get(name), str) and payload[name].startswith(PREFIX)
    ]
    segment_names = {"ip": "ip", "user_agent": "userAgent"}
    found += [
        join(prefix, ["context", segment_names[name]])
        for name in PII_CONTEXT_FIELDS
        if (getattr(context, name) or "").startswith(PREFIX)
    ]
    return [FieldError(path=path, message=SEALED_LOOKING) for path in found]


def _contact_fields(
    kind: Kind,
    layers: list[tuple[Mapping[str, Any], Loc]],
    prefix: str,
    sources: dict[str, str],
    left: Leftovers,
    warnings: list[FieldError],
    *,
    full_name: bool,
) -> dict[str, Any]:
    """Contact fields from trait layers (later layers win), noting where each came from.

    What a layer carries beyond the kind's fields is kept where it was found (each layer on
    its own: RudderStack's node SDK repeats identify traits in both places).
    """
    fields: dict[str, Any] = {}
    for traits, loc in layers:
        where = join(prefix, loc)
        flat = contact(traits, full_name=full_name)
        unknown = set(_unknown(kind, flat.fields, properties=loc == ("properties",)))
        for name, value in flat.fields.items():
            if name in unknown:
                left.keep((*loc, name), value)
            elif value is not None or name not in fields:
                if fields.get(name) is not None and fields[name] != value:
                    warnings.append(
                        FieldError(
                            path=sources[name] + f".{name}",
                            message=f"differs from {where}.{name}, which is stored; not stored",
                        )
                    )
                fields[name] = value
                sources[name] = where
        for member, value in flat.unmapped:
            left.keep((*loc, *member), value)
        warnings.extend(FieldError(path=f"{where}.{p}", message=m) for p, m in flat.warnings)
    return fields


def _track_fields(
    kind: Kind, props: Mapping[str, Any], where: str, warnings: list[FieldError]
) -> Mapping[str, Any]:
    """A track call's properties with the spec's other names for required fields."""
    fields = dict(props)
    if kind is Kind.STAGE_CHANGED and fields.get("action") is None:
        stage = fields.pop("stage", None)
        if isinstance(stage, str):
            normal = re.sub(r"[\s-]+", "_", stage.strip().lower())
            # An unknown stage stays in ``action`` so the enumeration check names it.
            fields["action"] = STAGE_NAMES.get(normal, stage)
        elif stage is not None:
            fields["action"] = stage
    if kind in (Kind.DEAL_WON, Kind.DEAL_LOST) and fields.get("amount") is None:
        for alias in AMOUNT_ALIASES:
            if fields.get(alias) is not None:
                fields["amount"] = fields.pop(alias)
                warnings.append(
                    FieldError(path=f"{where}.{alias}", message="stored as the deal's amount")
                )
                break
    return fields


def _unstored_context(segment: SegmentContext, kind: Kind) -> list[Loc]:
    """Locations of context members the event has no place for (dropped, listed).

    Also the members of the objects it stores that it has no field for, e.g. Segment's
    ``context.referrer.type``/``name``/``link`` or RudderStack's
    ``context.page.initial_referrer``.
    """
    extra = segment.model_extra or {}
    locs: list[Loc] = [("context", name) for name in extra if name not in STORED_CONTEXT]
    for name in ("page", "campaign", "consent", "referrer"):
        member = getattr(segment, name)
        locs.extend(("context", name, inner) for inner in (member and member.model_extra) or ())
    if segment.traits and kind not in CONTACT_KINDS:
        locs.append(("context", "traits"))
    return locs
