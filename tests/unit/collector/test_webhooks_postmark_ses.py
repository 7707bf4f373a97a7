"""Postmark (HTTP Basic, no signature) and Amazon SES through SNS (RSA, pinned certificate).

Payload shapes are the vendors' documented ones (Postmark's webhook pages and postmark.js's
payload types; SES's event publishing records inside SNS notifications). The SNS signature is
made here as AWS documents it: SHA256withRSA (SignatureVersion 2) or SHA1withRSA (1) over
"Key\\nValue\\n" of Message, MessageId, Subject (if any), Timestamp, TopicArn and Type.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from leadflow.processors.events import Kind
from leadflow.processors.identity import derive_lead_id
from leadflow.streams.collector.webhooks.config import WebhookConfigError, WebhookSecrets
from leadflow.streams.collector.webhooks.postmark import password_hash
from tests.unit.collector.test_http import Harness

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the harness's clock
PASSWORD = "pm-9f2c1e7b0a4d4b8e9c3f"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"


def certificate(key: rsa.RSAPrivateKey, start: datetime, end: datetime) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


SNS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OLD_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PINNED = certificate(SNS_KEY, NOW - timedelta(days=200), NOW + timedelta(days=200))


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    config = tmp_path / "webhooks.json"
    config.write_text(
        json.dumps(
            {
                "acme": {
                    "postmark": {
                        "username": "postmark",
                        "password_sha256": password_hash(PASSWORD),
                    },
                    "ses": {"certificate": PINNED, "topic_arn": TOPIC},
                }
            }
        )
    )
    harness.collector.webhooks = WebhookSecrets(config)
    return harness


# -- Postmark ------------------------------------------------------------------------------


def postmark_post(
    h: Harness, payload: Any, password: str = PASSWORD, user: str = "postmark"
) -> Any:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return h.post(
        "/webhooks/postmark/acme",
        content=json.dumps(payload).encode(),
        key=None,
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )


def delivery(minutes_ago: int = 1) -> dict[str, Any]:
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "ada@acme.example",
        "Tag": "welcome-email",
        "DeliveredAt": iso(NOW - timedelta(minutes=minutes_ago)),
        "Details": "Test delivery webhook details",
        "Metadata": {"example": "value"},
    }


def open_(at: datetime) -> dict[str, Any]:
    return {
        "RecordType": "Open",
        "MessageStream": "outbound",
        "FirstOpen": True,
        "Client": {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"},
        "OS": {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X 10"},
        "Platform": "WebMail",
        "UserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5)",
        "Geo": {"CountryISOCode": "RS", "City": "Novi Sad", "IP": "188.2.95.4"},
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"lead_id": "lead-42"},
        "ReceivedAt": iso(at),
        "Tag": "welcome-email",
        "Recipient": "ada@acme.example",
    }


CLICK = {
    "RecordType": "Click",
    "MessageStream": "outbound",
    "ClickLocation": "HTML",
    "Platform": "Desktop",
    "UserAgent": "Mozilla/5.0",
    "OriginalLink": "https://acme.example/pricing",
    "MessageID": "00000000-0000-0000-0000-000000000000",
    "ReceivedAt": iso(NOW - timedelta(seconds=30)),
    "Tag": "q3-launch",
    "Recipient": "ada@acme.example",
    "Metadata": {},
}


def bounce(kind: str, bounce_id: int, hours_ago: float = 0) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": bounce_id,
        "Type": kind,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "Test",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message.",
        "Details": "Test bounce details",
        "Email": "grace@acme.example",
        "From": "sender@example.com",
        "BouncedAt": iso(NOW - timedelta(hours=hours_ago)),
        "DumpAvailable": True,
        "Inactive": kind == "HardBounce",
        "CanActivate": True,
        "Subject": "Test subject",
        "Metadata": {},
    }


def test_postmark_notifications_become_the_email_events(h: Harness) -> None:
    spam = bounce("SpamComplaint", 43) | {"RecordType": "SpamComplaint"}
    change = {
        "RecordType": "SubscriptionChange",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 23,
        "MessageStream": "broadcast",
        "ChangedAt": iso(NOW),
        "Recipient": "linus@acme.example",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "Tag": "newsletter",
        "Metadata": {},
    }
    first_open = open_(NOW - timedelta(minutes=5))
    payloads = [delivery(), first_open, open_(NOW), CLICK, bounce("HardBounce", 42), spam, change]
    for payload in payloads:
        response = postmark_post(h, payload)
        assert response.status_code == 200, response.text
    sent, opened, opened_again, clicked, bounced, complained, unsubscribed = h.events()
    assert [e.kind for e in h.events()] == [
        Kind.EMAIL_SENT,
        Kind.EMAIL_OPENED,
        Kind.EMAIL_OPENED,  # every open is a notification of its own (PostFirstOpenOnly off)
        Kind.EMAIL_CLICKED,
        Kind.EMAIL_BOUNCED,
        Kind.EMAIL_UNSUBSCRIBED,
        Kind.EMAIL_UNSUBSCRIBED,
    ]
    assert sent.lead_id == derive_lead_id("acme", "ada@acme.example")
    assert (sent.payload["email_id"], sent.payload["campaign"]) == (
        "883953f4-6105-42a2-a16a-77a8eac79483",
        "welcome-email",
    )
    assert sent.occurred_at == int((NOW - timedelta(minutes=1)).timestamp() * 1000)
    assert opened.lead_id == "lead-42"  # Metadata names the lead
    assert opened.event_id != opened_again.event_id
    assert clicked.payload["link_url"] == "https://acme.example/pricing"
    assert (bounced.payload["bounce_type"], bounced.payload["subject"]) == (
        "HardBounce",
        "Test subject",
    )
    assert bounced.lead_id == derive_lead_id("acme", "grace@acme.example")
    assert complained.lead_id == bounced.lead_id
    assert unsubscribed.lead_id == derive_lead_id("acme", "linus@acme.example")
    assert (sent.context.channel, sent.workspace_id) == ("email", "acme")
    # Postmark's own facts are kept with the event (extra_json), not dropped.
    assert json.loads(opened.payload["extra_json"]) == {
        "properties": {"first_open": True, "message_stream": "outbound"}
    }


def test_postmark_notifications_leadflow_does_not_record_are_listed(h: Harness) -> None:
    soft = postmark_post(h, bounce("SoftBounce", 44))
    assert soft.status_code == 200
    assert soft.json()["ignored"] == ["[0]: Bounce SoftBounce is not a permanent bounce"]
    back = {
        "RecordType": "SubscriptionChange",
        "MessageID": "m-2",
        "ChangedAt": iso(NOW),
        "Recipient": "ada@acme.example",
        "SuppressSending": False,
        "SuppressionReason": None,
    }
    assert "reactivating" in postmark_post(h, back).json()["ignored"][0]
    # Broadcast streams report hard bounces only as a subscription change.
    hard = back | {"MessageID": "m-3", "SuppressSending": True, "SuppressionReason": "HardBounce"}
    assert postmark_post(h, hard).status_code == 200
    assert [e.kind for e in h.events()] == [Kind.EMAIL_BOUNCED]


def test_postmark_wrong_credentials_stale_and_replayed_notifications_are_refused(
    h: Harness,
) -> None:
    assert postmark_post(h, delivery(), password="guess").status_code == 401
    assert postmark_post(h, delivery(), user="admin").status_code == 401
    anonymous = h.post("/webhooks/postmark/acme", delivery(), key=None)
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "unauthorized")
    # Opens are retried for 21 minutes: an hour-and-a-half-old one is not a retry.
    stale = postmark_post(h, open_(NOW - timedelta(minutes=90)))
    assert stale.status_code == 401
    assert "outside the 3600 s window" in stale.json()["message"]
    # Bounces are retried for about 10 hours.
    assert postmark_post(h, bounce("HardBounce", 50, hours_ago=5)).status_code == 200
    first, again = postmark_post(h, delivery()), postmark_post(h, delivery())
    assert (first.status_code, again.status_code) == (200, 401)
    assert "replay" in again.json()["message"]
    assert len(h.events()) == 2


def test_a_postmark_password_in_plaintext_is_a_loud_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "webhooks.json"
    config.write_text(
        json.dumps({"acme": {"postmark": {"username": "u", "password_sha256": "pw"}}})
    )
    with pytest.raises(WebhookConfigError, match="hex SHA-256 of the password"):
        WebhookSecrets(config).lookup("acme", "postmark")


# -- Amazon SES through SNS ----------------------------------------------------------------


def sns(
    ses_record: dict[str, Any] | None,
    *,
    key: rsa.RSAPrivateKey = SNS_KEY,
    version: str = "2",
    message_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    at: datetime = NOW,
    topic: str = TOPIC,
    kind: str = "Notification",
    **extra: str,
) -> dict[str, Any]:
    """An SNS HTTP delivery, signed as AWS documents it."""
    message: dict[str, Any] = {
        "Type": kind,
        "MessageId": message_id,
        "TopicArn": topic,
        "Message": json.dumps(ses_record)
        if ses_record is not None
        else "You have chosen to subscribe",
        "Timestamp": iso(at),
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
        **extra,
    }
    if kind == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    canonical = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
    digest = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = key.sign(canonical.encode(), padding.PKCS1v15(), digest)
    message["Signature"] = base64.b64encode(signature).decode()
    return message


def ses_post(h: Harness, message: dict[str, Any]) -> Any:
    headers = {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": "Notification",
    }
    return h.post(
        "/webhooks/ses/acme", content=json.dumps(message).encode(), key=None, headers=headers
    )


MAIL = {
    "timestamp": "2026-03-01T11:58:00.000Z",
    "source": "sender@acme.example",
    "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
    "destination": ["ada@acme.example"],
    "commonHeaders": {"from": ["sender@acme.example"], "subject": "Q3 launch"},
    "tags": {"ses:configuration-set": ["ConfigSet"], "campaign": ["q3-launch"]},
}


def test_ses_events_through_sns_become_the_email_events(h: Harness) -> None:
    permanent = {
        "eventType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {"emailAddress": "ada@acme.example", "action": "failed", "status": "5.1.1"},
                {"emailAddress": "grace@acme.example", "action": "failed", "status": "5.1.1"},
            ],
            "timestamp": "2026-03-01T11:59:02.669Z",
            "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
        },
        "mail": MAIL,
    }
    delivered = {
        "eventType": "Delivery",
        "mail": MAIL,
        "delivery": {
            "timestamp": "2026-03-01T11:58:30.000Z",
            "recipients": ["ada@acme.example"],
            "processingTimeMillis": 546,
            "smtpResponse": "250 ok",
        },
    }
    clicked = {
        "eventType": "Click",
        "mail": MAIL,
        "click": {
            "timestamp": "2026-03-01T11:59:30.000Z",
            "ipAddress": "192.0.2.1",
            "link": "https://acme.example/pricing",
            "userAgent": "Mozilla/5.0",
        },
    }
    complaint = {
        "notificationType": "Complaint",  # identity notifications spell it notificationType
        "complaint": {
            "complainedRecipients": [{"emailAddress": "ada@acme.example"}],
            "timestamp": "2026-03-01T11:59:40.000Z",
            "complaintFeedbackType": "abuse",
        },
        "mail": MAIL,
    }
    for i, record in enumerate((permanent, delivered, clicked, complaint)):
        response = ses_post(h, sns(record, message_id=f"sns-{i}", version="2" if i else "1"))
        assert response.status_code == 200, response.text
    kinds = [e.kind for e in h.events()]
    assert kinds == [
        Kind.EMAIL_BOUNCED,
        Kind.EMAIL_BOUNCED,  # one event per bounced recipient
        Kind.EMAIL_SENT,
        Kind.EMAIL_CLICKED,
        Kind.EMAIL_UNSUBSCRIBED,
    ]
    ada, grace, sent, click, unsub = h.events()
    assert (ada.lead_id, grace.lead_id) == (
        derive_lead_id("acme", "ada@acme.example"),
        derive_lead_id("acme", "grace@acme.example"),
    )
    assert (ada.payload["bounce_type"], ada.payload["subject"], ada.payload["campaign"]) == (
        "Permanent/General",
        "Q3 launch",
        "q3-launch",
    )
    assert ada.occurred_at == int(datetime(2026, 3, 1, 11, 59, 2, 669000, UTC).timestamp() * 1000)
    assert click.payload["link_url"] == "https://acme.example/pricing"
    assert json.loads(unsub.payload["extra_json"]) == {"properties": {"complaint_type": "abuse"}}
    assert sent.payload["email_id"] == MAIL["messageId"]


def test_ses_events_leadflow_does_not_record_are_listed(h: Harness) -> None:
    transient = {
        "eventType": "Bounce",
        "mail": MAIL,
        "bounce": {"bounceType": "Transient", "bouncedRecipients": []},
    }
    response = ses_post(h, sns(transient))
    assert response.status_code == 200
    assert response.json()["ignored"] == ["[0]: Bounce Transient is not a permanent bounce"]
    crowd = {
        "eventType": "Open",
        "mail": MAIL | {"destination": ["a@x.example", "b@x.example"]},
        "open": {"timestamp": "2026-03-01T11:59:00.000Z"},
    }
    assert "no single recipient" in ses_post(h, sns(crowd, message_id="m2")).json()["ignored"][0]
    confirm = sns(
        None,
        kind="SubscriptionConfirmation",
        message_id="m3",
        Token="2336412f37",
        SubscribeURL="https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
    )
    answer = ses_post(h, confirm)
    assert answer.status_code == 200
    assert "SubscribeURL" in answer.json()["ignored"][0]
    assert h.events() == []


def test_ses_forged_foreign_expired_stale_and_replayed_deliveries_are_refused(
    h: Harness, tmp_path: Path
) -> None:
    record = {
        "eventType": "Delivery",
        "mail": MAIL,
        "delivery": {"timestamp": "2026-03-01T11:58:30.000Z", "recipients": ["ada@acme.example"]},
    }
    forged = sns(record) | {"Message": json.dumps(record | {"eventType": "Complaint"})}
    assert ses_post(h, forged).status_code == 401
    other_key = ses_post(h, sns(record, key=OLD_KEY))
    assert other_key.status_code == 401
    assert CERT_URL in other_key.json()["message"]  # says which certificate to pin
    # SNS signs every AWS customer's topic with the same key: only ours is accepted.
    foreign = ses_post(h, sns(record, topic="arn:aws:sns:eu-west-1:999999999999:theirs"))
    assert (foreign.status_code, "not the configured one" in foreign.json()["message"]) == (
        401,
        True,
    )
    stale = ses_post(h, sns(record, at=NOW - timedelta(minutes=10)))
    assert (stale.status_code, "outside the 300 s window" in stale.json()["message"]) == (401, True)
    first, again = ses_post(h, sns(record)), ses_post(h, sns(record))
    assert (first.status_code, again.status_code) == (200, 401)
    assert len(h.events()) == 1
    # An expired pinned certificate fails closed and says so.
    expired = certificate(SNS_KEY, NOW - timedelta(days=400), NOW - timedelta(days=1))
    config = tmp_path / "webhooks.json"
    config.write_text(json.dumps({"acme": {"ses": {"certificate": expired, "topic_arn": TOPIC}}}))
    h.collector.webhooks = WebhookSecrets(config)
    late = ses_post(h, sns(record, message_id="fresh"))
    assert (late.status_code, "expired" in late.json()["message"]) == (401, True)
