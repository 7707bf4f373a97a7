"""The model-health view (migration 6) against figures worked out by hand, on chdb and HTTP.

Day 0 is 2026-01-01 UTC. Each workspace's "now" is its newest score; with the defaults
(window 90 days, horizon 30) the window is [now - 120 d, now - 30 d).

Workspace ``wa`` (now = day 200, window [80, 170)):
  a1 0.10 at day 99 (linear@10), never converts                -> negative
  a2 0.40 at day 100 (linear@11), sql at day 140 (40 d later)  -> negative (past the horizon)
  a3 0.35 at day 100 (linear@11), sql at day 110               -> positive
  a4 0.80 at day 105 (linear@12), sql at day 106               -> positive
  left out: a4's score made by its converting event (day 106, 0.05), a4's score as an sql
  lead (day 107), a1's score at day 50 (before the window), a score without a model
  score, and the clock score at day 200 (labels not known yet).
  AUC (Mann-Whitney): positives 0.35, 0.80 vs negatives 0.10, 0.40: 0.35 beats 0.10 only,
  0.80 beats both: 3/4 = 0.75. ECE: bins 1, 3, 4, 8 hold one score each:
  (|0.10 - 0| + |0.35 - 1| + |0.40 - 0| + |0.80 - 1|) / 4 = 1.35 / 4 = 0.3375.
Workspace ``wb`` (now = day 150, window [30, 120)): 19 leads scored 0.2 at day 40 and one
  at day 85, none converts -> one_class and few_labels, AUC not measurable, ECE 0.2. The one
  at day 85 is called a3, whose namesake in ``wa`` converts 25 days later: no label crosses
  workspaces; and day 40 is outside wa's window: each workspace has its own now.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from leadflow.cli.main import cli
from leadflow.demo import model_eval
from leadflow.demo.simulator.generator import SimConfig, Simulation
from leadflow.processors.derived import LeadScored, Stage, StageChanged, derived_id
from leadflow.processors.events import Event, Kind
from leadflow.processors.model import ModelRegistry, auc_exact, ece
from leadflow.processors.policy_load import load_default_policy
from leadflow.sinks import reports
from leadflow.sinks.migrations import migrate
from leadflow.sinks.projection import Rows, dead_letter_rows, rows_for_all
from leadflow.sinks.projector import insert_rows
from tests.integration.sinks.test_analytics import cli_client  # noqa: F401 (a fixture)

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def score(
    ws: str, lead: str, day: float, p: float | None, version: str = "linear@11",
    stage: Stage = Stage.MQL, tag: str = "",
) -> LeadScored:  # fmt: skip
    return LeadScored(
        score_id=derived_id(ws, lead, day, tag),
        workspace_id=ws,
        lead_id=lead,
        occurred_at=T0 + int(day * DAY),
        fit_score=10.0,
        engagement_score=5.0,
        model_score=p,
        model_version=version if p is not None else None,
        top_rules=(),
        cause_event_id=f"e-{lead}-{day}",
        stage=stage,
    )


def to_sql(ws: str, lead: str, day: float) -> StageChanged:
    return StageChanged(
        transition_id=derived_id(ws, lead, "sql"),
        workspace_id=ws,
        lead_id=lead,
        from_stage=Stage.MQL,
        to_stage=Stage.SQL,
        occurred_at=T0 + int(day * DAY),
        reason="demo_request",
        cause_event_id=f"c-{lead}",
        sequence=3,
    )


def world() -> list[object]:
    wa: list[object] = [
        score("wa", "a1", 99, 0.10, "linear@10"),
        score("wa", "a2", 100, 0.40),
        score("wa", "a3", 100, 0.35),
        score("wa", "a4", 105, 0.80, "linear@12"),
        to_sql("wa", "a2", 140),
        to_sql("wa", "a3", 110),
        to_sql("wa", "a4", 106),
        score("wa", "a4", 106, 0.05, "linear@12"),  # made by the converting event
        score("wa", "a4", 107, 0.90, "linear@12", stage=Stage.SQL),  # no longer open
        score("wa", "a1", 50, 0.99, "linear@1"),  # before the window
        score("wa", "a5", 100, None),  # no model
        score("wa", "clock", 200, 0.5, "linear@20", stage=Stage.LEAD),
    ]
    wb: list[object] = [score("wb", f"b{i}", 40, 0.2, "linear@0") for i in range(19)]
    wb += [score("wb", "a3", 85, 0.2, "linear@0"), score("wb", "clock", 150, 0.5, "linear@0")]
    return wa + wb


@pytest.fixture
def db(client: Any, clickhouse_db: str) -> str:
    migrate(client, clickhouse_db)
    insert_rows(client, clickhouse_db, rows_for_all(world()))
    return clickhouse_db


def by_workspace(report: reports.Report) -> dict[str, dict[str, Any]]:
    return {row["workspace"]: row for row in report.as_dicts()}


def test_auc_ece_balance_and_warnings_by_hand(client: Any, db: str) -> None:
    rows = by_workspace(reports.model_health(client, db))
    a, b = rows["wa"], rows["wb"]
    assert set(rows) == {"wa", "wb"}
    versions = (a["model"], a["first_version"], a["last_version"])
    assert versions == ("linear", "linear@10", "linear@12")
    assert (a["examples"], a["positives"], a["negatives"]) == (4, 2, 2)
    assert a["positive_rate"] == 0.5
    assert a["auc"] == pytest.approx(0.75)
    assert a["ece"] == pytest.approx(0.3375)
    assert a["warnings"] == ["few_labels"]  # 2 of a class < the policy's 30
    assert str(a["window_from"])[:10] == "2026-03-22"  # day 80
    assert str(a["window_to"])[:10] == "2026-06-20"  # day 170
    assert (b["examples"], b["positives"], b["negatives"]) == (20, 0, 20)
    assert b["auc"] is None
    assert b["ece"] == pytest.approx(0.2)
    assert b["warnings"] == ["one_class", "few_labels"]


def test_min_labels_and_window_are_parameters(client: Any, db: str) -> None:
    a = by_workspace(reports.model_health(client, db, min_labels=2))["wa"]
    assert a["warnings"] == []
    # A 200-day window reaches a1's day-50 score (0.99, negative): AUC (0 + 2 + ... ) by hand:
    # negatives 0.10, 0.40, 0.99; positive 0.35 beats 1, 0.80 beats 2: 3/6 = 0.5.
    wide = by_workspace(reports.model_health(client, db, window_days=200))["wa"]
    assert (wide["examples"], wide["auc"]) == (5, pytest.approx(0.5))
    # A 45-day horizon: a2's sql 40 days after its score is now a positive: positives
    # 0.35, 0.40, 0.80 vs negative 0.10 -> AUC 1.0; window [155 - 90, 155) holds them all.
    long = by_workspace(reports.model_health(client, db, horizon_days=45))["wa"]
    assert (long["positives"], long["negatives"], long["auc"]) == (3, 1, pytest.approx(1.0))


def test_one_workspace_only(client: Any, db: str) -> None:
    only = reports.model_health(client, db, workspace="wb")
    assert [r["workspace"] for r in only.as_dicts()] == ["wb"]
    first = reports.health_warnings(only)[0]
    assert first.startswith("WARNING model health wb (linear): one_class")


def test_nothing_labelled_yet_is_said(client: Any, clickhouse_db: str) -> None:
    migrate(client, clickhouse_db)
    insert_rows(client, clickhouse_db, rows_for_all([score("wc", "c1", 10, 0.3)]))
    report = reports.model_health(client, clickhouse_db)
    (row,) = report.as_dicts()
    assert (row["workspace"], row["examples"], row["auc"], row["ece"]) == ("wc", 0, None, None)
    assert row["warnings"] == ["few_labels"]
    assert "nothing labelled yet in wc" in report.notes[-1]


@pytest.mark.usefixtures("cli_client")
def test_cli_prints_health_and_warns_on_stderr(db: str) -> None:
    result = CliRunner().invoke(
        cli, ["report", "model-health", "--database", db, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["workspace"]: r for r in json.loads(result.stdout)["rows"]}
    assert (rows["wa"]["auc"], rows["wb"]["warnings"]) == (0.75, ["one_class", "few_labels"])
    warned = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert [line.split(":")[0] for line in warned] == [
        "WARNING model health wa (linear)",
        "WARNING model health wb (linear)",
        "WARNING model health wb (linear)",
    ]
    assert "one_class: 0 positives, 20 negatives" in warned[1]


def reference_health(
    scores: list[LeadScored], transitions: list[StageChanged], horizon_days: int, window_days: int
) -> tuple[int, int, float | None, float | None]:
    """The view's definition written again in Python: (examples, positives, AUC, ECE)."""
    now = max(s.occurred_at for s in scores)
    start, end = now - (horizon_days + window_days) * DAY, now - horizon_days * DAY
    converted: dict[str, list[int]] = {}
    for t in transitions:
        if t.to_stage in (Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER):
            converted.setdefault(t.lead_id, []).append(t.occurred_at)
    pairs = []
    for s in scores:
        if s.model_score is None or s.stage not in (Stage.LEAD, Stage.MQL, Stage.RECYCLED):
            continue
        if not start <= s.occurred_at < end:
            continue
        after = [c for c in converted.get(s.lead_id, []) if c >= s.occurred_at]
        first = min(after, default=None)
        if first == s.occurred_at:
            continue  # made by the converting event
        pairs.append(
            (s.model_score, first is not None and first < s.occurred_at + horizon_days * DAY)
        )
    return len(pairs), sum(y for _, y in pairs), auc_exact(pairs), ece(pairs)


