"""Vendor webhooks: signed as each vendor signs, refused when forged, stale or replayed.

Payload shapes follow the vendors' public docs (SendGrid Event Webhook, Mailgun webhooks,
HubSpot webhooks API and workflow webhooks); the signatures are made here with the same
algorithms (ECDSA P-256 for SendGrid, HMAC-SHA256 for Mailgun and HubSpot v3).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec

from leadflow.processors.events import Kind
from leadflow.processors.identity import derive_lead_id
from leadflow.streams.collector.webhooks.config import WebhookSecrets
from leadflow.streams.collector.webhooks.signatures import hubspot_v3_signature, mailgun_signature
from tests.unit.collector.test_http import Harness

pytestmark = pytest.mark.unit

NOW_S = 1_772_366_400  # the harness's clock
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
).decode()
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
HUBSPOT_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    config = tmp_path / "webhooks.json"
    config.write_text(
        json.dumps(
            {
                "acme": {
                    "sendgrid": {"public_key": PUBLIC},
                    "mailgun": {"signing_key": MAILGUN_KEY},
                    "hubspot": {"client_secret": HUBSPOT_SECRET},
                }
            }
        )
    )
    harness.collector.webhooks = WebhookSecrets(config)
    return harness


def sendgrid_post(h: Harness, events: Any, stamp: int | str = NOW_S, forge: bool = False) -> Any:
    body = json.dumps(events).encode()
    signed = str(stamp).encode() + (b"x" if forge else b"") + body
    signature = base64.b64encode(SENDGRID_KEY.sign(signed, ec.ECDSA(hashes.SHA256()))).decode()
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": str(stamp),
    }
    return h.post("/webhooks/sendgrid/acme", content=body, key=None, headers=headers)


SENDGRID_EVENTS = [
    {
        "email": "ada@acme.example",
        "timestamp": NOW_S - 60,
        "event": "open",
        "sg_event_id": "sg-1",
        "sg_message_id": "msg-1.filter0001",
        "category": ["q3-launch"],
        "useragent": "Mozilla/5.0",
        "ip": "203.0.113.7",
    },
    {
        "email": "ada@acme.example",
        "timestamp": NOW_S - 30,
        "event": "click",
        "url": "https://acme.example/pricing",
        "sg_event_id": "sg-2",
        "sg_message_id": "msg-1.filter0001",
        "lead_id": "lead-42",
    },
    {"email": "ada@acme.example", "timestamp": NOW_S, "event": "processed", "sg_event_id": "sg-3"},
]


def test_sendgrid_events_become_email_events_of_the_lead(h: Harness) -> None:
    response = sendgrid_post(h, SENDGRID_EVENTS)
    assert response.status_code == 200, response.text
    opened, clicked = h.events()
    assert (opened.kind, clicked.kind) == (Kind.EMAIL_OPENED, Kind.EMAIL_CLICKED)
    assert opened.lead_id == derive_lead_id("acme", "ada@acme.example")
    assert clicked.lead_id == "lead-42"  # the sender's custom arg names the lead
    assert opened.payload["campaign"] == "q3-launch"
    assert opened.payload["email_id"] == "msg-1"
    assert clicked.payload["link_url"] == "https://acme.example/pricing"
    assert opened.occurred_at == (NOW_S - 60) * 1000
    assert (opened.context.channel, opened.workspace_id) == ("email", "acme")
    assert response.json()["ignored"] == ["[2]: processed is not recorded"]


def test_sendgrid_forged_stale_and_replayed_requests_are_refused(h: Harness) -> None:
    assert sendgrid_post(h, SENDGRID_EVENTS, forge=True).status_code == 401
    stale = sendgrid_post(h, SENDGRID_EVENTS, stamp=NOW_S - 301)
    assert stale.status_code == 401
    assert "outside the 300 s window" in stale.json()["message"]
    body = json.dumps(SENDGRID_EVENTS[:1]).encode()
    signature = base64.b64encode(
        SENDGRID_KEY.sign(str(NOW_S).encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": str(NOW_S),
    }
    first = h.post("/webhooks/sendgrid/acme", content=body, key=None, headers=headers)
    again = h.post("/webhooks/sendgrid/acme", content=body, key=None, headers=headers)
    assert (first.status_code, again.status_code) == (200, 401)
    assert "replay" in again.json()["message"]
    assert len(h.events()) == 1
    unsigned = h.post("/webhooks/sendgrid/acme", content=body, key=None)
    assert unsigned.status_code == 401
    assert unsigned.json()["code"] == "unauthorized"


@pytest.mark.parametrize("stamp", ["inf", "nan", "soon", ""])
def test_a_signing_time_that_is_not_a_number_is_refused_as_such(h: Harness, stamp: str) -> None:
    # "inf" was an OverflowError: a 500 and a traceback for any caller, signed or not.
    for forge in (False, True):
        response = sendgrid_post(h, SENDGRID_EVENTS, stamp=stamp, forge=forge)
        assert response.status_code == 401, response.text
        if not forge:
            assert response.json()["message"].endswith("no readable signing time")
    assert h.events() == []


def test_a_workspace_without_the_vendor_configured_is_refused(h: Harness) -> None:
    assert sendgrid_post(h, SENDGRID_EVENTS).status_code == 200
    response = h.post("/webhooks/mailgun/other", {"event-data": {}}, key=None)
    assert response.status_code == 401


def mailgun_body(
    event: dict[str, Any], stamp: int = NOW_S, token: str = "t" * 50
) -> dict[str, Any]:
    signature = mailgun_signature(MAILGUN_KEY, str(stamp), token)
    return {
        "signature": {"timestamp": str(stamp), "token": token, "signature": signature},
        "event-data": event,
    }


MAILGUN_FAILED = {
    "event": "failed",
    "severity": "permanent",
    "reason": "bounce",
    "timestamp": NOW_S - 5.25,
    "id": "mg-1",
    "recipient": "grace@navy.example",
    "message": {
        "headers": {"message-id": "20130503182626.18666.16540@acme.example", "subject": "Hi"}
    },
    "user-variables": {"campaign": "nurture-3"},
}


def test_mailgun_permanent_failure_is_a_bounce(h: Harness) -> None:
    response = h.post("/webhooks/mailgun/acme", mailgun_body(MAILGUN_FAILED), key=None)
    assert response.status_code == 200, response.text
    [bounced] = h.events()
    assert bounced.kind is Kind.EMAIL_BOUNCED
    assert bounced.lead_id == derive_lead_id("acme", "grace@navy.example")
    assert (bounced.payload["bounce_type"], bounced.payload["campaign"]) == ("bounce", "nurture-3")
    assert bounced.payload["subject"] == "Hi"


def test_mailgun_temporary_failure_is_skipped_and_said(h: Harness) -> None:
    temporary = {**MAILGUN_FAILED, "severity": "temporary"}
    response = h.post("/webhooks/mailgun/acme", mailgun_body(temporary), key=None)
    assert response.status_code == 200
    assert response.json()["event_ids"] == []
    assert "failed (temporary) is not recorded" in response.json()["ignored"][0]


def test_mailgun_bad_signature_and_token_replay(h: Harness) -> None:
    body = mailgun_body(MAILGUN_FAILED)
    body["signature"]["signature"] = "0" * 64
    assert h.post("/webhooks/mailgun/acme", body, key=None).status_code == 401
    good = mailgun_body(MAILGUN_FAILED, token="u" * 50)
    assert h.post("/webhooks/mailgun/acme", good, key=None).status_code == 200
    assert h.post("/webhooks/mailgun/acme", good, key=None).status_code == 401
    stale = mailgun_body(MAILGUN_FAILED, stamp=NOW_S - 3600, token="v" * 50)
    assert h.post("/webhooks/mailgun/acme", stale, key=None).status_code == 401


def hubspot_post(h: Harness, payload: Any, stamp_ms: int = NOW_S * 1000) -> Any:
    body = json.dumps(payload).encode()
    uri = "http://t/webhooks/hubspot/acme"
    signature = hubspot_v3_signature(HUBSPOT_SECRET, "POST", uri, body, str(stamp_ms))
    headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": str(stamp_ms)}
    return h.post("/webhooks/hubspot/acme", content=body, key=None, headers=headers)


def test_hubspot_lifecycle_change_to_sql_is_a_sales_acceptance(h: Harness) -> None:
    events = [
        {
            "eventId": 100,
            "subscriptionId": 25,
            "portalId": 33,
            "appId": 1160452,
            "occurredAt": NOW_S * 1000 - 1000,
            "subscriptionType": "contact.propertyChange",
            "attemptNumber": 0,
            "objectId": 123,
            "propertyName": "lifecyclestage",
            "propertyValue": "salesqualifiedlead",
            "changeSource": "CRM_UI",
        },
        {
            "eventId": 101,
            "portalId": 33,
            "occurredAt": NOW_S * 1000,
            "subscriptionType": "contact.propertyChange",
            "objectId": 123,
            "propertyName": "lifecyclestage",
            "propertyValue": "lead",
        },
        {
            "eventId": 102,
            "portalId": 33,
            "occurredAt": NOW_S * 1000,
            "subscriptionType": "deal.propertyChange",
            "objectId": 9,
            "propertyName": "dealstage",
            "propertyValue": "closedwon",
        },
    ]
    response = hubspot_post(h, events)
    assert response.status_code == 200, response.text
    [stage] = h.events()
    assert (stage.kind, stage.payload["action"], stage.lead_id) == (
        Kind.STAGE_CHANGED,
        "accept_mql",
        "hubspot-33-123",
    )
    assert len(response.json()["ignored"]) == 2


def test_hubspot_workflow_webhook_closes_a_deal_for_the_contact(h: Harness) -> None:
    record = {
        "objectId": 9001,
        "properties": {
            "email": {"value": "ada@acme.example"},
            "dealstage": {"value": "closedwon"},
            "amount": {"value": "48000"},
            "deal_currency_code": {"value": "EUR"},
        },
    }
    response = hubspot_post(h, record)
    assert response.status_code == 200, response.text
    [won] = h.events()
    assert (won.kind, won.payload["amount"], won.payload["currency"]) == (
        Kind.DEAL_WON,
        48000.0,
        "EUR",
    )
    assert won.lead_id == derive_lead_id("acme", "ada@acme.example")


def test_hubspot_signature_over_another_url_or_too_old_fails(h: Harness) -> None:
    assert hubspot_post(h, [], stamp_ms=NOW_S * 1000 - 301_000).status_code == 401
    body = b"[]"
    wrong = hubspot_v3_signature(HUBSPOT_SECRET, "POST", "https://elsewhere/x", body, "1")
    headers = {"X-HubSpot-Signature-v3": wrong, "X-HubSpot-Request-Timestamp": str(NOW_S * 1000)}
    assert (
        h.post("/webhooks/hubspot/acme", content=body, key=None, headers=headers).status_code == 401
    )


def test_a_webhooks_file_naming_an_invalid_workspace_id_is_a_loud_error(tmp_path: Path) -> None:
    from leadflow.streams.collector.webhooks.config import WebhookConfigError

    path = tmp_path / "webhooks.json"
    path.write_text(json.dumps({"acme\n": {"mailgun": {"signing_key": "k"}}}))
    with pytest.raises(WebhookConfigError, match="must match"):
        WebhookSecrets(path).lookup("acme", "mailgun")
