"""The attribution path tables follow the base tables through incremental refreshes.

Every check compares what the refreshes built with what v_person_events / v_conversions say
(the views the path tables cache), and with a full rebuild.
"""

from __future__ import annotations

from typing import Any

from leadflow.processors.events import Event, Kind
from leadflow.sinks.migrations import migrate
from leadflow.sinks.paths import refresh_paths
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import insert_rows
from tests.integration.sinks import scenario

JOURNEYS = (
    "SELECT person_id, lead_id, touch_id, channel FROM {db}.journeys FINAL ORDER BY person_id"
)
CONVERSIONS = (
    "SELECT conversion, conversion_id, lead_id, converted_at, revenue, lead_at, opp_at, touch_id "
    "FROM {db}.conversion_paths FINAL ORDER BY conversion, conversion_id"
)
# The same from the views: every person's touches in time order, every conversion's up to it.
VIEW_JOURNEYS = """
SELECT person_id, any(lead_id), arrayMap(x -> x.2, arraySort(groupArray((occurred_at, event_id))))
       AS ids, arrayMap(x -> x.3, arraySort(groupArray((occurred_at, event_id, channel))))
FROM {db}.v_touches GROUP BY person_id ORDER BY person_id
"""


def _rows(client: Any, sql: str, db: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(sql.format(db=db)).result_rows]


def _journeys_from_views(client: Any, db: str) -> list[tuple[Any, ...]]:
    return [
        (p, lead, list(ids), [c for c in channels])
        for p, lead, ids, channels in _rows(client, VIEW_JOURNEYS, db)
    ]


def test_batches_with_refreshes_between_build_what_one_full_rebuild_builds(
    client: Any, clickhouse_db: str
) -> None:
    migrate(client, clickhouse_db)
    objects = scenario.everything()
    first = refresh_paths(client, clickhouse_db, margin_seconds=0)
    assert first.full  # no refresh yet: everything (nothing, here) is built
    for start in range(0, len(objects), 3):
        insert_rows(client, clickhouse_db, rows_for_all(objects[start : start + 3]))
        refresh_paths(client, clickhouse_db, margin_seconds=0)
    journeys = _rows(client, JOURNEYS, clickhouse_db)
    conversions = _rows(client, CONVERSIONS, clickhouse_db)
    assert [(*r[:3], list(r[3])) for r in journeys] == [
        (p, lead, ids, channels)
        for p, lead, ids, channels in _journeys_from_views(client, clickhouse_db)
    ]
    # L1: lead, mql, sql, opportunity, customer and the won deal; L2: lead and mql.
    assert [(c[0], c[2]) for c in conversions].count(("won", "L1")) == 1
    assert len(conversions) == 8
    won = next(c for c in conversions if c[0] == "won")
    assert won[4] == 1000.0
    assert won[7] == ["e1", "e2", "e3", "e4", "e5"]
    # Nothing marked since: a refresh is a no-op; a full rebuild gives the same rows.
    assert refresh_paths(client, clickhouse_db, margin_seconds=0).persons == 0
    assert refresh_paths(client, clickhouse_db, full=True).full
    assert _rows(client, JOURNEYS, clickhouse_db) == journeys
    assert _rows(client, CONVERSIONS, clickhouse_db) == conversions


def test_a_link_and_a_consent_withdrawal_move_a_devices_touches(
    client: Any, clickhouse_db: str
) -> None:
    migrate(client, clickhouse_db)

    def ev(eid: str, kind: Kind, at: int, lead: str | None = None, **payload: Any) -> Event:
        return Event(eid, kind, "ws", at, at, anonymous_id="d1", lead_id=lead, payload=payload)

    insert_rows(client, clickhouse_db, rows_for_all([ev("v1", Kind.VISIT, 1_000)]))
    refresh_paths(client, clickhouse_db, margin_seconds=0)
    assert [r[:3] for r in _rows(client, JOURNEYS, clickhouse_db)] == [("anon:d1", "", ["v1"])]
    # The form links d1 to L1: the anonymous visit is L1's now, and anon:d1 is gone.
    insert_rows(client, clickhouse_db, rows_for_all([ev("f1", Kind.FORM_SUBMITTED, 2_000, "L1")]))
    refresh_paths(client, clickhouse_db, margin_seconds=0)
    assert [r[:3] for r in _rows(client, JOURNEYS, clickhouse_db)] == [("L1", "L1", ["v1", "f1"])]
    # Tracking consent withdrawn on d1: its anonymous visit is nobody's lead any more.
    withdraw = ev("c1", Kind.CONSENT_CHANGED, 3_000, tracking=False)
    insert_rows(client, clickhouse_db, rows_for_all([withdraw]))
    refresh_paths(client, clickhouse_db, margin_seconds=0)
    assert [r[:3] for r in _rows(client, JOURNEYS, clickhouse_db)] == [
        ("L1", "L1", ["f1"]),
        ("anon:d1", "", ["v1"]),
    ]


