"""analytics.js (@segment/analytics-next, unmodified) in Debian's headless Chromium.

A B2B journey, default delivery (one POST per call to /v1/p, /v1/t, /v1/i, /v1/a, /v1/g,
with a CORS preflight for the Authorization header) and batching delivery (/v1/b): two
anonymous page views from a LinkedIn ad, an identify with traits in both places (traits
and context.traits), a form (which analytics.js then sends with the userId), an alias and a
group. Every message must be in Kafka with
the right kind, channel, traits and time, and, through a real worker and the projector,
in ClickHouse attributed to the lead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadflow.processors.events import Event, Kind
from leadflow.schemas.codec import codec_from_settings
from leadflow.sinks.projector import Projector
from leadflow.streams.settings import Settings
from leadflow.streams.topics import create_topics
from tests.conftest import free_port
from tests.integration.collector.conftest import consume_since, end_offsets, make_collector, serve
from tests.integration.pipeline.conftest import WorkerProcess
from tests.integration.sdk.browser import CHROMIUM, CHROMIUM_ARGS, serve_site
from tests.integration.sdk.conftest import NODE_MODULES

UMD = NODE_MODULES / "@segment" / "analytics-next" / "dist" / "umd"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium (.ci/run)"),
    pytest.mark.skipif(not UMD.exists(), reason="tests/sdk/node_modules: run `make sdk-deps`"),
]


@pytest.fixture(scope="module")
def stack(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    create_topics(kafka)
    home = tmp_path_factory.mktemp("ajs")
    site_port = free_port()
    settings = kafka.model_copy(
        update={"collector_cors_origins": (f"http://127.0.0.1:{site_port}",)}
    )
    collector, key = make_collector(settings, home / "keys.json", heartbeats=True)
    worker = WorkerProcess(kafka, home / "worker")
    worker.data_dir.mkdir()
    worker.start()
    with serve(collector) as collector_url, serve_site(site_port, {"/ajs/": UMD}) as site:
        try:
            yield {
                "site": site,
                "api": collector_url.removeprefix("http://") + "/v1",
                "key": key,
                "settings": collector.settings,
                "worker": worker,
            }
        finally:
            worker.stop()


def browse(stack: dict[str, Any], run: str, batching: bool) -> list[str]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(
            f"{stack['site']}/journey.html?run={run}&key={stack['key']}&api={stack['api']}"
            f"&batching={int(batching)}&utm_source=linkedin&utm_medium=paid_social"
            "&utm_campaign=q3-launch"
        )
        page.wait_for_function("window.ajsDone === true", timeout=60_000)
        errors: list[str] = page.evaluate("window.ajsErrors")
        if batching:
            # The last batch leaves on the dispatcher's timer (500 ms) or when the page goes.
            page.wait_for_timeout(1500)
        browser.close()
    return errors


def journey_events(stack: dict[str, Any], run: str, batching: bool) -> dict[str, Event]:
    settings: Settings = stack["settings"]
    before = end_offsets(settings)
    assert browse(stack, run, batching) == []
    codec = codec_from_settings(settings)
    events = {}
    for _key, value in consume_since(settings, before, 6, timeout=60):
        event = codec.decode(value)
        assert isinstance(event, Event)
        events[event.event_id.removeprefix(f"{run}-")] = event
    return events


def check_kafka(events: dict[str, Event], run: str) -> None:
    assert {name: e.kind for name, e in events.items()} == {
        "home": Kind.VISIT,
        "pricing": Kind.VISIT,
        "form": Kind.FORM_SUBMITTED,
        "identify": Kind.IDENTIFY,
        "alias": Kind.ALIAS,
        "group": Kind.GROUP,
    }
    home, form, identify = events["home"], events["form"], events["identify"]
    # analytics.js fills context.campaign from the URL's utm_* parameters.
    assert (home.context.channel, home.context.utm_campaign) == ("paid_social", "q3-launch")
    assert home.context.path == "/journey.html"
    assert {e.anonymous_id for e in events.values()} == {f"anon-{run}"}
    assert form.lead_id == f"lead-{run}"
    assert (form.payload["company_size"], form.payload["title"]) == (1000, "VP Engineering")
    # Traits in both places: the company object at the top, title and industry in context.
    assert identify.lead_id == f"lead-{run}"
    assert (identify.payload["company"], identify.payload["company_size"]) == (
        "Navy Analytics",
        1500,
    )
    assert (identify.payload["title"], identify.payload["industry"]) == (
        "VP Engineering",
        "Defense",
    )
    assert events["alias"].payload["previous_id"] == f"anon-{run}"
    group = events["group"]
    assert (group.lead_id, group.payload["group_id"], group.payload["company"]) == (
        f"lead-{run}",
        "navy",
        "Navy Analytics",
    )
    assert (group.payload["company_size"], group.payload["country"]) == (1500, "US")
    # Browser time, corrected for the browser's clock: within the test's few seconds.
    now = time.time() * 1000
    assert all(now - 120_000 < e.occurred_at <= now + 1000 for e in events.values())
    order = [events[n].occurred_at for n in ("home", "pricing", "identify", "form")]
    assert order == sorted(order)


def test_default_delivery_journey_reaches_kafka_and_clickhouse(
    stack: dict[str, Any], clickhouse_session: Any, clickhouse_db: str
) -> None:
    run = uuid.uuid4().hex[:10]
    check_kafka(journey_events(stack, run, batching=False), run)
    lead = f"lead-{run}"
    settings = stack["worker"].settings
    deadline = time.monotonic() + 120
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        projector = Projector(
            settings, clickhouse_session, clickhouse_db, group_id=f"ajs-{uuid.uuid4()}"
        )
        projector.run_until_idle(max_seconds=60)
        rows = clickhouse_session.query(
            f"SELECT kind, channel FROM {clickhouse_db}.v_person_events "
            "WHERE workspace_id = 'ws-acme' AND lead_id = {lead:String} ORDER BY occurred_at",
            parameters={"lead": lead},
        ).result_rows
        if sum(kind == "visit" for kind, _ in rows) == 2 and any(k == "identify" for k, _ in rows):
            break
        time.sleep(2)
    kinds = [kind for kind, _ in rows]
    # The two anonymous page views now belong to the lead, first touch from LinkedIn ads.
    assert kinds.count("visit") == 2, rows
    assert {"form_submitted", "identify"} <= set(kinds), rows
    assert rows[0] == ("visit", "paid_social")


def test_batching_delivery_journey_reaches_kafka(stack: dict[str, Any]) -> None:
    run = uuid.uuid4().hex[:10]
    check_kafka(journey_events(stack, run, batching=True), run)
