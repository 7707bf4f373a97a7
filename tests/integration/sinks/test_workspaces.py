"""Workspace isolation on the real engine (chdb): reports, per-workspace views, row policies.

Two workspaces share one database. Workspace B is the scenario with every channel,
campaign and amount changed and the SAME lead, event and transition ids as A (ids collide
across tenants in real life too), so a query that joins or filters without
``workspace_id`` shows up as a difference.

The contract: every report asked for workspace A returns exactly what it returns on a
database that holds A alone, and nothing of B's values; every table and view in A's view
database holds A's rows only, as many as the base database holds for A.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest

from leadflow.processors.derived import (
    BecameSQL,
    Contact,
    EngagementSummary,
    IdentityLinked,
    LeadScored,
    Qualification,
    RuleHit,
    SlaBreached,
    StageChanged,
    Touch,
)
from leadflow.processors.events import Event
from leadflow.sinks import reports
from leadflow.sinks.migrations import migrate
from leadflow.sinks.projection import Rows, dead_letter_rows, rows_for_all
from leadflow.sinks.projector import insert_rows
from leadflow.sinks.workspaces import (
    analyst_objects,
    create_workspace_views,
    row_policy_statements,
    workspace_database,
)
from tests.integration.sinks import scenario

A, B = scenario.W, "wsB"
RANGE = {"date_from": date(2025, 12, 1), "date_to": date(2026, 3, 1)}
B_MARK = "bonly"  # every string value B has and A has not contains this


def _extras(workspace: str, channel: str) -> list[object]:
    handoff = BecameSQL(
        scenario.derived_id("L1", 3, "sql"), workspace, "L1", scenario.at(8), "demo", 1,
        Contact(company=f"{channel}-co", company_size=120), ("smb",), 30.0, 40.0,
        (RuleHit("demo", 9.0),), 0.7, "m1", (), Qualification("BANT"), f"{channel}-rep",
        "team", Touch("e1", "visit", scenario.at(0), channel), None, EngagementSummary(), (),
    )  # fmt: skip
    breach = SlaBreached("b1", workspace, "L2", "t", scenario.at(5), scenario.at(6), None)
    link = IdentityLinked(workspace, "a2", "L2", scenario.at(3), "e8")
    return [handoff, breach, link]


def _world_a() -> list[object]:
    world = [*scenario.everything(), *_extras(A, "organic_search")]
    return [*world, *_refusals(world, A, "traits.company_size", 1)]


def _mark(value: str | None) -> str | None:
    return f"{B_MARK}_{value}" if value else value


def _to_b(obj: object) -> object:
    if isinstance(obj, Event):
        payload = dict(obj.payload)
        for key in ("channel", "campaign", "industry"):
            if isinstance(payload.get(key), str):
                payload[key] = _mark(payload[key])
        if isinstance(payload.get("amount"), float):
            payload["amount"] = payload["amount"] * 7 + 3
        context = dataclasses.replace(
            obj.context,
            channel=_mark(obj.context.channel),
            utm_campaign=_mark(obj.context.utm_campaign),
            variant=_mark(obj.context.variant),
        )
        return dataclasses.replace(obj, workspace_id=B, context=context, payload=payload)
    if isinstance(obj, LeadScored):
        return dataclasses.replace(obj, workspace_id=B, fit_score=obj.fit_score + 1)
    if isinstance(obj, StageChanged):
        return dataclasses.replace(obj, workspace_id=B, reason=_mark(obj.reason) or "")
    return dataclasses.replace(obj, workspace_id=B)  # type: ignore[type-var]


def _world_b() -> list[object]:
    # B also has one more lead, so counts differ, not only labels.
    extra = scenario.ev("e10", scenario.Kind.VISIT, 3, anon="a9", channel="b-extra")
    world = [_to_b(o) for o in (*scenario.everything(), extra)] + _extras(B, f"{B_MARK}_x")
    return [*world, *_refusals(world, B, f"traits.{B_MARK}_size", 2)]


def _refusals(objects: list[object], workspace: str, field: str, n: int) -> list[Rows]:
    """``n`` collector refusals of ``field`` at the workspace's newest receive time."""
    newest = max(o.received_at for o in objects if isinstance(o, Event))
    error = json.dumps([{"path": f"batch[0].{field}", "message": "bad"}]).encode()
    headers = [("reason", b"invalid"), ("stage", b"collector"), ("group", workspace.encode()),
               ("source.topic", b"/v1/batch"), ("error", error)]  # fmt: skip
    return [dead_letter_rows(0, i, b"", headers, newest, 10) for i in range(n)]


