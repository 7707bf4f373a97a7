"""Amazon SES events delivered by Amazon SNS: the SNS signature, checked offline, and the mapping.

SNS signs each HTTP delivery with RSA (``SignatureVersion`` 1: SHA1withRSA, 2:
SHA256withRSA) over a canonical string of the message's fields, and names the signing
certificate by URL (``SigningCertURL``). AWS's guidance is to fetch that certificate over
HTTPS and check its chain; the collector makes no outbound calls, so the operator *pins* the
certificate instead: the PEM from the ``SigningCertURL`` of the region, downloaded once and
put in the webhooks file (several PEMs may be concatenated while AWS rotates it). The
collector then verifies every delivery against the pinned certificates with ``cryptography``,
refuses expired certificates, and accepts only the configured ``TopicArn`` (SNS signs every
customer's topic with the same key, so the signature alone proves "from SNS", not "from
our topic"). A certificate AWS has rotated fails closed: the 401 names the new URL to pin.

SES publishes ``eventType`` records (event publishing through a configuration set) or
``notificationType`` records (identity notifications) in the SNS ``Message``; each names one
mail and, for bounces and complaints, its recipients. Pure functions.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from leadflow.streams.collector.webhooks.vendors import Converted, as_object, event_id, person

# The fields SNS signs, in order, per message type (AWS: "Verifying the signatures of Amazon
# SNS messages"); Subject only when the message has one.
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
)  # fmt: skip
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_PERSON_TAGS = ("lead_id", "userId", "user_id")


def string_to_sign(message: Mapping[str, Any]) -> bytes | None:
    r"""The canonical bytes SNS signed (``None`` for a message type SNS does not send).

    Example:
        >>> string_to_sign({"Type": "Notification", "Message": "hi", "MessageId": "m",
        ...                 "Timestamp": "t", "TopicArn": "arn"})
        b'Message\nhi\nMessageId\nm\nTimestamp\nt\nTopicArn\narn\nType\nNotification\n'
    """
    kind = message.get("Type")
    names: tuple[str, ...]
    if kind == "Notification":
        names = _NOTIFICATION_FIELDS
    elif kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        names = _CONFIRMATION_FIELDS
    else:
        return None
    parts = []
    for name in names:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        parts.append(f"{name}\n{'' if value is None else value}\n")
    return "".join(parts).encode()


def signature_problem(
    certificates_pem: str, message: Mapping[str, Any], now: datetime
) -> str | None:
    """Why the SNS message's signature does not verify against the pinned certificates.

    ``None`` when one of the certificates (valid at ``now``) verifies it.
    """
    signed = string_to_sign(message)
    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    if signed is None or algorithm is None:
        return "not an SNS message (Type or SignatureVersion)"
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        certificates = x509.load_pem_x509_certificates(certificates_pem.encode())
    except (binascii.Error, ValueError):
        return "unreadable Signature or pinned certificate"
    current = [c for c in certificates if c.not_valid_before_utc <= now <= c.not_valid_after_utc]
    if not current:
        return "every pinned SNS certificate has expired: pin " + str(message.get("SigningCertURL"))
    for certificate in current:
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            continue
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            continue
        return None
    # AWS rotates the signing certificate now and then: say which one signed this.
    signer = message.get("SigningCertURL")
    return f"signature does not verify against the pinned certificate(s); signed with {signer}"


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _recipients(record: Mapping[str, Any], kind: str, mail: Mapping[str, Any]) -> list[str]:
    """Who the event is about: the listed recipients, or the mail's only destination."""
    detail = as_object(record.get(kind.lower()))
    if kind == "Bounce":
        listed = [r.get("emailAddress") for r in detail.get("bouncedRecipients") or []]
    elif kind == "Complaint":
        listed = [r.get("emailAddress") for r in detail.get("complainedRecipients") or []]
    elif kind == "Delivery":
        listed = list(detail.get("recipients") or [])
    else:  # Open, Click, Subscription name the mail, not a recipient
        destination = mail.get("destination") or []
        listed = list(destination) if len(destination) == 1 else []
    return [r for r in listed if isinstance(r, str)]


