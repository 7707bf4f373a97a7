"""The server SDKs, unmodified: segment-analytics-python, rudder-sdk-python, @segment/analytics-node
and @rudderstack/rudder-sdk-node.

Each SDK runs in its own process (tests/sdk) with its defaults, pointed at a running
collector in front of the real broker; the assertions read the events back from Kafka.
"""

from __future__ import annotations

import json

import pytest

from leadflow.processors.events import Kind, scoped_key
from leadflow.streams.topics import DLQ
from tests.integration.collector.conftest import Running, consume_since, end_offsets
from tests.integration.sdk.conftest import (
    NODE,
    NODE_MODULES,
    SDK,
    SDK_PYTHON,
    needs_node_sdks,
    needs_python_sdks,
    new_run,
    run_driver,
    stored_events,
)

pytestmark = pytest.mark.integration
OCCURRED = 1_772_362_800_000  # 2026-03-01T11:00:00Z, the drivers' timestamp


@needs_python_sdks
@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_python_sdk_journey_arrives_whole(sdk: str, sdk_collector: Running) -> None:
    run = new_run()
    before = end_offsets(sdk_collector.settings)
    result = run_driver(
        [
            str(SDK_PYTHON),
            "drive_python.py",
            sdk,
            sdk_collector.url,
            sdk_collector.write_key,
            run,
            "journey",
        ]
    )
    assert result["errors"] == []
    events = stored_events(sdk_collector, before, 6)
    kinds = {eid.removeprefix(f"{run}-"): e.kind for eid, e in events.items()}
    assert kinds == {
        "page": Kind.VISIT,
        "form": Kind.FORM_SUBMITTED,
        "identify": Kind.IDENTIFY,
        "alias": Kind.ALIAS,
        "group": Kind.GROUP,
        "won": Kind.DEAL_WON,
    }
    page, form = events[f"{run}-page"], events[f"{run}-form"]
    identify, won = events[f"{run}-identify"], events[f"{run}-won"]
    assert page.context.channel == "paid_search"  # utm_medium=cpc on the page URL
    # The event's time, corrected by the skew between the SDK's sentAt and our clock (ms).
    assert abs(page.occurred_at - OCCURRED) < 1000
    # The form's size range and the identify's company object are understood.
    assert (form.payload["company_size"], form.payload["title"]) == (51, "CTO")
    assert (identify.payload["company"], identify.payload["company_size"]) == ("Acme", 120)
    assert (identify.payload["first_name"], identify.lead_id) == ("Ada", f"lead-{run}")
    # rudder-sdk-python sends identify traits only in context.traits.
    assert identify.payload["email"] == f"{run}@acme.example"
    assert won.payload["amount"] == 12000.0
    assert form.anonymous_id == f"anon-{run}"
    assert events[f"{run}-alias"].payload["previous_id"] == f"anon-{run}"
    # The group call is the account: its traits are the company's firmographics.
    group = events[f"{run}-group"]
    assert (group.lead_id, group.payload["group_id"]) == (f"lead-{run}", "acme")
    assert {k: group.payload[k] for k in ("company", "company_size", "industry", "country")} == {
        "company": "Acme",
        "company_size": 51,
        "industry": "Software",
        "country": "DE",
    }
    assert (group.payload["plan"], group.payload["website"]) == ("enterprise", "acme.example")
    assert json.loads(group.payload["extra_json"]) == {"traits": {"address": {"city": "Berlin"}}}


@needs_python_sdks
@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_a_full_batch_at_the_sdks_own_limit_is_stored(sdk: str, sdk_collector: Running) -> None:
    run = new_run()
    before = end_offsets(sdk_collector.settings)
    args = [str(SDK_PYTHON), "drive_python.py", sdk, sdk_collector.url, sdk_collector.write_key]
    result = run_driver([*args, run, "full"])
    assert result["errors"] == []
    events = stored_events(sdk_collector, before, 100)
    assert set(events) == {f"{run}-full-{i}" for i in range(100)}


@needs_python_sdks
def test_rudder_batch_over_the_gateway_limit_gets_a_413_it_reads(sdk_collector: Running) -> None:
    # rudder-sdk-python reads body["code"]; without it the 413 became a KeyError, retried as
    # a network failure max_retries times, then dropped.
    before = end_offsets(sdk_collector.settings)
    result = run_driver(
        [
            str(SDK_PYTHON),
            "drive_python.py",
            "rudder",
            sdk_collector.url,
            sdk_collector.write_key,
            new_run(),
            "oversize",
        ]
    )
    assert result["errors"] == [
        {"type": "APIError", "status": 413, "code": "too_large", "messages": 2}
    ]
    assert end_offsets(sdk_collector.settings) == before