def test_a_mark_that_shows_up_late_is_read_again(client: Any, clickhouse_db: str) -> None:
    migrate(client, clickhouse_db)
    insert_rows(client, clickhouse_db, rows_for_all(scenario.events()[:2]))
    refresh_paths(client, clickhouse_db, margin_seconds=60)
    assert refresh_paths(client, clickhouse_db, margin_seconds=60).persons == 0
    # A touch whose mark carries a time before the last refresh (its insert committed late
    # on a server): written as the materialized views would have written it.
    client.command(
        f"INSERT INTO {clickhouse_db}.touch_log VALUES "
        f"('ws1', 'anon:a1', '', 'a1', {scenario.at(0.5)}, 'late', 'referral', '')"
    )
    client.command(
        f"INSERT INTO {clickhouse_db}.path_marks "
        "SELECT 'ws1', '', 'a1', now64(6, 'UTC') - INTERVAL 30 SECOND"
    )
    assert refresh_paths(client, clickhouse_db, margin_seconds=60).persons == 1
    journeys = _rows(client, JOURNEYS, clickhouse_db)
    assert ("anon:a1", "", ["e1", "late", "e2"]) in [r[:3] for r in journeys]


def test_delivering_twice_leaves_the_paths_as_they_were(client: Any, clickhouse_db: str) -> None:
    migrate(client, clickhouse_db)
    insert_rows(client, clickhouse_db, rows_for_all(scenario.everything()))
    refresh_paths(client, clickhouse_db, margin_seconds=0)
    before = (_rows(client, JOURNEYS, clickhouse_db), _rows(client, CONVERSIONS, clickhouse_db))
    insert_rows(client, clickhouse_db, rows_for_all(scenario.everything()))
    assert refresh_paths(client, clickhouse_db, margin_seconds=0).persons > 0
    after = (_rows(client, JOURNEYS, clickhouse_db), _rows(client, CONVERSIONS, clickhouse_db))
    assert after == before


def test_a_read_only_reader_reports_the_projectors_paths_and_says_what_is_newer(
    clickhouse_session: Any, clickhouse_db: str, serve_engine: Any
) -> None:
    import json

    from click.testing import CliRunner

    from leadflow.cli.main import cli

    migrate(clickhouse_session, clickhouse_db)
    insert_rows(clickhouse_session, clickhouse_db, rows_for_all(scenario.everything()))
    refresh_paths(clickhouse_session, clickhouse_db, margin_seconds=0)  # the projector's
    late = scenario.ev("late", Kind.VISIT, 11, lead="L1", channel="referral")
    insert_rows(clickhouse_session, clickhouse_db, rows_for_all([late]))
    with serve_engine(clickhouse_db) as serving:
        report = CliRunner().invoke(
            cli,
            ["report", "attribution", "--model", "linear", "--database", clickhouse_db,
             "--format", "json"],
            env=serving.app.settings.to_env(),
        )  # fmt: skip
    assert report.exit_code == 0, report.output
    # The interface's own log lines (the refused insert) share the captured stdout.
    out = json.loads(report.output[report.output.index('{\n  "title"') :])
    # The won deal's five touches as the projector last refreshed them; the late referral
    # touch is not in them yet, and the note says so.
    assert {r["channel"]: r["conversions"] for r in out["rows"]} == {
        "direct": 0.4, "email": 0.2, "organic_search": 0.2, "paid_search": 0.2,
    }  # fmt: skip
    assert "read-only connection" in out["notes"][0]
    assert "1 people changed since" in out["notes"][0]
