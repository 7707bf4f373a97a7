"""Post through real HTTP, consume from the real broker, decode field for field."""

from __future__ import annotations

import json
import uuid

import httpx

from leadflow.processors.events import Context, Event, Kind, scoped_key
from leadflow.schemas.codec import codec_from_settings
from tests.integration.collector.conftest import (
    RECEIVED_AT,
    Running,
    consume_since,
    end_offsets,
)

# 2026-03-01T11:00:00Z
ONE_HOUR_BEFORE = "2026-03-01T11:00:00.000Z"


def post(running: Running, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{running.url}{path}", json=body, auth=(running.write_key, ""), timeout=30)


def decode_all(running: Running, records: list[tuple[bytes, bytes]]) -> list[tuple[str, Event]]:
    codec = codec_from_settings(running.settings)
    out = []
    for key, value in records:
        event = codec.decode(value)
        assert isinstance(event, Event)
        out.append((key.decode(), event))
    return out


def test_form_submitted_arrives_field_for_field(running: Running) -> None:
    before = end_offsets(running.settings)
    message_id = str(uuid.uuid4())
    body = {
        "event": "Form Submitted",
        "messageId": message_id,
        "anonymousId": "anon-42",
        "userId": "lead-42",
        # The client clock is 10 minutes behind: sentAt says 11:50 when it is 12:00.
        "timestamp": ONE_HOUR_BEFORE,
        "sentAt": "2026-03-01T11:50:00.000Z",
        "properties": {
            "form_id": "demo-form",
            "asset": "Pricing PDF",
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone": "+44 20 7946 0000",
            "company": "Analytical Engines",
            "title": "CTO",
            "company_size": 250,
            "industry": "Software",
            "country": "GB",
            "answers": {"budget": "50k", "timeline": 3},
            "experiment": "hero-test",
            "variant": "b",
        },
        "context": {
            "page": {
                "url": "https://acme.example/demo?gclid=abc",
                "path": "/demo",
                "referrer": "https://www.google.com/",
                "title": "Book a demo",
            },
            "campaign": {
                "source": "google",
                "medium": "cpc",
                "name": "brand",
                "term": "crm",
                "content": "ad-1",
            },
            "userAgent": "Mozilla/5.0",
            "ip": "203.0.113.7",
            # Without stated consent the collector drops IP and user agent (docs/privacy.md).
            "consent": {"tracking": True},
            "library": {"name": "analytics.js", "version": "2.0"},
        },
        "integrations": {"All": True},
    }
    response = post(running, "/v1/track", body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "event_ids": [message_id],
        "ignored": [],
        "kept": [],
        "warnings": [],
        "refused": [],
    }

    [(key, event)] = decode_all(running, consume_since(running.settings, before, 1))
    assert key == scoped_key("ws-acme", "anon-42")
    assert event == Event(
        event_id=message_id,
        kind=Kind.FORM_SUBMITTED,
        workspace_id="ws-acme",
        occurred_at=RECEIVED_AT - 3_600_000 + 600_000,  # timestamp + (receivedAt - sentAt)
        received_at=RECEIVED_AT,
        anonymous_id="anon-42",
        lead_id="lead-42",
        context=Context(
            url="https://acme.example/demo?gclid=abc",
            path="/demo",
            referrer="https://www.google.com/",
            title="Book a demo",
            utm_source="google",
            utm_medium="cpc",
            utm_campaign="brand",
            utm_term="crm",
            utm_content="ad-1",
            channel="paid_search",
            experiment="hero-test",
            variant="b",
            user_agent="Mozilla/5.0",
            ip="203.0.113.7",
        ),
        payload={
            "form_id": "demo-form",
            "asset": "Pricing PDF",
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone": "+44 20 7946 0000",
            "company": "Analytical Engines",
            "title": "CTO",
            "company_size": 250,
            "industry": "Software",
            "country": "GB",
            "answers": {"budget": "50k", "timeline": "3"},
            "extra_json": None,
            "email_lead_id": None,  # set only when the collector seals (v3)
        },
    )


def test_batch_of_every_call_type_is_accepted_whole(running: Running) -> None:
    before = end_offsets(running.settings)
    batch = {
        "sentAt": "2026-03-01T12:00:00Z",
        "context": {
            "page": {"url": "https://acme.example/?utm_source=newsletter&utm_medium=email"}
        },
        "batch": [
            {
                "type": "page",
                "anonymousId": "a1",
                "name": "Pricing",
                "category": "Product",
                "timestamp": "2026-03-01T11:59:00Z",
                "properties": {"path": "/pricing", "search": "?plan=pro", "url": "ignored-by-ctx"},
            },
            {
                "type": "identify",
                "anonymousId": "a1",
                "userId": "u1",
                "traits": {
                    "email": "u1@example.com",
                    "firstName": "Una",
                    "company_size": 12,
                    "favourite_colour": "green",
                },
            },
            {"type": "alias", "previousId": "a1", "userId": "u1"},
            {
                "type": "track",
                "userId": "u1",
                "event": "Deal Won",
                "properties": {"deal_id": "d-9", "amount": 12000.5, "channel": "Partner"},
            },
            {
                "type": "track",
                "anonymousId": "a1",
                "event": "Pricing Calculator Used",
                "properties": {"seats": 40, "plan": "pro", "nested": {"x": [1, 2]}},
            },
            {
                "type": "track",
                "event": "Campaign Cost",
                "properties": {
                    "date": "2026-02-28",
                    "channel": "paid_search",
                    "campaign": "brand",
                    "amount": 420,
                },
            },
        ],
    }
    response = post(running, "/v1/batch", batch)
    assert response.status_code == 200, response.text
    answer = response.json()
    # Kept with the event (plaintext here: this collector runs without PII encryption).
    assert (answer["kept"], answer["ignored"]) == (["batch[1].traits.favourite_colour"], [])
    ids = answer["event_ids"]
    assert len(ids) == 6
    assert all(uuid.UUID(i) for i in ids)  # generated: no messageId was sent

    events = dict(
        (e.event_id, (k, e))
        for k, e in decode_all(running, consume_since(running.settings, before, 6))
    )
    assert set(events) == set(ids)
    page_key, page = events[ids[0]]
    assert (page_key, page.kind, page.occurred_at) == (
        scoped_key("ws-acme", "a1"),
        Kind.VISIT,
        RECEIVED_AT - 60_000,
    )
    assert dict(page.payload) == {
        "name": "Pricing",
        "category": "Product",
        "search": "?plan=pro",
        "extra_json": None,
    }
    assert page.context.url == "https://acme.example/?utm_source=newsletter&utm_medium=email"
    # Field by field: context.page wins, the page call's own properties fill the gaps.
    assert page.context.path == "/pricing"
    assert (page.context.utm_source, page.context.utm_medium, page.context.channel) == (
        "newsletter",
        "email",
        "email",
    )

    _, identify = events[ids[1]]
    assert identify.kind is Kind.IDENTIFY
    assert identify.payload["first_name"] == "Una"
    assert identify.payload["company_size"] == 12
    assert identify.occurred_at == RECEIVED_AT
    assert identify.payload["extra_json"] is not None
    assert json.loads(identify.payload["extra_json"])["traits"] == {"favourite_colour": "green"}

    alias_key, alias = events[ids[2]]
    assert (alias_key, alias.kind, alias.lead_id, dict(alias.payload)) == (
        scoped_key("ws-acme", "u1"),
        Kind.ALIAS,
        "u1",
        {"previous_id": "a1"},
    )

    won_key, won = events[ids[3]]
    assert (won_key, won.kind, won.context.channel) == (
        scoped_key("ws-acme", "u1"),
        Kind.DEAL_WON,
        "partner",
    )
    assert dict(won.payload) == {
        "deal_id": "d-9",
        "amount": 12000.5,
        "currency": "USD",
        "extra_json": None,
    }

    _, custom = events[ids[4]]
    assert custom.kind is Kind.CUSTOM
    assert custom.payload["name"] == "Pricing Calculator Used"
    assert custom.payload["properties_json"] == ('{"nested":{"x":[1,2]},"plan":"pro","seats":40}')

    cost_key, cost = events[ids[5]]
    assert cost_key == scoped_key("ws-acme", "cost:paid_search:brand")
    assert dict(cost.payload) == {
        "date": "2026-02-28",
        "channel": "paid_search",
        "campaign": "brand",
        "amount": 420.0,
        "currency": "USD",
    }


def test_single_endpoints_and_write_key_in_body(running: Running) -> None:
    before = end_offsets(running.settings)
    ok = [
        post(
            running,
            "/v1/page",
            {
                "anonymousId": "b1",
                "name": "Home",
                "context": {"page": {"referrer": "https://t.co/x"}},
            },
        ),
        post(running, "/v1/identify", {"userId": "u2", "traits": {"email": "u2@example.com"}}),
        post(running, "/v1/alias", {"previousId": "b1", "userId": "u2"}),
        # sendBeacon cannot set headers: analytics.js puts the key in the body.
        httpx.post(
            f"{running.url}/v1/track",
            timeout=30,
            content=json.dumps(
                {
                    "writeKey": running.write_key,
                    "event": "Email Opened",
                    "userId": "u2",
                    "properties": {"email_id": "e-1", "campaign": "march"},
                }
            ),
            headers={"Content-Type": "text/plain"},
        ),
    ]
    assert [r.status_code for r in ok] == [200, 200, 200, 200], [r.text for r in ok]
    decoded = decode_all(running, consume_since(running.settings, before, 4))
    by_kind = {e.kind: e for _, e in decoded}
    assert by_kind[Kind.VISIT].context.channel == "organic_social"
    assert by_kind[Kind.EMAIL_OPENED].context.channel == "email"
    assert by_kind[Kind.EMAIL_OPENED].payload["email_id"] == "e-1"
    assert by_kind[Kind.IDENTIFY].payload["email"] == "u2@example.com"


def test_ops_endpoints(running: Running) -> None:
    assert httpx.get(f"{running.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{running.url}/ready", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    post(running, "/v1/track", {"event": "Demo Requested", "userId": "u-m"})
    metrics = httpx.get(f"{running.url}/metrics").text
    accepted = [
        line
        for line in metrics.splitlines()
        if line.startswith("leadflow_collector_events_accepted_total ")
    ]
    assert accepted
    assert float(accepted[0].split()[1]) >= 1
    assert "leadflow_collector_produce_seconds_bucket" in metrics
    doc = httpx.get(f"{running.url}/openapi.json").json()
    body = doc["paths"]["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/BatchRequest"}
    assert "TrackMessage" in doc["components"]["schemas"]
    assert "413" in doc["paths"]["/v1/track"]["post"]["responses"]


def test_cors_preflight_allows_configured_origin_only(running: Running) -> None:
    allowed = running.settings.collector_cors_origins[0]
    headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    yes = httpx.options(f"{running.url}/v1/track", headers={**headers, "Origin": allowed})
    assert yes.status_code == 200
    assert yes.headers["access-control-allow-origin"] == allowed
    no = httpx.options(
        f"{running.url}/v1/track", headers={**headers, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in no.headers