def test_view_agrees_with_python_on_a_simulated_market(client: Any, clickhouse_db: str) -> None:
    # A small northwind run of model-eval's in-process replay (scores, decay re-scores,
    # transitions as the worker emits them), projected and graded by the view; the same
    # figures computed in Python from the objects must agree.
    policy = load_default_policy()
    config = SimConfig(people=400, days=150, seed=3, world="northwind")
    events = (model_eval._mapped(m) for m in Simulation(config).messages())
    run = model_eval.replay(events, policy, ModelRegistry(lambda _ws: policy))
    figures = model_eval.clickhouse_health(run, client, clickhouse_db, policy, window_days=60)
    scores = [s for lead in run.scores.values() for s in lead]
    n, pos, auc, calibration = reference_health(scores, run.transitions, 30, 60)
    assert min(pos, n - pos) > 10  # both classes, so AUC is measured
    assert (figures["ch_examples"], figures["ch_positives"]) == (n, pos)
    assert figures["ch_auc"] == pytest.approx(auc, abs=1e-4)
    assert figures["ch_ece"] == pytest.approx(calibration, abs=1e-4)


# -- refused inputs (migration 7) -----------------------------------------------------------
# Receive times are days after T0. Workspace wa (has model scores): 10 events stored at days
# 80..83.6 (every 0.4 day), refused by the collector 3 times (two messages with a bad
# company_size, one bad revenue) and by the worker once, all at day 84; one projector refusal
# (not a model input) and one collector refusal at day 50 (outside the 7 days ending at 84).
# refused share = (3 + 1) / (10 + 3) = 0.3077: no warning.
# Workspace wd (no score yet): 2 events, 5 collector refusals at day 100 -> 5 / 7 = 0.7143:
# a row with model '' and inputs_refused.


