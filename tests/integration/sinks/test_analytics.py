"""Analytics on the real ClickHouse engine, against numbers worked out by hand.

The world is tests/integration/sinks/scenario.py. Every expectation below is derived in
the comments from that scenario, not read back from the code.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from typing import Any

import pytest
from click.testing import CliRunner

from leadflow.cli import report as report_cli
from leadflow.cli.main import cli
from leadflow.processors.events import TOUCH_KINDS, Kind
from leadflow.sinks import migrations, reports
from leadflow.sinks.migrations import MIGRATIONS, MigrationError, migrate
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import insert_rows
from leadflow.sinks.workspaces import create_workspace_views
from tests.integration.sinks import scenario
from tests.unit.recorded_log import Recorded

RANGE = {"date_from": date(2025, 12, 1), "date_to": date(2026, 3, 1)}


def load(client: Any, database: str, objects: list[object]) -> None:
    migrate(client, database)
    insert_rows(client, database, rows_for_all(objects))


@pytest.fixture
def db(client: Any, clickhouse_db: str) -> str:
    load(client, clickhouse_db, scenario.everything())
    return clickhouse_db


def credit(
    client: Any, db: str, model: str, conversion: str, by: str = "channel"
) -> dict[str, Any]:
    report = reports.attribution(client, db, model=model, conversion=conversion, by=by, **RANGE)
    return {row[0]: (row[1], row[2]) for row in report.rows}


def approx_credit(expected: dict[str, tuple[float, float]]) -> dict[str, Any]:
    # Hand-computed decimals carry 6 digits.
    return {
        k: (pytest.approx(c, rel=1e-5, abs=1e-9), pytest.approx(r, rel=1e-5, abs=1e-6))
        for k, (c, r) in expected.items()
    }


def rounded(report: reports.Report) -> list[tuple[Any, ...]]:
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in report.rows]


# -- migrations --------------------------------------------------------------------------------


def test_migrations_apply_once_and_detect_edited_history(client: Any, clickhouse_db: str) -> None:
    assert migrate(client, clickhouse_db) == [m.version for m in MIGRATIONS]
    assert migrate(client, clickhouse_db) == []
    tables = {r[0] for r in client.query(f"SHOW TABLES FROM {clickhouse_db}").result_rows}
    assert {"events", "identities", "stage_transitions", "scores", "lead_state", "costs",
            "deals", "handoffs", "sla_breaches", "schema_migrations", "attribution",
            "v_lead_funnel"} <= tables  # fmt: skip
    client.insert(
        f"{clickhouse_db}.schema_migrations", [[2, "views", "edited"]],
        column_names=["version", "name", "checksum"],
    )  # fmt: skip
    client.command(f"OPTIMIZE TABLE {clickhouse_db}.schema_migrations FINAL")
    with pytest.raises(MigrationError):
        migrate(client, clickhouse_db)


# -- attribution -------------------------------------------------------------------------------
# The won deal (d12, 1000 USD) of L1 has five touches (identity map: e1 and e2 were anonymous):
#   pos1 d0 organic_search, pos2 d2 paid_search/brand, pos3 d4 direct (lead creation),
#   pos4 d6 email/nurture, pos5 d8 direct (last touch; the opportunity opened d9 > d8, so
#   the opportunity-creation touch is pos5 too).

WON = {
    # pos1 only.
    "first_touch": {"organic_search": 1.0, "paid_search": 0.0, "direct": 0.0, "email": 0.0},
    # pos5 is direct, so the last non-direct touch is pos4.
    "last_touch": {"organic_search": 0.0, "paid_search": 0.0, "direct": 0.0, "email": 1.0},
    # 1/5 each; direct has two touches.
    "linear": {"organic_search": 0.2, "paid_search": 0.2, "direct": 0.4, "email": 0.2},
    # ages 12, 10, 8, 6, 4 days -> 2^(-a/7) = .304753, .371499, .452862, .552045, .672950;
    # total 2.354109.
    "time_decay": {
        "organic_search": 0.304753 / 2.354109,
        "paid_search": 0.371499 / 2.354109,
        "direct": (0.452862 + 0.672950) / 2.354109,
        "email": 0.552045 / 2.354109,
    },
    # 40 first, 40 last, 20 over the three middle touches.
    "u_shaped": {"organic_search": 0.4, "paid_search": 0.2 / 3, "direct": 0.4 + 0.2 / 3,
                 "email": 0.2 / 3},
    # 30 first, 30 lead creation (pos3), 30 opportunity creation (pos5), 10 over pos2, pos4.
    "w_shaped": {"organic_search": 0.3, "paid_search": 0.05, "direct": 0.6, "email": 0.05},
    # 22.5 first, lead creation, opportunity creation (pos5) and close (pos5), 10 over 2 and 4.
    "full_path": {"organic_search": 0.225, "paid_search": 0.05, "direct": 0.675, "email": 0.05},
    # Learnt from the range's journeys: L1's path converts; L2 (paid_social x2) and the
    # anonymous a3 (direct) had not won by the range's end, so they are null journeys.
    # Removal effects (see tests/unit/sinks/test_markov.py::test_loops_are_solved_exactly):
    # organic 1/2, paid_search 1/2, direct 1, email 1/3, paid_social 0; sum 7/3. One
    # conversion: total 1 x RE / sum(RE). The value chain has the same shape (1000 / 3 from
    # direct), so the revenue shares are the same.
    "markov": {"organic_search": 3 / 14, "paid_search": 3 / 14, "direct": 3 / 7, "email": 1 / 7},
    # The same effects split over L1's own path: the same numbers for one conversion.
    "markov_path": {"organic_search": 3 / 14, "paid_search": 3 / 14, "direct": 3 / 7,
                    "email": 1 / 7},
    # Channel sets: {organic, paid_search, direct, email} converts 1 of 1; {paid_social} and
    # {direct} 0 of 1; no other subset was seen (value 0). The game on L1's set is the
    # unanimity game of the whole set: a quarter each.
    "shapley": {"organic_search": 0.25, "paid_search": 0.25, "direct": 0.25, "email": 0.25},
}  # fmt: skip


@pytest.mark.parametrize("model", reports.MODELS)
def test_won_deal_credit_per_model(client: Any, db: str, model: str) -> None:
    expected = {k: (w, 1000 * w) for k, w in WON[model].items()}
    assert credit(client, db, model, "won") == approx_credit(expected)


def test_mql_u_shaped_and_campaigns(client: Any, db: str) -> None:
    # L1's MQL (d6) has 4 touches: .4 organic, .1 paid_search, .1 direct, .4 email.
    # L2's MQL (d5) has 2 touches, both paid_social: .5 + .5.
    assert credit(client, db, "u_shaped", "mql") == approx_credit(
        {"organic_search": (0.4, 0), "paid_search": (0.1, 0), "direct": (0.1, 0),
         "email": (0.4, 0), "paid_social": (1.0, 0)}
    )  # fmt: skip
    # Linear by campaign: L1 (1/4 each): '' x2, brand, nurture; L2: li x2 (1/2 each).
    assert credit(client, db, "linear", "mql", by="campaign") == approx_credit(
        {"": (0.5, 0), "brand": (0.25, 0), "nurture": (0.25, 0), "li": (1.0, 0)}
    )


def test_every_model_sums_to_one_per_conversion(client: Any, db: str) -> None:
    rows = client.query(
        f"SELECT model, conversion_id, sum(weight) FROM {db}.attribution("
        "lookback_days = 90, half_life_days = 7) GROUP BY model, conversion_id"
    ).result_rows
    assert len({m for m, _, _ in rows}) == 7
    assert [w for _, _, w in rows] == pytest.approx([1.0] * len(rows))


def test_lookback_window_excludes_old_touches(client: Any, db: str) -> None:
    # 5 days before the d12 won deal leaves only the d8 demo request (direct).
    report = reports.attribution(
        client, db, model="linear", conversion="won", lookback_days=5, **RANGE
    )
    assert report.rows == [("direct", pytest.approx(1.0), pytest.approx(1000.0))]


# -- velocity, funnel, KPIs ----------------------------------------------------------------


def test_time_in_stage_and_sales_cycle(client: Any, db: str) -> None:
    # lead: L1 d4->d6, L2 d3->d5 (2, 2); mql: L1 d6->d8, L2 d5->d7 (2, 2); sql: d8->d9 (1);
    # opportunity: d9->d12 (3).
    report = reports.time_in_stage(client, db, **RANGE)
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in report.rows] == [
        ("lead", 2, 2.0, 2.0, 2.0),
        ("mql", 2, 2.0, 2.0, 2.0),
        ("sql", 1, 1.0, 1.0, 1.0),
        ("opportunity", 1, 3.0, 3.0, 3.0),
    ]
    cycle = reports.sales_cycle(client, db, **RANGE)
    assert cycle.rows == [("all", 1, 8.0, 8.0, 8.0)]  # L1: lead d4, won d12


def test_stage_conversion_by_segment(client: Any, db: str) -> None:
    report = reports.stage_conversion(client, db, by="industry", **RANGE)
    assert report.rows == [
        ("retail", 1, 1.0, 0.0, None, None, 0.0),
        ("software", 1, 1.0, 1.0, 1.0, 1.0, 1.0),
    ]
    by_size = reports.time_in_stage(client, db, by="size_band", **RANGE)
    assert ("opportunity", "50-249", 1, 3.0, 3.0, 3.0) in by_size.rows


def test_funnel_names_the_leak(client: Any, db: str) -> None:
    report = reports.funnel(client, db, **RANGE)
    # Visitors: L1, L2 and the anonymous a3. Rates: 2/3, 1, 1/2, 1, 1.
    assert [(r[0], r[1]) for r in report.rows] == [
        ("visitor", 3), ("lead", 2), ("mql", 2), ("sql", 1), ("opportunity", 1),
        ("customer", 1),
    ]  # fmt: skip
    assert reports.largest_drop_off(report) == "sql"
    assert "mql -> sql" in report.notes[0]
    assert "sales rejects MQLs" in report.notes[0]


def test_kpis_by_source(client: Any, db: str) -> None:
    report = {r["source"]: r for r in reports.kpis(client, db, **RANGE).as_dicts()}
    # Costs: paid_search restated 200 -> 300, paid_social 100; total 400.
    total = report["total"]
    assert (total["cost"], total["leads"], total["mqls"], total["sqls"], total["customers"]) == (
        400.0, 2, 2, 1, 1,
    )  # fmt: skip
    assert total["revenue"] == 1000.0
    assert (total["cpl"], total["cost_per_mql"], total["cost_per_sql"], total["cac"]) == (
        200.0, 200.0, 400.0, 400.0,
    )  # fmt: skip
    assert (total["mql_to_sql"], total["sql_to_close"], total["ltv_cac"]) == (0.5, 1.0, 2.5)
    social = report["paid_social"]
    assert (social["cost"], social["leads"], social["cpl"], social["mql_to_sql"]) == (
        100.0, 1, 100.0, 0.0,
    )  # fmt: skip
    assert report["organic_search"]["revenue"] == 1000.0
    assert report["paid_search"]["leads"] == 0
    assert report["paid_search"]["cpl"] is None


def test_lost_reasons_and_experiments(client: Any, db: str) -> None:
    lost = reports.lost_reasons(client, db, **RANGE)
    assert lost.rows == [("disqualified", "mql", "no budget", "paid_social", "retail", "1000+", 1)]
    exp = reports.experiments(client, db, conversion="lead", **RANGE)
    # A: L1 exposed d0, lead d4 -> 1/1. B: L2 (lead d3) and anonymous a3 -> 1/2.
    # pooled 2/3, se = sqrt(2/3 * 1/3 * (1 + 1/2)) = sqrt(1/3); z = -0.5 / sqrt(1/3).
    assert [r[:5] for r in exp.rows] == [("lp", "A", 1, 1, 1.0), ("lp", "B", 2, 1, 0.5)]
    assert exp.rows[1][5] == pytest.approx(-0.5 / (1 / 3) ** 0.5)


def test_lead_state_is_current(client: Any, db: str) -> None:
    rows = client.query(
        f"SELECT lead_id, stage, transitions, fit_score, engagement_score, model_score "
        f"FROM {db}.v_lead_state ORDER BY lead_id"
    ).result_rows
    assert [tuple(r) for r in rows] == [
        ("L1", "customer", 5, 45.0, 36.0, 0.6),
        ("L2", "disqualified", 3, 0.0, 0.0, 0.0),
    ]


# -- one number, three ways ----------------------------------------------------------------


def _direct_linear(client: Any, db: str) -> dict[str, float]:
    """Linear credit of won deals computed straight from the tables (no views)."""
    kinds = ", ".join(f"'{k.value}'" for k in TOUCH_KINDS)
    rows = client.query(
        f"""
        SELECT t.channel, sum(1 / t.n)
        FROM (
            SELECT d.event_id AS deal, e.channel AS channel,
                   count() OVER (PARTITION BY d.event_id) AS n
            FROM (SELECT * FROM {db}.deals FINAL WHERE outcome = 'won') AS d
            INNER JOIN (
                SELECT ev.channel AS channel, ev.occurred_at AS occurred_at,
                       if(ev.lead_id != '', ev.lead_id, ids.lead_id) AS lead
                FROM (SELECT * FROM {db}.events FINAL WHERE kind IN ({kinds})) AS ev
                LEFT JOIN (SELECT anonymous_id, any(lead_id) AS lead_id FROM {db}.identities
                           GROUP BY anonymous_id) AS ids ON ids.anonymous_id = ev.anonymous_id
            ) AS e ON e.lead = d.lead_id
            WHERE e.occurred_at <= d.occurred_at
              AND e.occurred_at >= d.occurred_at - 90 * 86400000
        ) AS t
        GROUP BY t.channel
        """
    ).result_rows
    return {str(c): float(w) for c, w in rows}


class SharedClient:
    """The session client for the CLI, which must not close it."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_client":
            object.__setattr__(self, name, value)
        else:
            setattr(self._client, name, value)

    def close(self) -> None:
        """Keep the session's client open."""


