"""The tracking plan: which Segment call becomes which leadflow kind, with which fields.

Senders name events the way Segment's specs do ("Form Submitted", "Email Link Clicked");
the event log stores one Avro record per kind. This table is the one place that says how a
name maps to a kind and what type each of the kind's fields has, so the collector can reject
a wrong type with the field's path before anything reaches Kafka. Field names and types are
the binding event field table (docs/events.md, schemas/avsc/events).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from leadflow.processors.events import Kind


class FieldType(StrEnum):
    """The Avro type of a payload field, as the collector checks it."""

    STRING = "string"
    INT = "int"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    STRING_MAP = "map<string>"
    DATE = "date"  # a string "YYYY-MM-DD"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload field of a kind.

    Attributes:
        name: snake_case name, the same in properties/traits and in the Avro record.
        type: what values are accepted.
        required: the event is rejected when it is missing or null.
        default: the value stored when the sender leaves the field out.
        choices: the only accepted values, when the field is an enumeration.
    """

    name: str
    type: FieldType = FieldType.STRING
    required: bool = False
    default: object = None
    choices: frozenset[str] | None = None


def _s(*names: str) -> tuple[FieldSpec, ...]:
    return tuple(FieldSpec(n) for n in names)


_CONTACT = (
    *_s("email", "first_name", "last_name", "phone", "company", "title"),
    FieldSpec("company_size", FieldType.INT),
    *_s("industry", "country"),
)
_EMAIL = _s("email_id", "campaign", "subject", "link_url", "bounce_type")
_ANSWERS = FieldSpec("answers", FieldType.STRING_MAP, default={})

STAGE_ACTIONS = frozenset({"accept_mql", "reject_mql", "open_opportunity", "recycle", "disqualify"})
# A CRM often names the stage a lead moved to instead of the decision (``stage: "sql"``);
# these are the stage names (lower-cased, spaces and dashes as underscores) that imply one.
# HubSpot's lifecycle values are included (salesqualifiedlead, opportunity).
STAGE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "sql": "accept_mql",
        "sales_qualified": "accept_mql",
        "sales_qualified_lead": "accept_mql",
        "salesqualifiedlead": "accept_mql",
        "sales_accepted": "accept_mql",
        "sal": "accept_mql",
        "accepted": "accept_mql",
        "rejected": "reject_mql",
        "mql_rejected": "reject_mql",
        "opportunity": "open_opportunity",
        "opp": "open_opportunity",
        "recycled": "recycle",
        "nurture": "recycle",
        "disqualified": "disqualify",
        "unqualified": "disqualify",
    }
)

KIND_FIELDS: Mapping[Kind, tuple[FieldSpec, ...]] = MappingProxyType(
    {
        Kind.VISIT: _s("name", "category", "search"),
        Kind.FORM_SUBMITTED: (*_s("form_id", "asset"), *_CONTACT, _ANSWERS),
        Kind.IDENTIFY: _CONTACT,
        Kind.ALIAS: (FieldSpec("previous_id", required=True),),
        Kind.EMAIL_SENT: _EMAIL,
        Kind.EMAIL_OPENED: _EMAIL,
        Kind.EMAIL_CLICKED: _EMAIL,
        Kind.EMAIL_BOUNCED: _EMAIL,
        Kind.EMAIL_UNSUBSCRIBED: _EMAIL,
        Kind.AD_CLICK: _s("network", "campaign", "ad_group", "ad_id", "click_id"),
        Kind.DEMO_REQUESTED: (FieldSpec("source"), _ANSWERS),
        Kind.WEBINAR_ATTENDED: (
            *_s("webinar_id", "webinar_name"),
            FieldSpec("minutes_attended", FieldType.INT),
        ),
        Kind.CONTENT_DOWNLOADED: _s("asset_id", "asset_name", "asset_type"),
        Kind.STAGE_CHANGED: (
            FieldSpec("action", required=True, choices=STAGE_ACTIONS),
            *_s("reason", "actor"),
            _ANSWERS,
        ),
        Kind.DEAL_WON: (
            FieldSpec("deal_id"),
            FieldSpec("amount", FieldType.DOUBLE, required=True),
            FieldSpec("currency", default="USD"),
        ),
        Kind.DEAL_LOST: (
            *_s("deal_id", "reason"),
            FieldSpec("amount", FieldType.DOUBLE),
            FieldSpec("currency", default="USD"),
        ),
        Kind.CAMPAIGN_COST: (
            FieldSpec("date", FieldType.DATE, required=True),
            FieldSpec("channel", required=True),
            FieldSpec("campaign"),
            FieldSpec("amount", FieldType.DOUBLE, required=True),
            FieldSpec("currency", default="USD"),
        ),
        Kind.CONSENT_CHANGED: (
            FieldSpec("tracking", FieldType.BOOLEAN, required=True),
            FieldSpec("marketing", FieldType.BOOLEAN),
        ),
        Kind.ERASURE_REQUESTED: _s("subject_email", "requested_by"),
        Kind.GROUP: (
            FieldSpec("group_id", required=True),
            FieldSpec("company"),
            FieldSpec("company_size", FieldType.INT),
            *_s("industry", "country", "plan", "website"),
        ),
        Kind.CUSTOM: (
            FieldSpec("name", required=True),
            FieldSpec("properties_json", default="{}"),
        ),
    }
)

