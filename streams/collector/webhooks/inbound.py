"""One vendor webhook request: who sent it (each vendor's own proof) and what it says.

The collector's HTTP layer hands over the request's parts; this module checks them the way
the vendor documents (a signature for SendGrid, Mailgun, HubSpot and SNS, HTTP Basic
credentials for Postmark, which signs nothing) and returns what replay protection needs,
then converts the payload into the tracking plan's messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from leadflow.processors.errors import LeadflowError
from leadflow.streams.collector.webhooks import postmark, ses, vendors
from leadflow.streams.collector.webhooks.signatures import (
    hubspot_v3_valid,
    mailgun_valid,
    sendgrid_valid,
)

_TIME = TypeAdapter(datetime)


class WebhookRefused(LeadflowError):
    """The request does not prove it comes from the vendor (answered 401)."""


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of an HTTP request a vendor's proof covers."""

    method: str
    url: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes
    data: Any  # the body as parsed JSON


@dataclass(frozen=True, slots=True)
class Proof:
    """What replay protection needs of an authenticated request.

    Attributes:
        token: what may be used once (a signature, Mailgun's token, Postmark's notification,
            SNS's MessageId).
        sent_ms: when the vendor says it signed (or the notification happened), UTC ms.
        window_ms: how old that may be; ``None``: the collector's setting.
    """

    token: str
    sent_ms: int
    window_ms: int | None = None


def _seconds_ms(value: str | None, scale: int) -> int:
    """The stamp in ms; 0 (refused as "no readable signing time") when it is not a number.

    Example:
        >>> _seconds_ms("1767225600", 1000), _seconds_ms("inf", 1000), _seconds_ms("x", 1)
        (1767225600000, 0, 0)
    """
    try:
        return int(float(value or "") * scale)
    except (ValueError, OverflowError):  # "nan" is a ValueError, "inf" an OverflowError
        return 0


def _iso_ms(value: Any) -> int:
    try:
        return int(_TIME.validate_python(value).timestamp() * 1000)
    except ValidationError:
        return 0


def authenticate(vendor: str, conf: Mapping[str, str], request: Request, now_ms: int) -> Proof:
    """Check the vendor's proof; return the replay token and the time it claims.

    Raises:
        WebhookRefused: the proof is missing or wrong (the message says which).
    """
    headers, body, data = request.headers, request.body, request.data
    if vendor == "sendgrid":
        signature = headers.get("x-twilio-email-event-webhook-signature", "")
        stamp = headers.get("x-twilio-email-event-webhook-timestamp", "")
        ok = bool(signature) and sendgrid_valid(conf["public_key"], signature, stamp, body)
        proof = Proof(signature, _seconds_ms(stamp, 1000))
    elif vendor == "mailgun":
        signed = vendors.as_object(data.get("signature") if isinstance(data, dict) else None)
        stamp, token = str(signed.get("timestamp", "")), str(signed.get("token", ""))
        signature = str(signed.get("signature", ""))
        ok = bool(token) and mailgun_valid(conf["signing_key"], stamp, token, signature)
        proof = Proof(token, _seconds_ms(stamp, 1000))
    elif vendor == "hubspot":
        signature = headers.get("x-hubspot-signature-v3", "")
        stamp = headers.get("x-hubspot-request-timestamp", "")
        uri = conf.get("url") or request.url
        ok = bool(signature) and hubspot_v3_valid(
            conf["client_secret"], request.method, uri, body, stamp, signature
        )
        proof = Proof(signature, _seconds_ms(stamp, 1))
    elif vendor == "postmark":
        if not postmark.authorized(conf, headers.get("authorization")):
            raise WebhookRefused("the postmark webhook's HTTP Basic credentials are wrong")
        notice = postmark.notice(data)
        return Proof(notice.token, notice.at_ms, notice.window_ms)
    elif vendor == "ses":
        message = vendors.as_object(data)
        now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        problem = ses.signature_problem(conf["certificate"], message, now)
        if problem is not None:
            raise WebhookRefused(f"the SNS signature does not verify: {problem}")
        if message.get("TopicArn") != conf["topic_arn"]:
            # SNS signs every AWS customer's topics with the same certificate.
            raise WebhookRefused(f"SNS topic {message.get('TopicArn')!r} is not the configured one")
        return Proof(f"{message.get('MessageId')}", _iso_ms(message.get("Timestamp")))
    else:
        raise WebhookRefused(f"unknown vendor {vendor!r}")
    if not ok:
        raise WebhookRefused(f"the {vendor} signature does not verify")
    return proof


def convert(vendor: str, data: Any, workspace_id: str, sent_ms: int) -> vendors.Converted:
    """The vendor's payload as the tracking plan's messages (and what was skipped)."""
    if vendor == "sendgrid":
        return vendors.sendgrid(data, workspace_id)
    if vendor == "mailgun":
        return vendors.mailgun(data, workspace_id)
    if vendor == "hubspot":
        return vendors.hubspot(data, workspace_id, sent_ms)
    if vendor == "postmark":
        return postmark.convert(data, workspace_id)
    return ses.convert(vendors.as_object(data), workspace_id)
