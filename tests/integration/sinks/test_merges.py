"""ClickHouse counts a merged person once (issue 14): attribution, velocity, the funnel.

The journey of tests/unit/demo/journey.py runs through the pure pipeline (identity with
merges, ordered lead stage); what the worker would publish, and the inbound log the
projector reads, are loaded into a fresh database. The same rows without the merge
records show what the views must undo: the form's email lead and the user were two leads.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pytest

from leadflow.demo.inprocess import InProcess
from leadflow.processors.derived import LeadMerged
from leadflow.processors.identity import derive_lead_id
from leadflow.processors.policy_load import load_default_policy
from leadflow.sinks import migrations, reports
from leadflow.sinks.migrations import migrate
from leadflow.sinks.paths import refresh_paths
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import insert_rows
from tests.unit.demo import journey

RANGE = {"date_from": date(2025, 12, 1), "date_to": date(2026, 3, 1)}
SOFT = derive_lead_id(journey.WORKSPACE, journey.EMAIL)


def load(client: Any, database: str, *, merges: bool) -> None:
    events = journey.events()
    result = InProcess(load_default_policy(), partitions=4).run(events)
    derived = [d for d in result.all_derived() if merges or not isinstance(d, LeadMerged)]
    migrate(client, database)
    insert_rows(client, database, rows_for_all([*events, *result.links, *derived]))


def leads_in_funnel(client: Any, db: str) -> dict[str, int]:
    rows = client.query(f"SELECT lead_id, max_rank FROM {db}.v_lead_funnel").result_rows
    return {str(lead): int(rank) for lead, rank in rows}


def stays(client: Any, db: str) -> dict[str, int]:
    return {str(r[0]): int(r[2]) for r in reports.time_in_stage(client, db, **RANGE).rows}


def credit_per_conversion(client: Any, db: str, conversion: str) -> dict[str, float]:
    rows = client.query(
        f"SELECT conversion_id, sum(weight) FROM {db}.attribution(lookback_days = 90, "
        f"half_life_days = 7) WHERE conversion = '{conversion}' AND model = 'linear' "
        "GROUP BY conversion_id"
    ).result_rows
    return {str(c): float(w) for c, w in rows}


@pytest.mark.integration
def test_without_the_merge_rows_the_person_is_two_leads(client: Any, clickhouse_db: str) -> None:
    load(client, clickhouse_db, merges=False)
    assert set(leads_in_funnel(client, clickhouse_db)) == {SOFT, journey.USER}


@pytest.mark.integration
def test_attribution_and_velocity_count_a_merged_person_once(
    client: Any, clickhouse_db: str
) -> None:
    db = clickhouse_db
    load(client, db, merges=True)
    # The funnel: one lead, the user; its history starts with the email lead's (adopted).
    assert leads_in_funnel(client, db) == {journey.USER: 3}
    merged = client.query(f"SELECT merged_lead_id, lead_id FROM {db}.v_lead_merges").result_rows
    assert merged == [(SOFT, journey.USER)]  # the old CRM id never had rows: not announced
    # Velocity: each stage was entered once by this person and left once (SQL is open).
    assert stays(client, db) == {"visitor": 1, "lead": 1, "mql": 1}
    conversion = reports.stage_conversion(client, db, **RANGE).rows
    assert [row[1] for row in conversion] == [1]  # one lead created
    # Attribution: one conversion per stage, its credit sums to 1 (counted once) and the
    # anonymous pages and the form before the login are the survivor's touches.
    for stage in ("lead", "mql", "sql"):
        assert list(credit_per_conversion(client, db, stage).values()) == [pytest.approx(1.0)]
    touches = client.query(
        f"SELECT DISTINCT touch_id FROM {db}.attribution(lookback_days = 90, "
        "half_life_days = 7) WHERE conversion = 'sql'"
    ).result_rows
    assert {"m01-page-pricing", "m02-page-product", "m03-form", "m07-webinar"} <= {
        str(t[0]) for t in touches
    }
    people = client.query(
        f"SELECT uniqExact(person_id) FROM {db}.v_person_events WHERE is_touch"
    ).result_rows
    assert people == [(1,)]
    # The email lead's rows are not a second lead anywhere analysts look.
    state = client.query(f"SELECT lead_id FROM {db}.v_lead_state").result_rows
    assert [str(r[0]) for r in state] == [journey.USER]


def paths_of(client: Any, db: str) -> tuple[list[str], dict[str, tuple[str, set[str]]]]:
    """The persons with a journey, and per conversion its lead and touches (read as reports do)."""
    persons = client.query(
        f"SELECT person_id FROM {db}.journeys FINAL WHERE workspace_id = '{journey.WORKSPACE}' "
        "ORDER BY person_id"
    ).result_rows
    conversions = client.query(
        f"SELECT conversion, lead_id, touch_id FROM {db}.conversion_paths FINAL"
    ).result_rows
    return [str(p[0]) for p in persons], {
        str(c): (str(lead), {str(t) for t in touches}) for c, lead, touches in conversions
    }


@pytest.mark.integration
def test_attribution_paths_follow_a_merge_on_the_next_refresh(
    client: Any, clickhouse_db: str
) -> None:
    """The paths tables (issue 20) resolve merged ids too: rows first, the merge later."""
    db = clickhouse_db
    load(client, db, merges=False)
    sql_credit = reports.attribution(client, db, model="linear", conversion="sql", **RANGE)
    assert sum(row[1] for row in sql_credit.rows) == pytest.approx(1.0)
    persons, conversions = paths_of(client, db)
    assert persons == sorted([SOFT, journey.USER])  # two people before the merge rows
    assert conversions["lead"][0] == SOFT
    assert "m01-page-pricing" not in conversions["sql"][1]

    # The worker's LeadMerged arrives later; the next report's refresh picks it up.
    result = InProcess(load_default_policy(), partitions=4).run(journey.events())
    merged = [d for d in result.all_derived() if isinstance(d, LeadMerged)]
    assert merged
    insert_rows(client, db, rows_for_all(merged))
    credit = {
        stage: sum(row[1] for row in reports.attribution(
            client, db, model="linear", conversion=stage, **RANGE).rows)
        for stage in ("lead", "mql", "sql")
    }  # fmt: skip
    assert credit == {stage: pytest.approx(1.0) for stage in ("lead", "mql", "sql")}
    persons, conversions = paths_of(client, db)
    assert persons == [journey.USER]
    assert {lead for lead, _ in conversions.values()} == {journey.USER}
    assert {"m01-page-pricing", "m02-page-product", "m03-form", "m07-webinar"} <= conversions[
        "sql"
    ][1]

    # A full rebuild agrees with the incremental one.
    refresh_paths(client, db, full=True)
    assert paths_of(client, db) == (persons, conversions)


@pytest.mark.integration
def test_a_survivor_marked_alone_keeps_the_touches_of_the_ids_merged_into_it(
    client: Any, clickhouse_db: str
) -> None:
    """A refresh that rebuilds a survivor for a mark of its own (a stage change, a touch, a
    projector's replay) reads the touches of every id merged into it. It read none of them
    (session 20): ``merged_lead_id AS lead_id`` made ClickHouse filter the merges by the
    alias, and the crash-equivalence run with merges lost a touch from a conversion path."""
    db = clickhouse_db
    load(client, db, merges=True)
    # A touch the worker resolved to the merged id itself (the form's email lead), as the
    # projector writes it: no device, so only the merged id's own key in touch_log finds it.
    page = next(e for e in journey.events() if e.event_id == "m02-page-product")
    own = dataclasses.replace(page, event_id="m90-merged-lead-page", lead_id=SOFT,
                              anonymous_id=None)  # fmt: skip
    insert_rows(client, db, rows_for_all([own]))
    refresh_paths(client, db, margin_seconds=0)
    before = paths_of(client, db)
    assert before[0] == [journey.USER]
    assert "m90-merged-lead-page" in before[1]["sql"][1]

    client.command(
        f"INSERT INTO {db}.path_marks (workspace_id, lead_id, anonymous_id, marked_at) "
        f"VALUES ('{journey.WORKSPACE}', '{journey.USER}', '', now64(6, 'UTC'))"
    )
    assert refresh_paths(client, db, margin_seconds=0).persons >= 1
    assert paths_of(client, db) == before


@pytest.mark.integration
def test_migration_9_rebuilds_every_path_at_the_next_refresh(
    client: Any, clickhouse_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths refreshed before session 20's fix may lack merged ids' touches: migration 9
    leaves no refresh on record, so the next one rebuilds them all."""
    db = clickhouse_db
    with monkeypatch.context() as old:
        old.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:8])
        migrate(client, db)
        load(client, db, merges=True)
        assert refresh_paths(client, db, margin_seconds=0).full  # the first rebuilds all
        insert_rows(client, db, rows_for_all(journey.events()[:1]))  # a mark: incremental
        assert not refresh_paths(client, db, margin_seconds=0).full
    assert migrate(client, db) == [9]
    assert refresh_paths(client, db, margin_seconds=0).full