@pytest.fixture
def cli_client(monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
    monkeypatch.setattr(report_cli, "clickhouse_client", lambda _s: SharedClient(client))
    return


@pytest.mark.usefixtures("cli_client")
def test_cli_view_and_direct_query_agree(client: Any, db: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["report", "attribution", "--model", "linear", "--conversion", "won", "--from",
         "2025-12-01", "--to", "2026-03-01", "--format", "json", "--database", db],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    from_cli = {r["channel"]: r["conversions"] for r in json.loads(result.output)["rows"]}
    from_view = {
        str(c): float(w)
        for c, w in client.query(
            f"SELECT channel, sum(weight) FROM {db}.attribution(lookback_days = 90, "
            "half_life_days = 7) WHERE model = 'linear' AND conversion = 'won' GROUP BY channel"
        ).result_rows
    }
    direct = _direct_linear(client, db)
    assert from_cli == pytest.approx(direct)
    assert from_view == pytest.approx(direct)
    assert direct == pytest.approx(WON["linear"])
    sql = CliRunner().invoke(
        cli, ["sql", "SELECT count() AS n FROM v_events", "--database", db, "--format", "csv"]
    )
    assert sql.exit_code == 0, sql.output
    assert sql.output.split() == ["n", "12"]


@pytest.mark.usefixtures("cli_client")
@pytest.mark.parametrize("command", ["funnel", "velocity", "kpis", "lost", "experiments"])
def test_cli_reports_run(db: str, command: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["report", command, "--from", "2025-12-01", "--to", "2026-03-01", "--database", db,
         "--format", "table"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2025-12-01..2026-03-01" in result.output


@pytest.mark.usefixtures("cli_client")
def test_cli_without_dates_covers_all_data_and_prints_one_json_value(db: str) -> None:
    # The scenario's first event is d0 (2026-01-01), its last the won deal at d12 (2026-01-13).
    funnel = CliRunner().invoke(cli, ["report", "funnel", "--database", db, "--format", "json"])
    assert funnel.exit_code == 0, funnel.output
    assert json.loads(funnel.output)["title"] == (
        "funnel: leads created 2026-01-01..2026-01-14 (all data)"
    )
    velocity = CliRunner().invoke(cli, ["report", "velocity", "--database", db, "--format", "json"])
    assert velocity.exit_code == 0, velocity.output
    parts = json.loads(velocity.output)  # one value: the three reports in an array
    assert [p["title"].split(",")[0] for p in parts] == [
        "time in stage (days)", "stage conversion", "sales cycle (days)",
    ]  # fmt: skip


def test_kpis_count_a_skipped_stage_as_reached(client: Any, db: str) -> None:
    # L3 is created d2 and becomes an SQL on d3 without ever entering MQL (a demo request).
    insert_rows(client, db, rows_for_all([
        scenario.ev("e20", scenario.Kind.DEMO_REQUESTED, 2, lead="L3", channel="direct"),
        scenario.tr("L3", 1, None, scenario.Stage.LEAD, 2),
        scenario.tr("L3", 2, scenario.Stage.LEAD, scenario.Stage.SQL, 3),
    ]))  # fmt: skip
    total = reports.kpis(client, db, **RANGE).as_dicts()[-1]
    # Reached MQL: L1 (d6), L2 (d5) and L3 (d3, when it reached SQL); SQL: L1 and L3.
    assert (total["leads"], total["mqls"], total["sqls"]) == (3, 3, 2)
    assert total["mql_to_sql"] == pytest.approx(2 / 3)
    funnel = {r[0]: r[1] for r in reports.funnel(client, db, **RANGE).rows}
    assert (funnel["mql"], funnel["sql"]) == (3, 2)  # the funnel's definition, the same counts


# -- duplicates and replays ----------------------------------------------------------------


def every_report(client: Any, db: str) -> list[list[tuple[Any, ...]]]:
    out = [
        rounded(reports.attribution(client, db, model=m, conversion=c, **RANGE))
        for m in reports.MODELS
        for c in ("lead", "mql", "won")
    ]
    out += [
        rounded(reports.funnel(client, db, **RANGE)),
        rounded(reports.time_in_stage(client, db, by="source", **RANGE)),
        rounded(reports.stage_conversion(client, db, by="cohort_month", **RANGE)),
        rounded(reports.sales_cycle(client, db, **RANGE)),
        rounded(reports.kpis(client, db, **RANGE)),
        rounded(reports.lost_reasons(client, db, **RANGE)),
        rounded(reports.experiments(client, db, conversion="mql", **RANGE)),
    ]
    state = client.query(f"SELECT * FROM {db}.v_lead_state ORDER BY lead_id").result_rows
    counts = client.query(
        f"SELECT (SELECT count() FROM {db}.v_events),"
        f" (SELECT count() FROM {db}.v_stage_transitions),"
        f" (SELECT count() FROM {db}.v_scores), (SELECT count() FROM {db}.v_deals)"
    ).result_rows
    return [*out, [tuple(r) for r in state], [tuple(r) for r in counts]]


def test_delivering_everything_twice_changes_nothing(client: Any, db: str) -> None:
    before = every_report(client, db)
    # A second delivery in other batches (one record per insert) -- no merge has run.
    for obj in scenario.everything():
        insert_rows(client, db, rows_for_all([obj]))
    raw = client.query(f"SELECT count() FROM {db}.events").result_rows[0][0]
    assert raw > 12  # the duplicates are physically there (unless merged already) ...
    assert every_report(client, db) == before  # ... and invisible


def test_replay_in_another_order_rebuilds_identical_numbers(client: Any, db: str) -> None:
    replay = f"{db}_replay"
    client.command(f"DROP DATABASE IF EXISTS {replay}")
    try:
        load(client, replay, list(reversed(scenario.everything())))
        assert every_report(client, replay) == every_report(client, db)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {replay}")


def test_reports_isolate_workspaces(client: Any, db: str) -> None:
    alone = every_report(client, db)[:-2]
    other = [dataclasses.replace(o, workspace_id="ws2") for o in scenario.everything()]  # type: ignore[type-var]
    insert_rows(client, db, rows_for_all(other))
    funnel = reports.funnel(client, db, **RANGE)
    assert funnel.rows[1][:2] == ("lead", 4)  # both workspaces
    ws1 = reports.funnel(client, db, workspace="ws1", **RANGE)
    assert ws1.rows[1][:2] == ("lead", 2)
    scoped = [
        rounded(reports.attribution(client, db, model=m, conversion=c,
                                    workspace="ws1", **RANGE))
        for m in reports.MODELS
        for c in ("lead", "mql", "won")
    ]  # fmt: skip
    assert scoped == alone[: len(scoped)]
    kpis = reports.kpis(client, db, workspace="ws2", **RANGE).as_dicts()[-1]
    assert (kpis["cost"], kpis["revenue"]) == (400.0, 1000.0)


# -- deal amounts (migration 8) ---------------------------------------------------------------
# A deal_lost may carry no amount. It was stored as 0, so avg(amount) over lost deals and any
# lost pipeline value counted it as a deal worth nothing; it is NULL now. Every figure of won
# deals (revenue, KPIs, attribution credit) is what it was.


def _lost(eid: str, amount: float | None = None) -> Any:
    payload: dict[str, object] = {"deal_id": f"D-{eid}", "reason": "price"}
    if amount is not None:
        payload["amount"] = amount
    return scenario.ev(eid, Kind.DEAL_LOST, 10, lead="L2", payload=payload)


def _but_lost_deals(report_list: list[list[tuple[Any, ...]]]) -> list[list[tuple[Any, ...]]]:
    """every_report without the two entries a lost deal changes: lost reasons, row counts."""
    return report_list[:-4] + report_list[-3:-1]


def _types(client: Any, db: str) -> dict[str, str]:
    rows = client.query(
        f"SELECT concat(table, '.', name), type FROM system.columns WHERE database = '{db}'"
        " AND (table, name) IN (('deals', 'amount'), ('v_deals', 'amount'),"
        " ('v_lead_funnel', 'revenue'), ('v_conversions', 'revenue'))"
    ).result_rows
    return {str(k): str(v) for k, v in rows}


def test_a_lost_deal_without_an_amount_is_null_and_won_figures_stay(client: Any, db: str) -> None:
    before = every_report(client, db)
    insert_rows(client, db, rows_for_all([_lost("x1"), _lost("x2", 400.0)]))
    lost = client.query(
        f"SELECT count(), count(amount), sum(amount), avg(amount) FROM {db}.v_deals"
        " WHERE outcome = 'lost'"
    ).result_rows
    assert [tuple(r) for r in lost] == [(2, 1, 400.0, 400.0)]  # was (2, 2, 400.0, 200.0)
    after = every_report(client, db)
    assert _but_lost_deals(after) == _but_lost_deals(before)
    assert ("deal_lost", "opportunity", "price", "paid_social", "retail", "1000+", 2) in after[-4]
    assert _types(client, db) == {
        "deals.amount": "Nullable(Float64)", "v_deals.amount": "Nullable(Float64)",
        "v_lead_funnel.revenue": "Float64", "v_conversions.revenue": "Float64",
    }  # fmt: skip
    funnel = client.query(
        f"SELECT lead_id, revenue FROM {db}.v_lead_funnel ORDER BY lead_id"
    ).result_rows
    assert [tuple(r) for r in funnel] == [("L1", 1000.0), ("L2", 0.0)]  # not NULL for L2


def test_migration_8_upgrades_a_database_that_holds_deals(
    client: Any, clickhouse_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = clickhouse_db
    with monkeypatch.context() as old:
        old.setattr(migrations, "MIGRATIONS", MIGRATIONS[:7])
        assert migrate(client, db) == list(range(1, 8))
    insert_rows(client, db, rows_for_all(scenario.everything()))
    # What the projector wrote for a lost deal without an amount before migration 8.
    client.insert(
        f"{db}.deals", [["x0", scenario.W, "L2", "D-x0", "lost", 0.0, "USD", "price", 1]],
        column_names=["event_id", "workspace_id", "lead_id", "deal_id", "outcome", "amount",
                      "currency", "reason", "occurred_at"],
    )  # fmt: skip
    workspace = create_workspace_views(client, db, scenario.W)
    before = every_report(client, db)

    recorded = Recorded()
    with monkeypatch.context() as logged:
        logged.setattr(migrations, "log", recorded)
        logged.setattr(migrations, "MIGRATIONS", MIGRATIONS[:8])
        assert migrate(client, db) == [8]
    # Its views keep the old types: the operator is told which databases to make again.
    stale = [f for e, f in recorded.events("warning") if e == "clickhouse.workspace_views_stale"]
    assert [workspace in f["view_databases"] for f in stale] == [True]
    recorded = Recorded()
    with monkeypatch.context() as logged:
        logged.setattr(migrations, "log", recorded)
        assert migrate(client, db) == [9]  # the paths' rebuild (test_merges.py)
    # It changes rows only: no call to make the workspace's views again.
    assert [e for e, _ in recorded.events("warning")] == []
    assert every_report(client, db) == before  # the upgrade alone changes no figure
    assert _types(client, db)["deals.amount"] == "Nullable(Float64)"
    insert_rows(client, db, rows_for_all([_lost("x1")]))
    amounts = client.query(
        f"SELECT event_id, amount FROM {db}.v_deals WHERE outcome = 'lost' ORDER BY event_id"
    ).result_rows
    # The migration rewrites no row: the old lost deal keeps its 0 (a replay rebuilds it).
    assert [tuple(r) for r in amounts] == [("x0", 0.0), ("x1", None)]
    assert _but_lost_deals(every_report(client, db)) == _but_lost_deals(before)
    # A workspace's views keep the types they were made with: made again, they read NULL.
    create_workspace_views(client, db, scenario.W)
    rows = client.query(f"SELECT event_id, amount FROM {workspace}.deals WHERE outcome = 'lost'"
                        " ORDER BY event_id").result_rows  # fmt: skip
    assert [tuple(r) for r in rows] == [("x0", 0.0), ("x1", None)]