TRACK_KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        "Form Submitted": Kind.FORM_SUBMITTED,
        "Email Sent": Kind.EMAIL_SENT,
        "Email Opened": Kind.EMAIL_OPENED,
        "Email Link Clicked": Kind.EMAIL_CLICKED,
        "Email Bounced": Kind.EMAIL_BOUNCED,
        "Email Unsubscribed": Kind.EMAIL_UNSUBSCRIBED,
        "Ad Clicked": Kind.AD_CLICK,
        "Demo Requested": Kind.DEMO_REQUESTED,
        "Webinar Attended": Kind.WEBINAR_ATTENDED,
        "Content Downloaded": Kind.CONTENT_DOWNLOADED,
        "Stage Changed": Kind.STAGE_CHANGED,
        "Deal Won": Kind.DEAL_WON,
        "Deal Lost": Kind.DEAL_LOST,
        "Campaign Cost": Kind.CAMPAIGN_COST,
        "Consent Changed": Kind.CONSENT_CHANGED,
        "Erasure Requested": Kind.ERASURE_REQUESTED,
    }
)

# Properties every kind understands: they go to the context, not the payload.
CONTEXT_PROPERTIES = frozenset({"channel", "experiment", "variant"})

# Kinds whose record has ``extra_json`` for the properties/traits they define no field for
# (streams/collector/leftovers.py). Custom events keep everything in ``properties_json``;
# a campaign cost belongs to no person, so no key could seal its extras; an alias carries
# no properties.
KEEPS_EXTRA = frozenset(set(Kind) - {Kind.CUSTOM, Kind.CAMPAIGN_COST, Kind.ALIAS})

# The collector's own flag on consent changes (ConsentChanged v3, last field): whether a
# withdrawal may delete the device's past. Everything the tracking API maps comes with a public
# write key, so the collector always writes false; a client's "forget" property is not read
# (it is kept in extra_json like any property the kind has no field for). Issue 19.
FORGET_FIELD = "forget"

# Identify/FormSubmitted v3 end with ``email_lead_id``: written only when the collector seals
# an email that comes with a userId (processors.pii.seal_event), so identity can link the
# email's lead; a client's "email_lead_id" trait is not read (it stays in extra_json).


def kind_for_track(event_name: str) -> Kind:
    """The kind a Segment ``track`` call becomes; names outside the plan are custom events.

    Names match exactly (Segment's specs are case-sensitive and so are its destinations):
    "form submitted" is a custom event, which keeps it visible instead of silently merged.

    Example:
        >>> kind_for_track("Email Link Clicked")
        <Kind.EMAIL_CLICKED: 'email_clicked'>
        >>> kind_for_track("Pricing Calculator Used")
        <Kind.CUSTOM: 'custom'>
    """
    return TRACK_KINDS.get(event_name, Kind.CUSTOM)


def field_names(kind: Kind) -> frozenset[str]:
    """The payload field names of ``kind``.

    Example:
        >>> sorted(field_names(Kind.ALIAS))
        ['previous_id']
    """
    return frozenset(spec.name for spec in KIND_FIELDS[kind])