def _event_name(kind: str, record: Mapping[str, Any]) -> tuple[str | None, str]:
    if kind == "Delivery":
        return "Email Sent", ""
    if kind == "Open":
        return "Email Opened", ""
    if kind == "Click":
        return "Email Link Clicked", ""
    if kind == "Complaint":
        return "Email Unsubscribed", ""
    if kind == "Bounce":
        bounce = as_object(record.get("bounce"))
        if bounce.get("bounceType") == "Permanent":
            return "Email Bounced", ""
        return None, f"Bounce {bounce.get('bounceType')} is not a permanent bounce"
    if kind == "Subscription":
        prefs = as_object(as_object(record.get("subscription")).get("newTopicPreferences"))
        if prefs.get("unsubscribeAll") is True:
            return "Email Unsubscribed", ""
        return None, "Subscription without unsubscribeAll is not recorded"
    return None, f"{kind} is not recorded"


def convert(message: Mapping[str, Any], workspace_id: str) -> Converted:
    """One verified SNS delivery as the tracking plan's email events (one per recipient).

    Example:
        >>> ses = {"eventType": "Bounce", "bounce": {"bounceType": "Permanent",
        ...     "bounceSubType": "General", "timestamp": "2017-08-05T00:41:02.669Z",
        ...     "bouncedRecipients": [{"emailAddress": "ada@acme.example"}]},
        ...     "mail": {"messageId": "m-1", "commonHeaders": {"subject": "Q3"},
        ...              "tags": {"campaign": ["launch"]}}}
        >>> out = convert({"Type": "Notification", "MessageId": "sns-1",
        ...                "Message": json.dumps(ses)}, "ws")
        >>> msg = out.messages[0]
        >>> msg["event"], msg["properties"]["bounce_type"], msg["properties"]["campaign"]
        ('Email Bounced', 'Permanent/General', 'launch')
        >>> convert({"Type": "SubscriptionConfirmation"}, "ws").skipped
        ['[0]: SubscriptionConfirmation: confirm it by opening its SubscribeURL (logged)']
    """
    out = Converted()
    kind = message.get("Type")
    if kind != "Notification":
        out.skipped.append(
            f"[0]: {kind}: confirm it by opening its SubscribeURL (logged)"
            if kind == "SubscriptionConfirmation"
            else f"[0]: {kind} is not recorded"
        )
        return out
    try:
        record = json.loads(str(message.get("Message")))
    except ValueError:
        record = None
    if not isinstance(record, dict):
        out.messages.append({"_index": 0, "_invalid": "the SNS Message is not a JSON object"})
        return out
    event_kind = str(record.get("eventType") or record.get("notificationType"))
    name, skip = _event_name(event_kind, record)
    if name is None:
        out.skipped.append(f"[0]: {skip}")
        return out
    mail = as_object(record.get("mail"))
    recipients = _recipients(record, event_kind, mail)
    if not recipients:
        out.skipped.append(f"[0]: {event_kind} names no single recipient")
        return out
    detail = as_object(record.get(event_kind.lower()))
    headers = as_object(mail.get("commonHeaders"))
    tags = as_object(mail.get("tags"))
    flat_tags = {k: _first(v) for k, v in tags.items() if k in _PERSON_TAGS}
    bounce_type = None
    if event_kind == "Bounce":
        bounce_type = "/".join(
            str(detail.get(k)) for k in ("bounceType", "bounceSubType") if detail.get(k)
        )
    properties = {
        "email_id": mail.get("messageId"),
        "campaign": _first(tags.get("campaign")),
        "subject": headers.get("subject"),
        "link_url": detail.get("link") if event_kind == "Click" else None,
        "bounce_type": bounce_type,
        "complaint_type": detail.get("complaintFeedbackType")
        if event_kind == "Complaint"
        else None,
    }
    for i, recipient in enumerate(recipients):
        out.messages.append(
            {
                "type": "track",
                "event": name,
                "messageId": event_id("ses", message.get("MessageId"), event_kind, recipient, i),
                "userId": person(workspace_id, flat_tags, recipient),
                "timestamp": detail.get("timestamp") or mail.get("timestamp"),
                "properties": {k: v for k, v in properties.items() if v is not None},
            }
        )
    return out
