"""Vendor webhook payloads as Segment messages (the shapes of each vendor's public docs).

Each function turns one verified payload into the ``track`` messages the tracking plan
already knows ("Email Opened", "Stage Changed", "Deal Won"...), so webhooks share the
mapping, the dead-letter path and the answer with the trackers. Notifications leadflow does
not record (SendGrid's ``processed``, a HubSpot lifecycle change to ``subscriber``) are
returned as ``skipped`` with the reason, and the answer lists them.

The person: an id the sender attached (SendGrid custom args / Mailgun user-variables
``lead_id`` or ``userId``) wins; else the recipient's email gives the same derived lead id
a form with that email gets (``derive_lead_id``). The event id is derived from the
vendor's own event id, so a redelivery is the same event downstream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from leadflow.processors.derived import derived_id
from leadflow.processors.identity import derive_lead_id
from leadflow.streams.collector.tracking_plan import STAGE_NAMES

# SendGrid's event names -> the tracking plan's email events.
SENDGRID_EVENTS = {
    "delivered": "Email Sent",
    "open": "Email Opened",
    "click": "Email Link Clicked",
    "bounce": "Email Bounced",
    "dropped": "Email Bounced",
    "unsubscribe": "Email Unsubscribed",
    "group_unsubscribe": "Email Unsubscribed",
    "spamreport": "Email Unsubscribed",
}
# Mailgun's event names (``failed`` only when permanent: a temporary failure is retried).
MAILGUN_EVENTS = {
    "delivered": "Email Sent",
    "opened": "Email Opened",
    "clicked": "Email Link Clicked",
    "failed": "Email Bounced",
    "unsubscribed": "Email Unsubscribed",
    "complained": "Email Unsubscribed",
}
# HubSpot's lead status values that are sales decisions (lifecycle values are in STAGE_NAMES).
HUBSPOT_LEAD_STATUS = {"unqualified": "disqualify", "bad_timing": "recycle"}
HUBSPOT_STAGE_PROPERTIES = ("lifecyclestage", "hs_lead_status")
_PERSON_KEYS = ("lead_id", "userId", "user_id")


@dataclass
class Converted:
    """Messages for the collector, and what was skipped (``index: reason``)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def as_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (payloads are untrusted)."""
    return value if isinstance(value, dict) else {}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def person(workspace_id: str, extra: Mapping[str, Any], email: Any) -> str | None:
    """The lead a notification is about: an id the sender attached, else the email's lead."""
    for key in _PERSON_KEYS:
        if isinstance(extra.get(key), str) and extra[key]:
            return str(extra[key])
    if isinstance(email, str) and "@" in email:
        return derive_lead_id(workspace_id, email)
    return None


def event_id(vendor: str, *parts: object) -> str:
    """A stable event id from the vendor's own ids (a redelivery is the same event)."""
    return f"{vendor}-{derived_id(vendor, *parts)}"


def sendgrid(payload: Any, workspace_id: str) -> Converted:
    """SendGrid's Event Webhook (a JSON array of events).

    Example:
        >>> out = sendgrid([{"email": "ada@acme.example", "event": "open", "timestamp": 1700000000,
        ...     "sg_event_id": "e1", "sg_message_id": "m1.f", "category": ["launch"]},
        ...     {"email": "x@y.z", "event": "processed", "timestamp": 1700000000}], "ws")
        >>> msg = out.messages[0]
        >>> msg["event"], msg["timestamp"], msg["properties"]["campaign"], out.skipped
        ('Email Opened', '2023-11-14T22:13:20Z', 'launch', ['[1]: processed is not recorded'])
    """
    out = Converted()
    events = payload if isinstance(payload, list) else [payload]
    for i, item in enumerate(events):
        if not isinstance(item, dict):
            out.messages.append({"_index": i, "_invalid": "not an event object"})
            continue
        name = SENDGRID_EVENTS.get(str(item.get("event")))
        if name is None:
            out.skipped.append(f"[{i}]: {item.get('event')} is not recorded")
            continue
        categories = item.get("category")
        campaign = categories[0] if isinstance(categories, list) and categories else categories
        message_id = item.get("sg_message_id")
        properties = {
            "email_id": message_id.split(".")[0] if isinstance(message_id, str) else None,
            "campaign": item.get("campaign") or campaign,
            "subject": item.get("subject"),
            "link_url": item.get("url"),
            "bounce_type": item.get("type") or ("dropped" if item["event"] == "dropped" else None),
        }
        stamp = item.get("timestamp")
        out.messages.append(
            {
                "type": "track",
                "event": name,
                "messageId": event_id("sendgrid", item.get("sg_event_id") or repr(item)),
                "userId": person(workspace_id, item, item.get("email")),
                "timestamp": _iso(stamp) if isinstance(stamp, int | float) else stamp,
                "properties": {k: v for k, v in properties.items() if v is not None},
            }
        )
    return out