def refusal(n: int, ws: str, day: float, stage: str = "collector", fields: tuple[str, ...] = ()):
    at = T0 + int(day * DAY)
    if stage == "worker":
        headers = [("leadflow.reason", b"InvalidEvent: event e9: bad"),
                   ("leadflow.source.topic", b"leadflow.events")]  # fmt: skip
        key = json.dumps([ws, "a1"]).encode()
    else:
        error = json.dumps([{"path": f"batch[{n}].{f}", "message": "ada@x.io"} for f in fields])
        headers = [("reason", b"invalid"), ("stage", stage.encode()),
                   ("group", ws.encode() if stage == "collector" else b"leadflow-projector"),
                   ("source.topic", b"/v1/batch"), ("error", error.encode())]  # fmt: skip
        key = json.dumps([ws, "a1"]).encode() if stage == "projector" else b"ada@x.io"
    return dead_letter_rows(0, n, key, headers, at, 100)


def inputs() -> Rows:
    events = [
        Event(f"ea{i}", Kind.VISIT, "wa", T0, T0 + int((80 + 0.4 * i) * DAY), f"d{i}")
        for i in range(10)
    ]
    events += [Event(f"ed{i}", Kind.VISIT, "wd", T0, T0 + 99 * DAY, f"d{i}") for i in range(2)]
    rows = rows_for_all(events)
    for r in (
        refusal(1, "wa", 84, fields=("traits.company_size",)),
        refusal(2, "wa", 84, fields=("traits.company_size", "properties.revenue")),
        refusal(3, "wa", 84, fields=("properties.revenue",)),
        refusal(4, "wa", 84, "worker"),
        refusal(5, "wa", 84, "projector"),
        refusal(6, "wa", 50, fields=("traits.company_size",)),
        *(refusal(10 + i, "wd", 100, fields=("traits.company_size",)) for i in range(5)),
    ):
        rows.extend(r)
    return rows


