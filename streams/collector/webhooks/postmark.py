"""Postmark's webhooks: HTTP Basic credentials, one notification per request, no signature.

Postmark signs nothing. Its documented protection is HTTP Basic authentication with the
credentials in the webhook URL (``https://<user>:<password>@collector.example/...``), over
HTTPS. So the collector checks the user name and the password (stored only as its SHA-256:
it is a random token, so a fast hash is enough, as for write keys), and guards against
replays with what a notification names (``RecordType`` + ``MessageID`` + the recipient, the
link or the bounce ``ID``) inside a time window taken from the notification's own time
(``DeliveredAt``, ``ReceivedAt``, ``BouncedAt``, ``ChangedAt``). The window follows
Postmark's retry schedule: a bounce or spam complaint is retried for about 10 h, the others
for 21 min. This cannot make a leaked URL safe (whoever has it can post anything):
rotate the password if it leaks.

Payload shapes are Postmark's (postmark.js ``webhooks/payload`` types and the webhook
pages' examples): ``Delivery``, ``Open``, ``Click``, ``Bounce``, ``SpamComplaint`` and
``SubscriptionChange``. Pure functions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from leadflow.streams.collector.webhooks.vendors import Converted, event_id, person

_MINUTE = 60_000
# Postmark retries bounce (and inbound) webhooks for ~10 h (1, 5, 10, 10, 10, 15, 30 min, 1,
# 2, 6 h) and the others for 21 min (1, 5, 15 min); the windows leave room for clock skew
# and for the time between the event and its first delivery.
LONG_WINDOW_MS = 12 * 60 * _MINUTE
SHORT_WINDOW_MS = 60 * _MINUTE
# Bounce types that mean the address will not receive mail (Postmark also marks such an
# address Inactive); soft and transient bounces, auto-replies and the like are not bounces
# of the person's address.
PERMANENT_BOUNCES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
_TIME_FIELDS = {
    "Delivery": "DeliveredAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "SubscriptionChange": "ChangedAt",
}
_TIME = TypeAdapter(datetime)


def password_hash(password: str) -> str:
    """What the webhooks file stores for a Postmark password (hex SHA-256).

    Example:
        >>> password_hash("s3cret")[:16]
        '1ec1c26b50d5d3c5'
    """
    return hashlib.sha256(password.encode()).hexdigest()


def authorized(conf: Mapping[str, str], authorization: str | None) -> bool:
    """Whether an ``Authorization: Basic`` header carries the configured credentials.

    Example:
        >>> conf = {"username": "postmark", "password_sha256": password_hash("s3cret")}
        >>> header = "Basic " + base64.b64encode(b"postmark:s3cret").decode()
        >>> authorized(conf, header), authorized(conf, "Basic eDp5"), authorized(conf, None)
        (True, False, False)
    """
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Both compared in constant time, both always compared: no early exit to time.
    user_ok = hmac.compare_digest(user.encode(), conf["username"].encode())
    password_ok = hmac.compare_digest(password_hash(password), conf["password_sha256"])
    return bool(sep) and user_ok and password_ok


@dataclass(frozen=True, slots=True)
class Notice:
    """What replay protection needs of one notification.

    Attributes:
        token: what makes it unique (another open of the same mail is another token).
        at_ms: its own time, UTC ms (0 when missing or unreadable: then it is stale).
        window_ms: how old it may be (Postmark's retry schedule for its type).
    """

    token: str
    at_ms: int
    window_ms: int


def notice(payload: Any) -> Notice:
    """The replay token, time and window of one Postmark notification.

    Example:
        >>> n = notice({"RecordType": "Open", "MessageID": "m1", "Recipient": "a@b.example",
        ...             "ReceivedAt": "2019-11-05T16:33:54.9070259Z"})
        >>> n.token, n.at_ms, n.window_ms
        ('Open|m1|a@b.example|2019-11-05T16:33:54.9070259Z', 1572971634907, 3600000)
    """
    data = payload if isinstance(payload, dict) else {}
    record = str(data.get("RecordType"))
    stamp = data.get(_TIME_FIELDS.get(record, ""))
    try:
        at_ms = int(_TIME.validate_python(stamp).timestamp() * 1000) if stamp else 0
    except ValidationError:
        at_ms = 0
    if record in ("Bounce", "SpamComplaint"):
        parts: tuple[Any, ...] = (data.get("ID"),)
        window = LONG_WINDOW_MS
    else:
        recipient = data.get("Recipient") or data.get("Email")
        detail = data.get("OriginalLink") if record == "Click" else stamp
        parts = (_message_id(data), recipient, detail)
        window = SHORT_WINDOW_MS
    return Notice("|".join(str(p) for p in (record, *parts)), at_ms, window)


def _message_id(data: Mapping[str, Any]) -> Any:
    # The Delivery webhook spells it MessageId in postmark.js's types, MessageID elsewhere.
    return data.get("MessageID") or data.get("MessageId")


def convert(payload: Any, workspace_id: str) -> Converted:
    """One Postmark notification as the tracking plan's email event (or a skip reason).

    Example:
        >>> out = convert({"RecordType": "Click", "MessageID": "m1",
        ...     "Recipient": "ada@acme.example", "OriginalLink": "https://acme.example/pricing",
        ...     "Tag": "launch", "ReceivedAt": "2019-11-05T16:33:54Z"}, "ws")
        >>> msg = out.messages[0]
        >>> msg["event"], msg["properties"]["link_url"], msg["properties"]["campaign"]
        ('Email Link Clicked', 'https://acme.example/pricing', 'launch')
        >>> convert({"RecordType": "Bounce", "ID": 7, "Type": "SoftBounce",
        ...          "Email": "x@y.example"}, "ws").skipped
        ['[0]: Bounce SoftBounce is not a permanent bounce']
    """
    out = Converted()
    if not isinstance(payload, dict):
        out.messages.append({"_index": 0, "_invalid": "not a JSON object"})
        return out
    record = str(payload.get("RecordType"))
    name, skip = _event_name(record, payload)
    if name is None:
        out.skipped.append(f"[0]: {skip}")
        return out
    recipient = payload.get("Recipient") or payload.get("Email")
    metadata = payload.get("Metadata")
    bounce_type = None
    if record == "Bounce":
        bounce_type = payload.get("Type")
    elif record == "SubscriptionChange" and name == "Email Bounced":
        bounce_type = payload.get("SuppressionReason")
    properties = {
        "email_id": _message_id(payload),
        "campaign": payload.get("Tag") or None,
        "subject": payload.get("Subject"),
        "link_url": payload.get("OriginalLink"),
        "bounce_type": bounce_type,
        # Postmark's own facts about the notification, kept with the event (extra_json).
        "message_stream": payload.get("MessageStream"),
        "first_open": payload.get("FirstOpen"),
        "click_location": payload.get("ClickLocation"),
        "suppression_reason": payload.get("SuppressionReason"),
        "origin": payload.get("Origin"),
    }
    time_field = _TIME_FIELDS.get(record, "")
    out.messages.append(
        {
            "type": "track",
            "event": name,
            "messageId": event_id("postmark", notice(payload).token),
            "userId": person(
                workspace_id, metadata if isinstance(metadata, dict) else {}, recipient
            ),
            "timestamp": payload.get(time_field),
            "properties": {k: v for k, v in properties.items() if v is not None},
        }
    )
    return out


def _event_name(record: str, payload: Mapping[str, Any]) -> tuple[str | None, str]:
    """The tracking plan's event for a notification, or ``None`` and why it is skipped."""
    if record == "Delivery":
        return "Email Sent", ""
    if record == "Open":
        return "Email Opened", ""
    if record == "Click":
        return "Email Link Clicked", ""
    if record == "SpamComplaint":
        return "Email Unsubscribed", ""
    if record == "Bounce":
        kind = payload.get("Type")
        if kind == "Unsubscribe":  # an unsubscribe request that arrived as a bounce
            return "Email Unsubscribed", ""
        if kind in PERMANENT_BOUNCES or payload.get("Inactive") is True:
            return "Email Bounced", ""
        return None, f"Bounce {kind} is not a permanent bounce"
    if record == "SubscriptionChange":
        if payload.get("SuppressSending") is not True:
            return None, "SubscriptionChange reactivating the recipient is not recorded"
        # Broadcast streams report hard bounces only this way (no Bounce webhook there).
        if payload.get("SuppressionReason") == "HardBounce":
            return "Email Bounced", ""
        return "Email Unsubscribed", ""
    return None, f"{record} is not recorded"
