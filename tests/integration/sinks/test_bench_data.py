"""The benchmarks' synthetic data set has the shape its docstring promises, on the real schema.

If the tables change and ``sinks.bench_data`` is not kept in step, the inserts fail here
(not half-way through ``make bench``); if the data stops being attributable, the benchmark
would time reports over nothing, and the credit checks below fail.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from leadflow.sinks import reports
from leadflow.sinks.bench_data import (
    FUNNEL,
    fill_synthetic,
    scan_baseline,
    visible_event_ids,
)
from leadflow.sinks.migrations import migrate

START_MS = 1_767_225_600_000  # 2026-01-01
DAY_MS = 86_400_000


@pytest.fixture
def client(clickhouse_session: Any) -> Any:
    # chdb only, like the bench: INSERT ... SELECT is a write, and the HTTP interface reads.
    return clickhouse_session


def test_synthetic_touches_and_funnel_have_the_promised_shape(
    client: Any, clickhouse_db: str
) -> None:
    migrate(client, clickhouse_db)
    counts = fill_synthetic(client, clickhouse_db, touches=2_000, leads=100, start_ms=START_MS)
    assert counts["events"] == 2_000

    per_lead = client.query(
        f"SELECT lead_id, count(), min(occurred_at), max(occurred_at) "
        f"FROM {clickhouse_db}.events GROUP BY lead_id"
    ).result_rows
    assert len(per_lead) == 100
    assert {n for _, n, _, _ in per_lead} == {20}
    # Touches three days apart from the lead's start day (spread over 30 days): 20 touches
    # span 57 days plus at most one day of jitter on each end.
    for _, _, first, last in per_lead:
        assert START_MS <= first < START_MS + 30 * DAY_MS
        assert 56 * DAY_MS < last - first < 59 * DAY_MS

    stages = dict(
        client.query(
            f"SELECT to_stage, count() FROM {clickhouse_db}.stage_transitions GROUP BY to_stage"
        ).result_rows
    )
    funnel = [stages.get(stage, 0) for stage, _, _, _ in FUNNEL]
    assert funnel[0] == 100  # every lead is created
    assert funnel == sorted(funnel, reverse=True)  # nobody skips a stage
    assert 0 < stages["sql"] < stages["mql"] < 100
    assert counts["deals"] == stages.get("customer", 0)
    assert counts["stage_transitions"] == sum(funnel)


def test_every_conversion_is_attributed_and_the_scan_counts_everything(
    client: Any, clickhouse_db: str
) -> None:
    migrate(client, clickhouse_db)
    counts = fill_synthetic(client, clickhouse_db, touches=600, leads=30, start_ms=START_MS)
    assert scan_baseline(client, clickhouse_db)[0] == counts["events"] == 600

    sqls = client.command(
        f"SELECT count() FROM {clickhouse_db}.stage_transitions WHERE to_stage = 'sql'"
    )
    for model in reports.RULE_MODELS:
        report = reports.attribution(
            client,
            clickhouse_db,
            model=model,
            conversion="sql",
            date_from=date(2026, 1, 1),
            date_to=date(2026, 7, 1),
        )
        # Each SQL conversion has earlier touches within the lookback, so credit sums to
        # the number of conversions and nothing is reported unattributed.
        assert sum(row[1] for row in report.rows) == pytest.approx(int(sqls))
        assert report.notes == ()


def test_visible_event_ids_finds_exactly_the_present_ones(client: Any, clickhouse_db: str) -> None:
    migrate(client, clickhouse_db)
    fill_synthetic(client, clickhouse_db, touches=50, leads=5, start_ms=START_MS)
    assert visible_event_ids(client, clickhouse_db, ["t-0", "t-49", "t-50", "nope"]) == {
        "t-0",
        "t-49",
    }
    assert visible_event_ids(client, clickhouse_db, []) == set()