def mailgun(payload: Any, workspace_id: str) -> Converted:
    """One Mailgun webhook (``{"signature": ..., "event-data": ...}``).

    Example:
        >>> out = mailgun({"event-data": {"event": "clicked", "timestamp": 1700000000.5,
        ...     "id": "ev1", "recipient": "ada@acme.example", "url": "https://acme.example/p",
        ...     "message": {"headers": {"message-id": "m1", "subject": "Hi"}}}}, "ws")
        >>> out.messages[0]["event"], out.messages[0]["properties"]["link_url"]
        ('Email Link Clicked', 'https://acme.example/p')
    """
    out = Converted()
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        out.messages.append({"_index": 0, "_invalid": "no event-data object"})
        return out
    event = str(data.get("event"))
    name = MAILGUN_EVENTS.get(event)
    if name is None or (event == "failed" and data.get("severity") != "permanent"):
        out.skipped.append(f"[0]: {event} ({data.get('severity') or 'any'}) is not recorded")
        return out
    message = as_object(data.get("message"))
    headers = as_object(message.get("headers"))
    variables = as_object(data.get("user-variables"))
    campaigns = data.get("campaigns") or data.get("tags") or []
    first = campaigns[0] if isinstance(campaigns, list) and campaigns else None
    campaign = first.get("name") if isinstance(first, dict) else first
    properties = {
        "email_id": headers.get("message-id"),
        "subject": headers.get("subject"),
        "campaign": variables.get("campaign") or campaign,
        "link_url": data.get("url"),
        "bounce_type": data.get("reason") if event == "failed" else None,
    }
    stamp = data.get("timestamp")
    out.messages.append(
        {
            "type": "track",
            "event": name,
            "messageId": event_id("mailgun", data.get("id") or repr(data)),
            "userId": person(workspace_id, variables, data.get("recipient")),
            "timestamp": _iso(stamp) if isinstance(stamp, int | float) else stamp,
            "properties": {k: v for k, v in properties.items() if v is not None},
        }
    )
    return out


