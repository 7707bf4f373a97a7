"""A person clicks through the demo site in headless Chromium and becomes a lead in ClickHouse.

Everything is real: Debian's Chromium runs leadflow.js, which posts to the collector over
HTTP (CORS); the collector writes Avro to Kafka; a `leadflow worker` stitches the anonymous
visits to the lead; the projector writes ClickHouse; the assertions read it back.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadflow.demo.site import serve_site
from leadflow.processors.identity import derive_lead_id
from leadflow.sinks.projector import Projector
from leadflow.streams.settings import Settings
from leadflow.streams.topics import create_topics
from tests.conftest import free_port
from tests.integration.collector.conftest import make_collector, serve
from tests.integration.pipeline.conftest import WorkerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EMAIL = "grace.hopper@navy-analytics.example"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is installed by .ci/run"
)


@pytest.fixture(scope="module")
def stack(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    create_topics(kafka)
    home = tmp_path_factory.mktemp("browser")
    site_port = free_port()
    settings = kafka.model_copy(
        update={"collector_cors_origins": (f"http://127.0.0.1:{site_port}",)}
    )
    collector, key = make_collector(settings, home / "keys.json", heartbeats=True)
    worker = WorkerProcess(kafka, home / "worker")
    worker.data_dir.mkdir()
    worker.start()
    with serve(collector) as collector_url:
        site = serve_site("127.0.0.1", site_port, key, collector_url)
        try:
            yield {"site": f"http://127.0.0.1:{site_port}", "worker": worker}
        finally:
            site.shutdown()
            worker.stop()


def browse_and_submit(site: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )  # fmt: skip
        page = browser.new_page()

        def settle() -> None:
            page.wait_for_function(
                "document.documentElement.getAttribute('data-leadflow-pending') === '0'"
            )

        page.goto(f"{site}/?utm_source=linkedin&utm_medium=paid_social&utm_campaign=q3-launch")
        settle()
        page.click("#nav-pricing")
        page.wait_for_url("**/pricing.html")
        settle()
        page.click("#nav-case")
        page.wait_for_url("**/case-study.html")
        settle()
        page.click("#nav-home")
        page.wait_for_url("**/index.html")
        settle()
        page.fill("#email", EMAIL)
        page.fill("#first_name", "Grace")
        page.fill("#last_name", "Hopper")
        page.fill("#company", "Navy Analytics")
        page.fill("#title", "VP Engineering")
        page.select_option("#company_size", "1500")
        page.click("#submit")
        page.wait_for_function(
            "document.documentElement.getAttribute('data-leadflow-form') === 'sent'"
        )
        settle()
        assert page.is_visible("#thanks")
        browser.close()


def test_a_visitor_clicks_through_the_site_and_becomes_a_lead_in_clickhouse(
    stack: dict[str, Any], clickhouse_session: Any, clickhouse_db: str
) -> None:
    browse_and_submit(stack["site"])
    lead_id = derive_lead_id("ws-acme", EMAIL)
    settings = stack["worker"].settings
    deadline = time.monotonic() + 120
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        projector = Projector(
            settings, clickhouse_session, clickhouse_db, group_id=f"browser-{uuid.uuid4()}"
        )
        projector.run_until_idle(max_seconds=60)
        rows = clickhouse_session.query(
            f"SELECT kind, channel, occurred_at FROM {clickhouse_db}.v_person_events "
            "WHERE workspace_id = 'ws-acme' AND lead_id = {lead:String} ORDER BY occurred_at",
            parameters={"lead": lead_id},
        ).result_rows
        if any(kind == "form_submitted" for kind, _, _ in rows):
            break
        time.sleep(2)
    kinds = [kind for kind, _, _ in rows]
    # Four page views (home, pricing, case study, home) made before anyone knew who it was,
    # then the identify and the form: all of them belong to the lead now.
    assert kinds.count("visit") == 4, rows
    assert "identify" in kinds
    assert "form_submitted" in kinds
    assert rows[0][0] == "visit"
    assert rows[0][1] == "paid_social"  # the first touch keeps its channel (UTM medium)
    paths = clickhouse_session.query(
        f"SELECT path FROM {clickhouse_db}.v_events "
        "WHERE workspace_id = 'ws-acme' AND kind = 'visit' AND anonymous_id IN "
        f"(SELECT anonymous_id FROM {clickhouse_db}.v_identities WHERE lead_id = {{lead:String}})"
        " ORDER BY occurred_at",
        parameters={"lead": lead_id},
    ).result_rows
    assert [p for (p,) in paths] == ["/", "/pricing.html", "/case-study.html", "/index.html"]
    source = clickhouse_session.query(
        f"SELECT source FROM {clickhouse_db}.v_lead_profile WHERE lead_id = {{lead:String}}",
        parameters={"lead": lead_id},
    ).result_rows
    assert source == [("paid_social",)]