def _load(client: Any, database: str, objects: list[object]) -> None:
    migrate(client, database)
    rows = rows_for_all(objects)
    for extra in objects:
        if isinstance(extra, Rows):  # dead letters: rows from headers, no object
            rows.extend(extra)
    insert_rows(client, database, rows)


# Every report, called for one workspace. The coverage test below fails when a report
# function with a ``workspace`` parameter is added to sinks/reports.py and not listed here.
REPORTS: dict[str, Callable[[Any, str, str], Any]] = {
    "attribution": lambda c, db, ws: [
        reports.attribution(c, db, model=m, conversion=k, workspace=ws, **RANGE)
        for m in reports.MODELS
        for k in ("lead", "mql", "won")
    ],
    "markov_effects": lambda c, db, ws: reports.markov_effects(c, db, "mql", workspace=ws),
    "funnel": lambda c, db, ws: reports.funnel(c, db, workspace=ws, **RANGE),
    "time_in_stage": lambda c, db, ws: reports.time_in_stage(
        c, db, by="source", workspace=ws, **RANGE
    ),
    "stage_conversion": lambda c, db, ws: reports.stage_conversion(
        c, db, by="industry", workspace=ws, **RANGE
    ),
    "sales_cycle": lambda c, db, ws: reports.sales_cycle(c, db, by="source", workspace=ws, **RANGE),
    "kpis": lambda c, db, ws: reports.kpis(c, db, workspace=ws, **RANGE),
    "lost_reasons": lambda c, db, ws: reports.lost_reasons(c, db, workspace=ws, **RANGE),
    "experiments": lambda c, db, ws: reports.experiments(
        c, db, conversion="mql", workspace=ws, **RANGE
    ),
    "lead_scores": lambda c, db, ws: reports.lead_scores(c, db, workspace=ws),
    "latest_handoffs": lambda c, db, ws: reports.latest_handoffs(c, db, workspace=ws),
    "model_health": lambda c, db, ws: reports.model_health(c, db, window_days=365, workspace=ws),
}


@pytest.fixture
def worlds(clickhouse_session: Any, clickhouse_db: str) -> Iterator[tuple[str, str]]:
    """``(mixed, a_only)``: A and B together, and A alone."""
    alone = f"{clickhouse_db}_a"
    clickhouse_session.command(f"DROP DATABASE IF EXISTS {alone}")
    _load(clickhouse_session, clickhouse_db, [*_world_a(), *_world_b()])
    _load(clickhouse_session, alone, _world_a())
    try:
        yield clickhouse_db, alone
    finally:
        clickhouse_session.command(f"DROP DATABASE IF EXISTS {alone}")
        ws_db = workspace_database(clickhouse_db, A)
        clickhouse_session.command(f"DROP DATABASE IF EXISTS {ws_db}")


def test_every_report_with_a_workspace_is_in_the_contract() -> None:
    scoped = {
        name
        for name, fn in inspect.getmembers(reports, inspect.isfunction)
        if fn.__module__ == reports.__name__
        and not name.startswith("_")
        and "workspace" in inspect.signature(fn).parameters
    }
    assert scoped == set(REPORTS)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_report_for_a_ignores_b(
    clickhouse_session: Any,
    worlds: tuple[str, str],
    name: str,
    counts_checked: Callable[[str], None],
) -> None:
    mixed, alone = worlds
    run = REPORTS[name]
    a_mixed = run(clickhouse_session, mixed, A)
    assert repr(a_mixed) == repr(run(clickhouse_session, alone, A))
    assert B_MARK not in repr(a_mixed)
    assert "b-extra" not in repr(a_mixed)
    # B's data is really there: B's own report differs from A's and carries B's values.
    b_mixed = run(clickhouse_session, mixed, B)
    assert repr(b_mixed) != repr(a_mixed)
    counts_checked(f"{name}: workspace A identical with and without B; B differs")


