"""Labelled leads for `policy suggest-weights` from ClickHouse (chdb and HTTP), one workspace."""

from __future__ import annotations

import dataclasses
from typing import Any

from leadflow.processors.derived import Stage
from leadflow.processors.events import Kind
from leadflow.sinks.migrations import migrate
from leadflow.sinks.policy_history import labelled_leads
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import insert_rows
from tests.integration.sinks.scenario import W, ev, tr


def world() -> list[object]:
    # L1 (day 0, VP, converts), L2 (day 1, no title, disqualified), L3 (day 50: younger than
    # the 30-day horizon before the newest lead L4 at day 60), L4 itself; workspace wz has a
    # lead L1 too, with another title, that converts: it must not leak into W's L1 or L2.
    objs: list[object] = [
        ev("i1", Kind.IDENTIFY, 0, anon="a1", lead="L1",
           payload={"title": "Analyst", "company_size": 90, "industry": "retail"}),
        ev("i2", Kind.FORM_SUBMITTED, 2, anon="a1", lead="L1",
           payload={"title": "VP Sales", "country": "US"}),
        ev("i3", Kind.IDENTIFY, 1, anon="a2", lead="L2", payload={"company_size": 10}),
        ev("i4", Kind.IDENTIFY, 50, anon="a3", lead="L3", payload={"title": "CEO"}),
        ev("i5", Kind.IDENTIFY, 60, anon="a4", lead="L4", payload={"title": "CTO"}),
        tr("L1", 1, None, Stage.LEAD, 0), tr("L1", 2, Stage.LEAD, Stage.SQL, 5),
        tr("L2", 1, None, Stage.LEAD, 1),
        tr("L2", 2, Stage.LEAD, Stage.DISQUALIFIED, 3),
        tr("L3", 1, None, Stage.LEAD, 50), tr("L3", 2, Stage.LEAD, Stage.SQL, 51),
        tr("L4", 1, None, Stage.LEAD, 60),
    ]  # fmt: skip
    other = [
        ev("z1", Kind.IDENTIFY, 0, anon="z", lead="L2", payload={"title": "Head of Sales"}),
        tr("L2", 1, None, Stage.LEAD, 0), tr("L2", 2, Stage.LEAD, Stage.SQL, 1),
    ]  # fmt: skip
    return objs + [dataclasses.replace(o, workspace_id="wz") for o in other]  # type: ignore[type-var]


def test_labelled_leads_of_one_workspace(client: Any, clickhouse_db: str) -> None:
    migrate(client, clickhouse_db)
    insert_rows(client, clickhouse_db, rows_for_all(world()))
    rows = labelled_leads(client, clickhouse_db, W, conversion_rank=3, horizon_days=30)
    assert rows == [
        ("L1", "VP Sales", 90, "retail", "US", True),  # the latest title
        ("L2", "", 10, "", "", False),
    ]
    assert labelled_leads(client, clickhouse_db, W, conversion_rank=3, horizon_days=5) == [
        *rows, ("L3", "CEO", None, "", "", True),
    ]  # fmt: skip
    assert labelled_leads(client, clickhouse_db, "wz", conversion_rank=3, horizon_days=0) == [
        ("L2", "Head of Sales", None, "", "", True),
    ]
