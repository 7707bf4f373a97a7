"""RudderStack's JS SDK v3 (@rudderstack/analytics-js, unmodified) in Debian's headless Chromium.

Its bundled UMD build from npm, with the source configuration given inline (the SDK would
fetch it from RudderStack's control plane) and the collector as the data plane. Two delivery
modes: the default XHR queue (one POST per call to /v1/page, /v1/identify..., Basic auth and
an ``AnonymousId`` header, so a CORS preflight) and the beacon plugin (``navigator.sendBeacon``
to /beacon/v1/batch?writeKey=, no headers). A B2B journey: two pages, an identify with a
company object and a trait the contract has no field for, a form, an alias and a group.
Every message must be in Kafka with the right kind, traits and time; the page must not
talk to anyone but the collector.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadflow.processors.events import Event, Kind
from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.settings import Settings
from leadflow.streams.topics import create_topics
from tests.conftest import free_port
from tests.integration.collector.conftest import consume_since, end_offsets, make_collector, serve
from tests.integration.sdk.browser import CHROMIUM, CHROMIUM_ARGS, serve_site
from tests.integration.sdk.conftest import NODE_MODULES

BUNDLE = NODE_MODULES / "@rudderstack" / "analytics-js" / "dist" / "npm" / "modern" / "bundled"
UMD = BUNDLE / "umd"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium (.ci/run)"),
    pytest.mark.skipif(not UMD.exists(), reason="tests/sdk/node_modules: run `make sdk-deps`"),
]


@pytest.fixture(scope="module")
def stack(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    create_topics(kafka)
    site_port = free_port()
    settings = kafka.model_copy(
        update={
            "collector_cors_origins": (f"http://127.0.0.1:{site_port}",),
            "pii_encryption": False,  # the test reads traits back from Kafka
        }
    )
    collector, key = make_collector(settings, tmp_path_factory.mktemp("rsjs") / "keys.json")
    with serve(collector) as collector_url, serve_site(site_port, {"/rsjs/": UMD}) as site:
        yield {"site": site, "dataplane": collector_url, "key": key, "settings": collector.settings}


def browse(stack: dict[str, Any], run: str, beacon: bool) -> tuple[list[str], list[str]]:
    """Run the journey page; return the page's errors and every URL it requested."""
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        # The SDK reports every failed delivery (a refused CORS preflight, a 4xx) as a console
        # error: there must be none.
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.goto(
            f"{stack['site']}/rudder.html?run={run}&key={stack['key']}"
            f"&dataplane={stack['dataplane']}&beacon={int(beacon)}"
            "&utm_source=linkedin&utm_medium=paid_social&utm_campaign=q3-launch"
        )
        page.wait_for_function("window.rsDone === true", timeout=60_000)
        errors: list[str] = page.evaluate("window.rsErrors")
        # The XHR queue sends at once; the beacon queue on its 500 ms timer or on page hide.
        page.wait_for_timeout(2000)
        page.close(run_before_unload=True)
        browser.close()
    return errors + console, requests


def journey(stack: dict[str, Any], run: str, beacon: bool) -> tuple[dict[str, Event], list[str]]:
    settings: Settings = stack["settings"]
    before = end_offsets(settings)
    errors, requests = browse(stack, run, beacon)
    assert errors == []
    codec = codec_from_settings(settings)
    events: dict[str, Event] = {}
    for _key, value in consume_since(settings, before, 6, timeout=60):
        event = codec.decode(value)
        assert isinstance(event, Event)
        assert event.anonymous_id == f"anon-{run}"
        name = event.kind.value
        if event.kind is Kind.VISIT:
            name = str(event.payload["name"])
        events[name] = event
    return events, requests


def check(events: dict[str, Event], run: str) -> None:
    assert {name: e.kind for name, e in events.items()} == {
        "Home": Kind.VISIT,
        "Pricing": Kind.VISIT,
        "identify": Kind.IDENTIFY,
        "form_submitted": Kind.FORM_SUBMITTED,
        "alias": Kind.ALIAS,
        "group": Kind.GROUP,
    }
    home, identify, form = events["Home"], events["identify"], events["form_submitted"]
    # RudderStack fills context.campaign from the URL's utm_* like analytics.js.
    assert (home.context.channel, home.context.utm_campaign) == ("paid_social", "q3-launch")
    assert (home.payload["category"], home.context.path) == ("Docs", "/rudder.html")
    # The SDK puts the page's campaign in every call's context; its top-level "channel": "web"
    # is the SDK's own, never a marketing channel.
    assert {e.context.channel for e in events.values()} == {"paid_social"}
    assert identify.lead_id == f"lead-{run}"
    assert (identify.payload["email"], identify.payload["first_name"]) == (
        f"{run}@initech.example",
        "Peter",
    )
    assert (identify.payload["company"], identify.payload["company_size"]) == ("Initech", 800)
    assert identify.payload["title"] == "VP Engineering"
    # A trait the contract has no field for is kept with the event (v3 sends identify traits
    # only in context.traits), not dropped.
    extra = json.loads(identify.payload["extra_json"])
    assert extra["context"]["traits"]["favourite_stapler"] == "red"
    assert (form.lead_id, form.payload["company_size"]) == (f"lead-{run}", 501)
    assert events["alias"].payload["previous_id"] == f"anon-{run}"
    group = events["group"]
    assert (group.payload["group_id"], group.payload["company"]) == ("initech", "Initech")
    assert (group.payload["industry"], group.payload["country"]) == ("Software", "US")
    now = time.time() * 1000
    assert all(now - 120_000 < e.occurred_at <= now + 1000 for e in events.values())


def test_default_xhr_delivery(stack: dict[str, Any]) -> None:
    run = uuid.uuid4().hex[:10]
    events, requests = journey(stack, run, beacon=False)
    check(events, run)
    sent = [u for u in requests if u.startswith(stack["dataplane"])]
    assert {u.removeprefix(stack["dataplane"]) for u in sent} == {
        "/v1/page",
        "/v1/identify",
        "/v1/track",
        "/v1/alias",
        "/v1/group",
    }
    # Nothing but the page, its bundle and the collector: no CDN, no control plane.
    assert all(u.startswith(("http://127.0.0.1:", "data:")) for u in requests), requests


def test_beacon_plugin_delivery(stack: dict[str, Any]) -> None:
    run = uuid.uuid4().hex[:10]
    events, requests = journey(stack, run, beacon=True)
    check(events, run)
    sent = {
        u.removeprefix(stack["dataplane"]) for u in requests if u.startswith(stack["dataplane"])
    }
    assert sent == {f"/beacon/v1/batch?writeKey={stack['key']}"}
    assert all(u.startswith(("http://127.0.0.1:", "data:")) for u in requests), requests
