"""The wire shapes real trackers send (recorded from the SDKs, see docs/collector.md).

Each case is what an SDK put on the wire when pointed at a capture server: analytics.js's
short paths and text/plain bodies, RudderStack's context.traits and beacon query key,
Segment's reserved traits, pixels, and the error bodies the SDKs parse.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from leadflow.processors.events import Kind
from tests.unit.collector.test_http import Harness

pytestmark = pytest.mark.unit

NOW = "2026-03-01T12:00:00Z"


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/v1/t", {"event": "Pricing Viewed"}, Kind.CUSTOM),
        ("/v1/p", {"name": "Pricing"}, Kind.VISIT),
        ("/v1/i", {"traits": {"email": "ada@acme.example"}}, Kind.IDENTIFY),
        ("/v1/a", {"previousId": "anon-1", "userId": "lead-1"}, Kind.ALIAS),
        ("/v1/g", {"groupId": "acme", "traits": {"employees": 120}}, Kind.GROUP),
        ("/v1/s", {"name": "Home"}, Kind.VISIT),
        ("/v1/group", {"groupId": "acme"}, Kind.GROUP),
        ("/v1/screen", {"name": "Home"}, Kind.VISIT),
    ],
)
def test_analytics_js_short_paths(h: Harness, path: str, body: dict[str, Any], kind: Kind) -> None:
    # analytics.js posts text/plain (no CORS preflight for the type) with the key twice.
    message = {"anonymousId": "anon-1", "writeKey": h.key, **body}
    response = h.post(path, message, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text
    assert [e.kind for e in h.events()] == [kind]


def test_batching_paths_and_beacon_key_in_the_query(h: Harness) -> None:
    batch = {"batch": [{"type": "page", "anonymousId": "a"}], "writeKey": h.key}
    assert h.post("/v1/b", batch, key=None).status_code == 200
    beacon = {"batch": [{"type": "track", "event": "x", "anonymousId": "a"}]}
    assert h.post(f"/beacon/v1/batch?writeKey={h.key}", beacon, key=None).status_code == 200
    assert h.post("/beacon/v1/batch?writeKey=nope", beacon, key=None).status_code == 401
    assert len(h.events()) == 2


@pytest.mark.parametrize(
    "asked",
    [
        "authorization,x-retry-count",  # analytics.js (a retry)
        "anonymousid,authorization,content-type,sentat",  # RudderStack JS v3, every call
        # ... and its retries (measured in chromium)
        "anonymousid,authorization,content-type,rsa-recovered,rsa-retry-attempt,"
        "rsa-retry-reason,rsa-since-first-attempt,rsa-since-last-attempt,sentat",
    ],
)
def test_cors_preflight_allows_the_headers_sdks_send(tmp_path: Path, asked: str) -> None:
    h = Harness(tmp_path, collector_cors_origins=("http://site.example",))
    import asyncio

    import httpx

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=h.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.options(
                "/v1/t",
                headers={
                    "Origin": "http://site.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": asked,
                },
            )

    response = asyncio.run(go())
    assert response.status_code == 200, response.text
    allowed = response.headers["access-control-allow-headers"].lower()
    assert set(asked.split(",")) <= set(allowed.split(", "))


def test_every_error_body_carries_code_and_message(h: Harness) -> None:
    # rudder-sdk-python reads body["code"] of every non-200 answer (KeyError otherwise, and
    # a final 4xx is retried as a network failure).
    answers = [
        h.post("/v1/nope", {}),
        h.post("/v1/track", {}, key="wrong"),
        h.post("/v1/track", content=b"x" * 40_000),
        h.post("/v1/track", content=b"{"),
        h.get("/v1/track"),
    ]
    assert [a.status_code for a in answers] == [404, 401, 413, 400, 405]
    for answer in answers:
        body = answer.json()
        assert body["code"] == body["error"], body
        assert body["message"], body


def test_rudderstack_identify_reads_context_traits(h: Harness) -> None:
    # rudder-sdk-python puts identify traits only in context.traits.
    message = {
        "userId": "u1",
        "context": {"traits": {"email": "ada@acme.example", "title": "CTO"}},
        "channel": "server",
        "integrations": {"All": True},
    }
    response = h.post("/v1/identify", message)
    assert response.status_code == 200
    payload = h.events()[0].payload
    assert (payload["email"], payload["title"]) == ("ada@acme.example", "CTO")
    assert response.json()["ignored"] == []


def test_top_level_traits_win_over_context_traits(h: Harness) -> None:
    message = {
        "userId": "u1",
        "traits": {"title": "CEO"},
        "context": {"traits": {"title": "CTO", "industry": "Software"}},
    }
    response = h.post("/v1/identify", message)
    payload = h.events()[0].payload
    assert (payload["title"], payload["industry"]) == ("CEO", "Software")
    assert response.json()["warnings"] == [
        {
            "path": "context.traits.title",
            "message": "differs from traits.title, which is stored; not stored",
        }
    ]


def test_segment_reserved_traits(h: Harness) -> None:
    traits = {
        "name": "Grace Hopper",
        "company": {"name": "Navy", "employee_count": "51-200", "industry": "Defense", "plan": "x"},
        "address": {"country": "US", "city": "Arlington"},
        "phone": "555",
        "website": "navy.example",
    }
    response = h.post("/v1/identify", {"userId": "u1", "traits": traits})
    assert response.status_code == 200
    payload = h.events()[0].payload
    assert {k: payload[k] for k in ("first_name", "last_name", "company", "company_size")} == {
        "first_name": "Grace",
        "last_name": "Hopper",
        "company": "Navy",
        "company_size": 51,
    }
    assert (payload["industry"], payload["country"]) == ("Defense", "US")
    body = response.json()
    # Members without a contact field are kept with the event (sealed when PII encryption
    # is on), not dropped.
    assert body["ignored"] == []
    assert sorted(body["kept"]) == [
        "traits.address.city",
        "traits.company.plan",
        "traits.website",
    ]
    assert json.loads(payload["extra_json"]) == {
        "traits": {
            "address": {"city": "Arlington"},
            "company": {"plan": "x"},
            "website": "navy.example",
        }
    }
    assert body["warnings"] == [
        {
            "path": "traits.company_size",
            "message": "the range 51-200 is stored as its lower bound 51",
        }
    ]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("250", 250), ("1,200", 1200), ("1000+", 1000), ("51 - 200", 51), (120, 120), ("12.0", 12)],
)
def test_company_sizes_as_forms_send_them(h: Harness, sent: Any, stored: int) -> None:
    form = {
        "event": "Form Submitted",
        "anonymousId": "a",
        "properties": {"email": "a@b.example", "company_size": sent, "title": "VP"},
    }
    assert h.post("/v1/track", form).status_code == 200
    assert h.events()[0].payload["company_size"] == stored


def test_employees_trait_is_the_company_size(h: Harness) -> None:
    h.post("/v1/identify", {"userId": "u", "traits": {"employees": "300"}})
    assert h.events()[0].payload["company_size"] == 300


def test_a_form_fills_gaps_from_context_traits(h: Harness) -> None:
    form = {
        "event": "Form Submitted",
        "anonymousId": "a",
        "properties": {"form_id": "demo", "email": "ada@acme.example"},
        "context": {"traits": {"title": "CTO", "email": "old@acme.example"}},
    }
    h.post("/v1/track", form)
    payload = h.events()[0].payload
    assert (payload["email"], payload["title"]) == ("ada@acme.example", "CTO")


@pytest.mark.parametrize(
    ("stage", "action"),
    [
        ("sql", "accept_mql"),
        ("SQL", "accept_mql"),
        ("Sales Qualified Lead", "accept_mql"),
        ("salesqualifiedlead", "accept_mql"),
        ("opportunity", "open_opportunity"),
        ("disqualified", "disqualify"),
        ("recycled", "recycle"),
    ],
)
def test_a_stage_change_may_name_the_stage(h: Harness, stage: str, action: str) -> None:
    message = {"event": "Stage Changed", "userId": "u", "properties": {"stage": stage}}
    assert h.post("/v1/track", message).status_code == 200
    assert h.events()[0].payload["action"] == action


def test_an_unknown_stage_is_refused_naming_the_choices(h: Harness) -> None:
    message = {"event": "Stage Changed", "userId": "u", "properties": {"stage": "golden"}}
    response = h.post("/v1/track", message)
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "properties.action"
    assert "accept_mql" in response.json()["errors"][0]["message"]


def test_a_won_deal_may_carry_revenue(h: Harness) -> None:
    message = {"event": "Deal Won", "userId": "u", "properties": {"revenue": "12000.50"}}
    response = h.post("/v1/track", message)
    assert response.status_code == 200
    assert h.events()[0].payload["amount"] == 12000.5
    assert response.json()["warnings"][0]["path"] == "properties.revenue"


def test_a_future_timestamp_is_clamped_and_flagged(h: Harness) -> None:
    batch = {
        "batch": [
            {"type": "page", "anonymousId": "a", "timestamp": "2026-03-01T13:00:00Z"},
            {"type": "page", "anonymousId": "a", "timestamp": NOW},
        ]
    }
    response = h.post("/v1/batch", batch)
    assert response.status_code == 200
    assert [e.occurred_at for e in h.events()] == [1_772_366_400_000] * 2
    [warning] = response.json()["warnings"]
    assert warning["path"] == "batch[0].timestamp"
    assert "3600 s in the future" in warning["message"]


def test_context_members_without_a_place_are_listed(h: Harness) -> None:
    context = {
        "page": {"url": "https://acme.example/?utm_source=x"},
        "device": {"type": "mobile"},
        "library": {"name": "analytics.js"},
        "referrer": {"type": "dataxu", "url": "https://ads.example/"},
        "traits": {"email": "a@b.example"},
    }
    response = h.post(
        "/v1/track", {"event": "Pricing Viewed", "anonymousId": "a", "context": context}
    )
    assert response.json()["ignored"] == [
        "context.device",
        "context.referrer.type",
        "context.traits",
    ]
    assert h.events()[0].context.referrer == "https://ads.example/"


def test_members_of_stored_context_objects_without_a_field_are_listed(h: Harness) -> None:
    # RudderStack's JS SDK sends these with every call; Segment's consent object too.
    context = {
        "page": {"url": "https://acme.example/", "initial_referrer": "$direct", "tab_url": "x"},
        "campaign": {"source": "google", "id": "123"},
        "consent": {"tracking": True, "categoryPreferences": {"ads": False}},
    }
    response = h.post("/v1/page", {"anonymousId": "a", "context": context})
    assert response.status_code == 200
    assert sorted(response.json()["ignored"]) == [
        "context.campaign.id",
        "context.consent.categoryPreferences",
        "context.page.initial_referrer",
        "context.page.tab_url",
    ]
    assert h.events()[0].context.utm_source == "google"


def test_rudderstack_js_v3_anonymous_page(h: Harness) -> None:
    # What @rudderstack/analytics-js 3.34 sent from chromium for an anonymous page view:
    # "userId": "" (no id, not a bad one) and "$direct" for "no referrer".
    page = {
        "path": "/pricing",
        "referrer": "$direct",
        "referring_domain": "",
        "search": "",
        "title": "Acme",
        "url": "https://acme.example/pricing",
        "tab_url": "https://acme.example/pricing",
        "initial_referrer": "$direct",
        "initial_referring_domain": "",
    }
    message = {
        "type": "page",
        "channel": "web",
        "userId": "",
        "anonymousId": "anon-1",
        "name": "Pricing",
        "properties": {"name": "Pricing", **page},
        "context": {"traits": {}, "campaign": {}, "page": page, "sessionId": 1},
        "originalTimestamp": NOW,
        "sentAt": NOW,
        "integrations": {"All": True},
    }
    response = h.post("/v1/page", message)
    assert response.status_code == 200, response.text
    assert response.json()["refused"] == []
    event = h.events()[0]
    assert (event.lead_id, event.anonymous_id) == (None, "anon-1")
    assert (event.context.referrer, event.context.channel) == (None, "direct")
    assert event.context.path == "/pricing"


def test_rudderstacks_server_channel_is_not_a_marketing_channel(h: Harness) -> None:
    h.post("/v1/page", {"anonymousId": "a", "channel": "server"})
    assert h.events()[0].context.channel == "direct"


def test_segment_pixel_with_base64_data(h: Harness) -> None:
    message = {
        "writeKey": h.key,
        "userId": "lead-1",
        "event": "Email Opened",
        "properties": {"subject": "Hi", "email_id": "e-1"},
    }
    data = base64.b64encode(json.dumps(message).encode()).decode().rstrip("=")
    response = h.get(f"/v1/pixel/track?data={data}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content[:6] == b"GIF89a"
    [event] = h.events()
    assert (event.kind, event.payload["subject"], event.context.channel) == (
        Kind.EMAIL_OPENED,
        "Hi",
        "email",
    )


def test_rudderstack_pixel_with_dotted_query(h: Harness) -> None:
    response = h.get(
        f"/pixel/v1/track?writeKey={h.key}&anonymousId=a&event=Email%20Opened"
        "&properties.subject=Hello"
    )
    assert response.status_code == 200
    assert h.events()[0].payload["subject"] == "Hello"


def test_a_bad_pixel_still_answers_the_gif_and_is_dead_lettered(h: Harness) -> None:
    assert h.get("/v1/pixel/track?data=!!!").content[:6] == b"GIF89a"
    assert h.get("/v1/pixel/track?writeKey=nope&event=x&userId=u").status_code == 200
    response = h.get(f"/v1/pixel/track?writeKey={h.key}&event=Deal%20Won&userId=u")
    assert response.status_code == 200
    assert h.events() == []
    assert len(h.sink.dead) == 1
    assert dict(h.sink.dead[0].headers)["source.topic"] == b"/v1/pixel/track"


def test_an_oversized_event_is_refused_alone(h: Harness) -> None:
    big = {"type": "track", "event": "x", "anonymousId": "a", "properties": {"p": "x" * 40_000}}
    small = {"type": "page", "anonymousId": "a"}
    response = h.post("/v1/batch", {"batch": [big, small]})
    assert response.status_code == 200
    assert [r["reason"] for r in response.json()["refused"]] == ["too_large"]
    assert len(h.events()) == 1


@pytest.mark.parametrize(
    ("path", "messages", "size"),
    [
        # Each SDK's own batch cap (docs/collector.md, Trackers), filled with events just
        # under the 32 KB per-event limit where the cap allows: stored whole.
        # segment-analytics-python and rudder-sdk-python: tests/integration/sdk.
        ("/v1/b", 10, 450_000),  # analytics.js batching (10 events, < 450 KB)
        ("/v1/batch", 15, 480 * 1024),  # @segment/analytics-node (flushAt 15, 480 KB)
        ("/v1/batch", 20, 450 * 1024),  # @rudderstack/rudder-sdk-node (flushAt 20, 450 KB)
        ("/v1/batch", 100, 512 * 1024),  # RudderStack JS v3 with batching (100 events, 512 KB)
        ("/v1/batch", 130, 4_000 * 1024),  # RudderStack's gateway limit (rudder-sdk-python)
    ],
)
def test_a_full_batch_at_each_sdks_cap_is_stored_whole(
    h: Harness, path: str, messages: int, size: int
) -> None:
    event = {"type": "track", "event": "Pricing Viewed", "anonymousId": "a"}
    pad = min(size // messages, 32 * 1024) - 150
    batch = [{**event, "properties": {"note": "x" * pad}} for _ in range(messages)]
    body = json.dumps({"batch": batch}).encode()
    assert max(len(json.dumps(m)) for m in batch) < 32 * 1024
    assert 0.95 * min(size, messages * 32 * 1024) < len(body) <= size
    response = h.post(path, content=body)
    assert response.status_code == 200, response.text
    assert response.json()["refused"] == []
    assert len(h.events()) == messages


def test_dead_letters_do_not_keep_personal_data(h: Harness) -> None:
    bad = {
        "type": "identify",
        "userId": "u",
        "traits": {"email": "ada@acme.example", "company_size": "lots"},
    }
    h.post("/v1/batch", {"batch": [bad]})
    value = json.loads(h.sink.dead[0].value)
    assert value["traits"] == {"email": "<redacted>", "company_size": "lots"}


def test_a_trait_sent_twice_with_different_values_keeps_one_and_says_so(h: Harness) -> None:
    # The losing value used to vanish without a word.
    traits = {
        "firstName": "Ada",
        "first_name": "Adah",
        "company": {"name": "Acme", "industry": "Tech"},
        "industry": "Software",
        "lastName": "King",
        "last_name": "King",  # the same value twice is no conflict
    }
    response = h.post("/v1/identify", {"userId": "u1", "traits": traits})
    assert response.status_code == 200
    payload = h.events()[0].payload
    assert (payload["first_name"], payload["industry"]) == ("Adah", "Software")
    assert [(w["path"], w["message"]) for w in response.json()["warnings"]] == [
        ("traits.firstName", "differs from first_name, which is stored; not stored"),
        ("traits.company.industry", "differs from industry, which is stored; not stored"),
    ]
