"""Issue 19: what a public write key may not make the collector store.

Absurd amounts (revenue inf, cost -5e300) and values that look sealed are refused one event at
a time, with a reason, to the dead-letter topic; the rest of the batch is stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from leadflow.processors.bounds import Bounds, BoundsTable, Range
from tests.unit.collector.test_http import Harness

SEALED = "enc:v1:00ff00ff00ff00ff:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


def refused(body: dict[str, object]) -> list[tuple[int, str, list[tuple[str, str]]]]:
    return [
        (r["index"], r["reason"], [(e["path"], e["message"]) for e in r["errors"]])
        for r in body["refused"]  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize(
    ("event", "amount", "words"),
    [
        ("Deal Won", 1.7e308, "above the maximum 1000000000"),
        ("Deal Won", -1e9, "below the minimum 0"),
        ("Deal Lost", -1, "below the minimum 0"),
        ("Campaign Cost", -5e300, "below the minimum 0"),
        ("Campaign Cost", 2e9, "above the maximum"),
    ],
)
def test_absurd_amounts_are_refused_per_event_with_a_reason(
    tmp_path: Path, event: str, amount: float, words: str
) -> None:
    h = Harness(tmp_path)
    props = {"amount": amount, "date": "2026-03-01", "channel": "paid_search"}
    good = {"type": "track", "event": "Deal Won", "userId": "u1", "properties": {"amount": 9e8}}
    bad = {"type": "track", "event": event, "userId": "u2", "properties": props}
    response = h.post("/v1/batch", {"batch": [good, bad]})
    assert response.status_code == 200, response.text
    ((index, reason, errors),) = refused(response.json())
    assert (index, reason) == (1, "invalid")
    ((path, message),) = errors
    assert path == "batch[1].properties.amount"
    assert words in message
    assert [e.payload["amount"] for e in h.events()] == [9e8]
    assert len(h.sink.dead) == 1


def test_counts_are_bounded_too(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    body = {"userId": "u1", "traits": {"email": "a@b.io", "employees": -5}}
    response = h.post("/v1/identify", body)
    assert response.status_code == 400
    ((_, _, errors),) = refused(response.json())
    assert errors[0][0].endswith(".company_size")
    webinar = {
        "event": "Webinar Attended",
        "userId": "u1",
        "properties": {"minutes_attended": 10**6},
    }
    assert h.post("/v1/track", webinar).status_code == 400


def test_a_workspace_may_have_its_own_bounds(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    credits = Bounds(campaign_cost=Range(-1e4, 1e6))
    h.collector.bounds = BoundsTable(workspaces={"acme": credits})
    props = {"amount": -250.0, "date": "2026-03-01", "channel": "paid_search"}
    cost = {"event": "Campaign Cost", "userId": "u1", "properties": props}
    assert h.post("/v1/track", cost).status_code == 200
    assert h.events()[0].payload["amount"] == -250.0


@pytest.mark.parametrize("value", ["enc:v9:x", SEALED])
def test_a_client_value_that_looks_sealed_is_refused_not_a_500(tmp_path: Path, value: str) -> None:
    # Before: "enc:v9:x" was a 500 marked retry-safe (SDKs retry forever), and a well-formed
    # enc:v1 envelope was stored as if the collector had sealed it.
    h = Harness(tmp_path)
    ok = {"type": "identify", "userId": "u1", "traits": {"email": "ada@x.io"}}
    bad = {"type": "identify", "userId": "u2", "traits": {"email": value}}
    ip = {
        "type": "page",
        "anonymousId": "a1",
        "context": {"ip": value, "consent": {"tracking": True}},
    }
    response = h.post("/v1/batch", {"batch": [ok, bad, ip]})
    assert response.status_code == 200, response.text
    assert [(i, [p for p, _ in e]) for i, _, e in refused(response.json())] == [
        (1, ["batch[1].traits.email"]),
        (2, ["batch[2].context.ip"]),
    ]
    assert all("reserved" in m for _, _, e in refused(response.json()) for _, m in e)
    assert [e.lead_id for e in h.events()] == ["u1"]
    assert value not in repr(h.events())


def test_a_group_calls_company_size_is_bounded(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    group = {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme", "employees": -40}}
    answer = h.post("/v1/group", group)
    assert answer.status_code == 400, answer.text
    ((_, _, errors),) = refused(answer.json())
    assert errors[0][0].endswith("company_size")
    assert "below the minimum 0" in errors[0][1]