def _stage_action(prop: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    normal = re.sub(r"[\s-]+", "_", value.strip().lower())
    if prop == "hs_lead_status":
        return HUBSPOT_LEAD_STATUS.get(normal)
    return STAGE_NAMES.get(normal)


def _hubspot_event(i: int, item: Mapping[str, Any], out: Converted) -> None:
    kind = str(item.get("subscriptionType"))
    prop, value = item.get("propertyName"), item.get("propertyValue")
    if not kind.startswith("contact.") or prop not in HUBSPOT_STAGE_PROPERTIES:
        # Deal events name the deal, not a person, and carry only the changed property:
        # deals come from a workflow webhook that sends the contact's email and the amount.
        out.skipped.append(f"[{i}]: {kind} {prop or ''} is not recorded".rstrip())
        return
    action = _stage_action(str(prop), value)
    if action is None:
        out.skipped.append(f"[{i}]: {prop}={value} is not a sales decision")
        return
    occurred = item.get("occurredAt")
    out.messages.append(
        {
            "type": "track",
            "event": "Stage Changed",
            "messageId": event_id("hubspot", item.get("eventId"), item.get("portalId")),
            "userId": f"hubspot-{item.get('portalId')}-{item.get('objectId')}",
            "timestamp": _iso(occurred / 1000) if isinstance(occurred, int | float) else None,
            "properties": {
                "action": action,
                "reason": f"hubspot {prop}={value}",
                "actor": "hubspot",
            },
        }
    )


def _flat(properties: Mapping[str, Any]) -> dict[str, Any]:
    # Workflow webhooks send {"email": "..."} or {"email": {"value": "..."}} (legacy shape).
    return {
        k: (v.get("value") if isinstance(v, dict) and "value" in v else v)
        for k, v in properties.items()
    }


def _hubspot_record(
    item: Mapping[str, Any], workspace_id: str, sent_ms: int, out: Converted
) -> None:
    props = _flat(as_object(item.get("properties")) or item)
    object_id = item.get("objectId") or item.get("vid") or props.get("hs_object_id")
    lead = person(workspace_id, props, props.get("email"))
    if lead is None and object_id is not None:
        lead = f"hubspot-{item.get('portalId')}-{object_id}"
    when = _iso(sent_ms / 1000)
    stage = props.get("dealstage")
    if isinstance(stage, str) and stage.lower() in ("closedwon", "closedlost"):
        won = stage.lower() == "closedwon"
        properties = {
            "deal_id": str(props.get("hs_object_id") or object_id or "") or None,
            "amount": props.get("amount"),
            "currency": props.get("deal_currency_code"),
            "reason": None if won else props.get("closed_lost_reason"),
        }
        out.messages.append(
            {
                "type": "track",
                "event": "Deal Won" if won else "Deal Lost",
                "messageId": event_id("hubspot", "deal", object_id, stage, sent_ms),
                "userId": lead,
                "timestamp": when,
                "properties": {k: v for k, v in properties.items() if v not in (None, "")},
            }
        )
        return
    for prop in HUBSPOT_STAGE_PROPERTIES:
        action = _stage_action(prop, props.get(prop))
        if action is not None:
            out.messages.append(
                {
                    "type": "track",
                    "event": "Stage Changed",
                    "messageId": event_id(
                        "hubspot", "stage", object_id, prop, props.get(prop), sent_ms
                    ),
                    "userId": lead,
                    "timestamp": when,
                    "properties": {
                        "action": action,
                        "reason": f"hubspot {prop}={props.get(prop)}",
                        "actor": "hubspot",
                    },
                }
            )
            return
    out.skipped.append("[0]: no closed deal stage and no lifecycle stage that is a sales decision")


def hubspot(payload: Any, workspace_id: str, sent_ms: int) -> Converted:
    """HubSpot webhooks: the webhooks API's event array, or one workflow webhook record.

    Example:
        >>> out = hubspot([{"eventId": 1, "portalId": 7, "objectId": 42,
        ...     "occurredAt": 1700000000000, "subscriptionType": "contact.propertyChange",
        ...     "propertyName": "lifecyclestage",
        ...     "propertyValue": "salesqualifiedlead"}], "ws", 1700000000000)
        >>> out.messages[0]["properties"]["action"], out.messages[0]["userId"]
        ('accept_mql', 'hubspot-7-42')
        >>> won = hubspot({"objectId": 9, "properties": {"dealstage": "closedwon", "amount": "1200",
        ...     "email": "ada@acme.example"}}, "ws", 1700000000000).messages[0]
        >>> won["event"], won["properties"]["amount"]
        ('Deal Won', '1200')
    """
    out = Converted()
    if isinstance(payload, list):
        for i, item in enumerate(payload):
            if isinstance(item, dict):
                _hubspot_event(i, item, out)
            else:
                out.messages.append({"_index": i, "_invalid": "not an event object"})
    elif isinstance(payload, dict):
        _hubspot_record(payload, workspace_id, sent_ms, out)
    else:
        out.messages.append({"_index": 0, "_invalid": "not a JSON object or array"})
    return out