@needs_node_sdks
def test_analytics_node_journey_with_one_bad_event(sdk_collector: Running) -> None:
    run = new_run()
    before = end_offsets(sdk_collector.settings)
    dead_before = end_offsets(sdk_collector.settings, DLQ.name)
    assert NODE is not None
    result = run_driver(
        [NODE, str(SDK / "drive_node.mjs"), sdk_collector.url, sdk_collector.write_key, run]
    )
    assert result["errors"] == []
    assert set(result["statuses"]) == {200}
    events = stored_events(sdk_collector, before, 6)
    assert f"{run}-bad" not in events
    form, identify = events[f"{run}-form"], events[f"{run}-identify"]
    stage = events[f"{run}-stage"]
    assert form.payload["company_size"] == 1000
    assert (identify.payload["title"], identify.payload["company_size"]) == ("VP Sales", 250)
    assert identify.payload["email"] == f"{run}@acme.example"
    assert (stage.kind, stage.payload["action"]) == (Kind.STAGE_CHANGED, "accept_mql")
    group = events[f"{run}-group"]
    assert (group.kind, group.payload["company"], group.payload["industry"]) == (
        Kind.GROUP,
        "Acme",
        "Software",
    )
    [(key, value)] = consume_since(sdk_collector.settings, dead_before, 1, topic=DLQ.name)
    assert key == scoped_key("ws-acme", f"lead-{run}").encode()  # dead letters carry the workspace
    assert b'"a lot"' in value


@pytest.mark.skipif(
    NODE is None or not (NODE_MODULES / "@rudderstack" / "rudder-sdk-node").exists(),
    reason="node or tests/sdk/node_modules missing: run `make sdk-deps` (needs npm)",
)
def test_rudder_node_journey_with_one_bad_event(sdk_collector: Running) -> None:
    # @rudderstack/rudder-sdk-node: gzip, Content-Type application/x-www-form-urlencoded on a
    # JSON body, originalTimestamp instead of timestamp, identify traits in both places, its
    # first message flushed alone and the rest in one batch.
    run = new_run()
    before = end_offsets(sdk_collector.settings)
    dead_before = end_offsets(sdk_collector.settings, DLQ.name)
    assert NODE is not None
    result = run_driver(
        [NODE, str(SDK / "drive_rudder_node.mjs"), sdk_collector.url, sdk_collector.write_key, run]
    )
    assert result["errors"] == []
    events = stored_events(sdk_collector, before, 7)
    assert {name: events[f"{run}-{name}"].kind for name in (
        "page", "form", "identify", "alias", "group", "stage", "deal"
    )} == {
        "page": Kind.VISIT,
        "form": Kind.FORM_SUBMITTED,
        "identify": Kind.IDENTIFY,
        "alias": Kind.ALIAS,
        "group": Kind.GROUP,
        "stage": Kind.STAGE_CHANGED,
        "deal": Kind.DEAL_WON,
    }  # fmt: skip
    # originalTimestamp, shifted by the clock-skew correction (receive - sentAt: milliseconds)
    assert all(abs(e.occurred_at - OCCURRED) < 10_000 for e in events.values())
    page, form = events[f"{run}-page"], events[f"{run}-form"]
    assert (page.anonymous_id, page.context.channel) == (f"anon-{run}", "paid_search")
    assert (form.payload["email"], form.payload["company_size"]) == (f"{run}@acme.example", 51)
    identify = events[f"{run}-identify"]
    assert identify.lead_id == f"lead-{run}"
    assert (identify.payload["first_name"], identify.payload["title"]) == ("Ada", "CTO")
    assert (identify.payload["company"], identify.payload["company_size"]) == ("Acme", 120)
    assert identify.payload["industry"] == "Software"
    group = events[f"{run}-group"]
    assert (group.payload["company_size"], group.payload["country"]) == (51, "DE")
    assert events[f"{run}-stage"].payload["action"] == "accept_mql"
    assert events[f"{run}-deal"].payload["amount"] == 12000.0
    assert events[f"{run}-alias"].payload["previous_id"] == f"anon-{run}"
    [(key, value)] = consume_since(sdk_collector.settings, dead_before, 1, topic=DLQ.name)
    assert key == scoped_key("ws-acme", f"lead-{run}").encode()  # dead letters carry the workspace
    assert b'"a lot"' in value
