"""Objects to rows: every table's row matches its columns, ids and PII rules hold."""

from __future__ import annotations

import json
from datetime import date

import pytest

from leadflow.processors.derived import (
    BecameSQL,
    Contact,
    EngagementSummary,
    LeadScored,
    Qualification,
    RuleHit,
    SlaBreached,
    Stage,
    StageChanged,
    Touch,
)
from leadflow.processors.errors import InvalidEvent
from leadflow.processors.events import Context, Event, Kind
from leadflow.sinks.projection import as_columns, channel_of, rows_for, rows_for_all
from leadflow.sinks.tables import ALL_TABLES

TABLES = {t.name: t for t in ALL_TABLES}


def _event(kind: Kind, **kw: object) -> Event:
    base: dict[str, object] = {
        "event_id": "e1",
        "kind": kind,
        "workspace_id": "w",
        "occurred_at": 1000,
        "received_at": 2000,
    }
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def test_form_links_device_and_keeps_pii_out() -> None:
    ev = _event(
        Kind.FORM_SUBMITTED, anonymous_id="a1", lead_id="L1",
        context=Context(utm_campaign="spring", channel="Paid Search"),
        payload={"email": "x@y.io", "first_name": "X", "company_size": 120, "industry": "saas"},
    )  # fmt: skip
    rows = rows_for(ev)
    events = as_columns(TABLES["events"], rows.by_table["events"])
    assert events["channel"] == ["paid_search"]
    assert events["campaign"] == ["spring"]
    assert events["company_size"] == [120]
    payload = json.loads(events["payload_json"][0])
    assert "email" not in payload
    assert "first_name" not in payload
    assert payload["industry"] == "saas"
    ids = as_columns(TABLES["identities"], rows.by_table["identities"])
    assert (ids["anonymous_id"], ids["lead_id"]) == (["a1"], ["L1"])


def test_alias_links_previous_id() -> None:
    rows = rows_for(_event(Kind.ALIAS, lead_id="L1", payload={"previous_id": "anon-9"}))
    ids = as_columns(TABLES["identities"], rows.by_table["identities"])
    assert ids["anonymous_id"] == ["anon-9"]


def test_identity_processor_links_are_projected() -> None:
    from leadflow.processors.derived import IdentityLinked

    rows = rows_for(IdentityLinked("w", "anon-3", "L7", 99, "e5"))
    ids = as_columns(TABLES["identities"], rows.by_table["identities"])
    assert (ids["anonymous_id"], ids["lead_id"], ids["linked_at"]) == (["anon-3"], ["L7"], [99])
    assert ids["source_kind"] == ["identity_linked"]


def test_anonymous_visit_links_nothing() -> None:
    rows = rows_for(_event(Kind.VISIT, anonymous_id="a1"))
    assert set(rows.by_table) == {"events"}
    assert as_columns(TABLES["events"], rows.by_table["events"])["channel"] == ["direct"]


def test_cost_and_deal_rows() -> None:
    cost = _event(
        Kind.CAMPAIGN_COST,
        payload={"date": "2026-01-02", "channel": "paid_search", "campaign": "b", "amount": 9.5},
    )
    cols = as_columns(TABLES["costs"], rows_for(cost).by_table["costs"])
    assert cols["date"] == [date(2026, 1, 2)]
    assert cols["amount"] == [9.5]
    assert cols["currency"] == ["USD"]
    assert channel_of(cost) == "paid_search"
    won = _event(Kind.DEAL_WON, lead_id="L1", payload={"deal_id": "D", "amount": 10.0})
    deal = as_columns(TABLES["deals"], rows_for(won).by_table["deals"])
    assert deal["outcome"] == ["won"]
    assert deal["amount"] == [10.0]


def test_a_lost_deal_without_an_amount_is_null_not_zero() -> None:
    # Stored as 0 it counted as a deal worth nothing: avg(amount) over lost deals and any
    # lost pipeline value were wrong without a word. A stated 0 stays 0.
    events = [
        _event(Kind.DEAL_LOST, event_id="x1", lead_id="L1", payload={"reason": "price"}),
        _event(Kind.DEAL_LOST, event_id="x2", lead_id="L1", payload={"amount": 0.0}),
        _event(Kind.DEAL_LOST, event_id="x3", lead_id="L1", payload={"amount": 250.0}),
    ]
    deals = as_columns(TABLES["deals"], rows_for_all(events).by_table["deals"])
    assert deals["outcome"] == ["lost"] * 3
    assert deals["amount"] == [None, 0.0, 250.0]
    assert "Nullable" in next(c.type for c in TABLES["deals"].columns if c.name == "amount")


def test_bad_cost_is_invalid() -> None:
    with pytest.raises(InvalidEvent):
        rows_for(_event(Kind.CAMPAIGN_COST, payload={"date": "yesterday", "amount": 1.0}))


def test_derived_rows() -> None:
    sc = StageChanged("t1", "w", "L1", None, Stage.LEAD, 5, "form", "e1", 1)
    scored = LeadScored(
        "s1", "w", "L1", 6, 10.0, 20.0, None, None, (RuleHit("pricing", 5.0),), "e2",
        Stage.LEAD, ("smb",),
    )  # fmt: skip
    sql = BecameSQL(
        "t2", "w", "L1", 7, "sales_accepted", 1, Contact(company="Acme", company_size=50),
        ("smb",), 1.0, 2.0, (RuleHit("demo", 9.0),), 0.7, "m1", (), Qualification("BANT"),
        "o1", "team", Touch("e0", "visit", 1, "organic_search"), None, EngagementSummary(),
        (),
    )  # fmt: skip
    breach = SlaBreached("b1", "w", "L1", "t1", 5, 9, None)
    rows = rows_for_all([sc, scored, sql, breach, object()])
    assert {k: len(v) for k, v in rows.by_table.items()} == {
        "stage_transitions": 1, "scores": 1, "handoffs": 1, "sla_breaches": 1,
    }  # fmt: skip
    transitions = as_columns(TABLES["stage_transitions"], rows.by_table["stage_transitions"])
    assert transitions["from_stage"] == [""]
    scores = as_columns(TABLES["scores"], rows.by_table["scores"])
    assert scores["top_rules"] == [["pricing"]]
    assert scores["model_score"] == [None]
    handoffs = as_columns(TABLES["handoffs"], rows.by_table["handoffs"])
    assert handoffs["first_touch_channel"] == ["organic_search"]
    assert handoffs["last_touch_channel"] == [""]


def test_every_row_matches_its_table() -> None:
    # Rows.add rejects a row whose width differs from the table's insert columns.
    from leadflow.sinks.projection import Rows

    with pytest.raises(InvalidEvent):
        Rows().add(TABLES["events"], ("too", "short"))