ARGS = {
    "attribution": "(lookback_days = 90, half_life_days = 7)",
    "attribution_paths": "(lookback_days = 90)",
    "model_health": "(window_days = 90, horizon_days = 30, min_labels = 30, conversion_rank = 3, "
    "refused_days = 7)",
    "refused_inputs": "(refused_days = 7)",
}


def test_workspace_views_hold_only_their_workspace(
    clickhouse_session: Any, worlds: tuple[str, str], counts_checked: Callable[[str], None]
) -> None:
    mixed, _alone = worlds
    ws_db = create_workspace_views(clickhouse_session, mixed, A)
    assert ws_db == workspace_database(mixed, A)
    checked = 0
    for obj in analyst_objects():
        args = ARGS.get(obj.name, "")
        rows = clickhouse_session.query(
            f"SELECT workspace_id, count() FROM {ws_db}.{obj.name}{args} GROUP BY workspace_id"
        ).result_rows
        base = clickhouse_session.query(
            f"SELECT count() FROM {mixed}.{obj.name}{args} WHERE workspace_id = %(ws)s",
            parameters={"ws": A},
        ).result_rows[0][0]
        assert {w for w, _ in rows} <= {A}, obj.name
        assert sum(n for _, n in rows) == base, obj.name
        checked += 1 if base else 0
    # Every table and view exposed, and nearly all hold data in this world (so the
    # comparison above is not vacuous).
    assert checked >= len(analyst_objects()) - 2
    counts_checked(f"{checked} of {len(analyst_objects())} workspace views non-empty and A-only")


def test_workspace_views_are_idempotent_and_isolated_per_workspace(
    clickhouse_session: Any, worlds: tuple[str, str]
) -> None:
    mixed, _alone = worlds
    first = create_workspace_views(clickhouse_session, mixed, A)
    assert create_workspace_views(clickhouse_session, mixed, A) == first
    other = create_workspace_views(clickhouse_session, mixed, B)
    try:
        assert other != first
        a_leads = clickhouse_session.query(
            f"SELECT DISTINCT workspace_id FROM {first}.v_lead_funnel"
        ).result_rows
        b_events = clickhouse_session.query(
            f"SELECT countIf(channel LIKE '{B_MARK}%'), count() FROM {other}.v_events"
        ).result_rows[0]
        assert a_leads == [(A,)]
        assert b_events[0] > 0
        assert b_events[1] == 13
    finally:
        clickhouse_session.command(f"DROP DATABASE IF EXISTS {other}")


def test_chdb_refuses_row_policies_so_they_are_server_only(
    clickhouse_session: Any, clickhouse_db: str
) -> None:
    # If a future chdb accepts access management, this fails and the policies can be
    # tested for real instead of as text.
    migrate(clickhouse_session, clickhouse_db)
    statement = row_policy_statements(clickhouse_db, A, "analyst_a")[0]
    with pytest.raises(Exception, match=r"ACCESS_DENIED|Not enough privileges"):
        clickhouse_session.command(statement)


def test_cli_creates_the_views_and_prints_the_grant(
    clickhouse_session: Any, worlds: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from leadflow.cli import workspace as workspace_cli
    from leadflow.cli.main import cli
    from tests.integration.sinks.test_analytics import SharedClient

    mixed, _alone = worlds
    monkeypatch.setattr(
        workspace_cli, "clickhouse_client", lambda _s: SharedClient(clickhouse_session)
    )
    result = CliRunner().invoke(
        cli, ["workspace", "views", A, "--database", mixed, "--grantee", "analyst_a"]
    )
    assert result.exit_code == 0, result.output
    target = workspace_database(mixed, A)
    assert f"created {target}" in result.output
    assert f"GRANT SELECT ON {target}.* TO analyst_a;" in result.output
    rows = clickhouse_session.query(
        f"SELECT workspace_id, count() FROM {target}.v_events GROUP BY workspace_id"
    ).result_rows
    assert rows == [(A, 12)]
