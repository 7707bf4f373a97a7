"""The Grafana dashboard's panels run on ClickHouse and the committed JSON is current."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leadflow.processors.derived import (
    BecameSQL,
    Contact,
    EngagementSummary,
    Qualification,
    SlaBreached,
)
from leadflow.sinks.dashboards import PANELS, WORKSPACES, render
from leadflow.sinks.migrations import migrate
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import insert_rows
from tests.integration.sinks import scenario

T = 1_767_225_600_000
EXTRA = [
    BecameSQL(
        "t-1",
        scenario.W,
        "lead-d",
        T,
        "sales_accepted",
        1,
        Contact(company="Acme"),
        (),
        50.0,
        40.0,
        (),
        None,
        None,
        (),
        Qualification("bant"),
        "rep-1",
        "team-1",
        None,
        None,
        EngagementSummary(),
        (),
    ),
    SlaBreached("b-1", scenario.W, "lead-d", "t-0", T - 86_400_000, T, "rep-1"),
]
COMMITTED = Path(__file__).resolve().parents[3] / "infra/grafana/dashboards/leadflow.json"


def test_committed_dashboard_is_generated_from_sinks() -> None:
    assert COMMITTED.read_text() == render(), (
        "run: python -m leadflow.sinks.dashboards > infra/grafana/dashboards/leadflow.json"
    )
    assert len(json.loads(COMMITTED.read_text())["panels"]) == len(PANELS)


def test_every_panel_query_runs_and_sees_the_scenario(client: Any, clickhouse_db: str) -> None:
    migrate(client, clickhouse_db)
    insert_rows(client, clickhouse_db, rows_for_all([*scenario.everything(), *EXTRA]))
    answered = 0
    for panel in PANELS:
        sql = panel.sql.replace("leadflow.", f"{clickhouse_db}.").replace(
            "${workspace}", scenario.W
        )
        rows = client.query(sql).result_rows
        answered += bool(rows)
    # Leads, stage stays, a hand-off and an SLA breach: every panel has data.
    assert answered == len(PANELS)
    workspaces = client.query(WORKSPACES.replace("leadflow.", f"{clickhouse_db}.")).result_rows
    assert (scenario.W,) in workspaces
