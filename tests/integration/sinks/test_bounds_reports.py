"""Issue 19 (MEDIUM): absurd amounts poison reports. On chdb and over HTTP.

Rows written before bounds were enforced (two deals of 1.7e308, a cost of -5e300) must not
make a KPI ``inf``/``-inf``; the projector now refuses such events, and a replay rebuilds the
tables without them.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

from leadflow.processors.events import Kind
from leadflow.sinks import reports
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import admission_error, insert_rows
from leadflow.streams.topics import EVENTS
from tests.integration.sinks import scenario
from tests.integration.sinks.test_analytics import load

RANGE = {"date_from": date(2025, 12, 1), "date_to": date(2026, 3, 1)}
ABSURD = [
    scenario.ev("x1", Kind.DEAL_WON, 13, lead="L1",
                payload={"deal_id": "D9", "amount": 1.7e308, "currency": "USD"}),
    scenario.ev("x2", Kind.DEAL_WON, 14, lead="L1",
                payload={"deal_id": "D10", "amount": 1.7e308, "currency": "USD"}),
    scenario.ev("x3", Kind.CAMPAIGN_COST, 0,
                payload={"date": "2026-01-01", "channel": "paid_search", "campaign": "brand",
                         "amount": -5e300}),
]  # fmt: skip


def _floats(report: reports.Report) -> list[float]:
    return [v for row in report.rows for v in row if isinstance(v, float)]


def test_old_absurd_rows_never_show_as_inf_or_nan(client: Any, clickhouse_db: str) -> None:
    load(client, clickhouse_db, scenario.everything())
    insert_rows(client, clickhouse_db, rows_for_all(ABSURD))  # as stored before the bounds
    every = [
        reports.kpis(client, clickhouse_db, **RANGE),
        reports.funnel(client, clickhouse_db, **RANGE),
        *(reports.attribution(client, clickhouse_db, model=m, conversion="won", **RANGE)
          for m in reports.MODELS),
    ]  # fmt: skip
    for report in every:
        assert all(math.isfinite(v) for v in _floats(report)), report.title
    kpis = {r["source"]: r for r in every[0].as_dicts()}
    assert kpis["total"]["revenue"] is None  # 1.7e308 + 1.7e308 overflowed to inf
    assert any("not finite" in note for note in every[0].notes)


def test_the_projector_refuses_them_so_a_replay_drops_them() -> None:
    for event in ABSURD:
        key = event.person_key.encode()
        refused = admission_error(EVENTS.name, key, event)
        assert refused is not None
        assert refused[0] == "out_of_bounds"