@pytest.fixture
def db_refused(db: str, client: Any) -> str:
    insert_rows(client, db, inputs())
    return db


def test_refused_inputs_share_and_warning(client: Any, db_refused: str) -> None:
    rows = by_workspace(reports.model_health(client, db_refused))
    a, d = rows["wa"], rows["wd"]
    assert (a["inputs_stored"], a["inputs_refused"]) == (10, 4)
    assert a["refused_share"] == pytest.approx(0.3077)
    assert a["warnings"] == ["few_labels"]  # the model's warnings as before, no inputs_refused
    assert (a["examples"], a["auc"]) == (4, pytest.approx(0.75))
    assert (d["model"], d["examples"], d["auc"], d["window_from"]) == ("", 0, None, None)
    assert (d["inputs_stored"], d["inputs_refused"]) == (2, 5)
    assert d["refused_share"] == pytest.approx(0.7143)
    assert d["warnings"] == ["inputs_refused"]
    # A 60-day refusal window reaches wa's day-50 refusal: 5 / (10 + 4).
    wide = by_workspace(reports.model_health(client, db_refused, refused_days=60))["wa"]
    assert (wide["inputs_refused"], wide["refused_share"]) == (5, pytest.approx(0.3571))
    assert rows["wb"]["refused_share"] is None  # nothing received: not measurable
    (line,) = [w for w in reports.health_warnings(reports.model_health(
        client, db_refused, workspace="wd"))]  # fmt: skip
    assert line.startswith("WARNING model health wd (no model yet): inputs_refused: 5 inbound")


def test_refusals_by_field_without_values(client: Any, db_refused: str) -> None:
    by_field = client.query(
        f"SELECT workspace_id, stage, reason, field, sum(refused) FROM {db_refused}.v_refusals "
        "GROUP BY ALL ORDER BY ALL"
    ).result_rows
    assert [tuple(r) for r in by_field] == [
        ("wa", "collector", "invalid", "properties.revenue", 2),
        ("wa", "collector", "invalid", "traits.company_size", 3),
        ("wa", "projector", "invalid", "", 1),
        ("wa", "worker", "InvalidEvent", "", 1),
        ("wd", "collector", "invalid", "traits.company_size", 5),
    ]
    stored = client.query(f"SELECT * FROM {db_refused}.v_dead_letters").result_rows
    assert "ada@x.io" not in repr(stored)  # neither the key nor the error message is kept
    assert "e9" not in repr(stored)  # the worker's message neither


@pytest.mark.usefixtures("cli_client")
def test_cli_warns_on_refused_inputs(db_refused: str) -> None:
    result = CliRunner().invoke(
        cli, ["report", "model-health", "--database", db_refused, "--workspace", "wd"]
    )
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warned) == 1
    assert "inputs_refused: 5 inbound messages refused, 2 stored" in warned[0]
