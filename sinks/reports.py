"""Report queries over the analyst views, parameterised by date range and model.

Every function takes a clickhouse-connect client and the database, binds its parameters
server-side (``{name:Type}``; nothing user-given is pasted into SQL) and returns a
:class:`Report`: a title, column names, rows and plain-language notes. The CLI prints
reports as a table, JSON or CSV; tests compare them with hand-computed numbers.

Date ranges are half-open, ``[date_from, date_to)``, in UTC, on event time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from leadflow.processors.errors import LeadflowError
from leadflow.sinks.attribution import (
    DATA_DRIVEN_MODELS,
    KEYS,
    RULE_MODELS,
    effects_by_workspace,
    markov_credit,
    markov_path_credit,
    period_totals,
    rule_sql,
    shapley_rows,
    sorted_rows,
)
from leadflow.sinks.markov import ORDERS
from leadflow.sinks.paths import refresh_for_reading
from leadflow.sinks.shapley import MAX_PLAYERS, OTHER
from leadflow.sinks.tables import check_identifier
from leadflow.sinks.views import REFUSED_SHARE_WARN

MODELS = (*RULE_MODELS, *DATA_DRIVEN_MODELS)
CONVERSIONS = ("lead", "mql", "sql", "opportunity", "customer", "won")
FUNNEL = ("visitor", "lead", "mql", "sql", "opportunity", "customer")
DIMENSIONS = ("source", "industry", "size_band", "cohort_month")


# Every report is for one workspace (tenant) when one is given, else over all of them.
WORKSPACE = "({workspace:String} = '' OR workspace_id = {workspace:String})"


class ReportError(LeadflowError):
    """A report was asked for with parameters it does not support."""


@dataclass(frozen=True, slots=True)
class Report:
    """A report's result: what the CLI prints and the tests check.

    No report shows ``inf`` or ``NaN``: such a value (amounts stored before bounds were
    enforced, summed past the float range) is shown empty and a note says how many and how
    to clean the data.

    Example:
        >>> r = Report("KPIs", ("source", "revenue"), [("ads", math.inf), ("seo", 2.0)])
        >>> r.rows, r.notes[0][:40]
        ([('ads', None), ('seo', 2.0)], '1 value(s) not finite (inf or NaN) shown')
    """

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        bad = 0
        rows: list[tuple[Any, ...]] = []
        for row in self.rows:
            if any(isinstance(v, float) and not math.isfinite(v) for v in row):
                bad += sum(1 for v in row if isinstance(v, float) and not math.isfinite(v))
                row = tuple(None if isinstance(v, float) and not math.isfinite(v) else v
                            for v in row)  # fmt: skip
            rows.append(row)
        if bad:
            # Frozen: the cleaned rows replace the given ones once, at construction.
            object.__setattr__(self, "rows", rows)
            note = (
                f"{bad} value(s) not finite (inf or NaN) shown empty: amounts outside the "
                "bounds are in the data; rebuild with `leadflow replay` (docs/operations.md)"
            )
            object.__setattr__(self, "notes", (*self.notes, note))

    def as_dicts(self) -> list[dict[str, Any]]:
        """Rows as ``{column: value}``."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def epoch_ms(day: date) -> int:
    """UTC midnight of ``day`` as epoch milliseconds.

    Example:
        >>> epoch_ms(date(2026, 1, 1))
        1767225600000
    """
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Period:
    """A report's half-open day range ``[start, end)`` in UTC, and how its title shows it."""

    start: date
    end: date
    label: str

    @property
    def from_ms(self) -> int:
        """The start as epoch milliseconds."""
        return epoch_ms(self.start)

    @property
    def to_ms(self) -> int:
        """The (exclusive) end as epoch milliseconds."""
        return epoch_ms(self.end)

    def params(self, workspace: str | None) -> dict[str, Any]:
        """The range and workspace parameters every report query binds."""
        return {"from_ms": self.from_ms, "to_ms": self.to_ms, "workspace": workspace or ""}


# The data's span when a report is asked for without dates: every event and transition.
SPAN_SQL = """
SELECT min(t), max(t)
FROM
(
    SELECT occurred_at AS t FROM $db.events WHERE $ws
    UNION ALL
    SELECT occurred_at AS t FROM $db.stage_transitions WHERE $ws
)
"""


def _period(
    client: Any,
    database: str,
    date_from: date | None,
    date_to: date | None,
    workspace: str | None,
) -> Period:
    """The period of a report: the dates given, else the days the data spans (``--to`` exclusive).

    Without a bound, the first (or the day after the last) day with an event or transition in
    the workspace stands in, and the title says so; a database without data gives the one day
    of ``date_from`` (or 1970-01-01) and the title says "no data".
    """
    if date_from is not None and date_to is not None:
        if date_to <= date_from:
            raise ReportError(f"empty date range: {date_from} .. {date_to}")
        return Period(date_from, date_to, f"{date_from}..{date_to}")
    first, last = _query(client, SPAN_SQL, database, {"workspace": workspace or ""})[0]
    if not int(last):
        start = date_from or (date_to - timedelta(days=1) if date_to else date(1970, 1, 1))
        end = date_to or start + timedelta(days=1)
        return Period(start, end, f"{start}..{end} (no data)")
    start = date_from or _day(int(first))
    end = date_to or _day(int(last)) + timedelta(days=1)
    if end <= start:
        raise ReportError(f"empty date range: {start} .. {end}")
    return Period(
        start,
        end,
        f"{start}..{end} ({'all data' if date_from is None and date_to is None else 'data span'})",
    )


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


# Measured on chdb 4.4 (ClickHouse 26.9): merging the touch-window filter into the join makes
# the attribution views 40-300x slower (5-40 s instead of ~0.1 s on 20k events); turning
# that one plan optimisation off restores the fast plan. Sent only to servers that know it.
FAST_PLAN = {"query_plan_merge_expression_into_join": 0}


def query_settings(client: Any) -> dict[str, Any]:
    """The plan settings for report queries that this server understands.

    Example:
        >>> class Old:
        ...     server_settings: dict[str, object] = {}
        >>> query_settings(Old())
        {}
    """
    known = getattr(client, "server_settings", None) or {}
    return {k: v for k, v in FAST_PLAN.items() if k in known}


def _query(
    client: Any, sql: str, database: str, params: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    db = check_identifier(database, "database")
    sql = sql.replace("$ws_d", WORKSPACE.replace("workspace_id", "d.workspace_id"))
    result = client.query(
        sql.replace("$ws", WORKSPACE).replace("$db", db),
        parameters=dict(params),
        settings=query_settings(client),
    )
    return [tuple(r) for r in result.result_rows]


def _ratio(a: float, b: float) -> float | None:
    return None if not b else a / b


# -- attribution -------------------------------------------------------------------------------


def attribution(
    client: Any,
    database: str,
    *,
    model: str,
    conversion: str,
    date_from: date | None = None,
    date_to: date | None = None,
    by: str = "channel",
    workspace: str | None = None,
    lookback_days: int = 90,
    half_life_days: float = 7.0,
    order: int = 1,
    learn_from: date | None = None,
    learn_to: date | None = None,
) -> Report:
    """Credit for ``conversion``s in the period, per channel or campaign, under ``model``.

    ``conversions`` is fractional credit (it sums to the attributed conversions), and
    ``revenue`` the same credit of each conversion's revenue (won deals only). The
    data-driven models (``markov``, ``markov_path``, ``shapley``) learn from the period's
    journeys in the same workspace (each workspace on its own when none is given), or from
    ``learn_from``..``learn_to`` when given (it must contain the period). ``order`` is the
    Markov chain's order (1-4). Definitions: docs/analytics.md, "Attribution".
    """
    if model not in MODELS:
        raise ReportError(f"unknown model {model!r}; one of {', '.join(MODELS)}")
    if conversion not in CONVERSIONS:
        raise ReportError(f"unknown conversion {conversion!r}; one of {', '.join(CONVERSIONS)}")
    if by not in KEYS:
        raise ReportError("attribution is by 'channel' or 'campaign'")
    if order not in ORDERS:
        raise ReportError(f"order must be one of {', '.join(map(str, ORDERS))}")
    stale = refresh_for_reading(client, database)
    period = _period(client, database, date_from, date_to, workspace)
    learn = _learning_window(client, database, period, learn_from, learn_to, workspace)
    params: dict[str, Any] = {
        **period.params(workspace),
        "conversion": conversion,
        "lookback_days": lookback_days,
        "half_life_days": float(half_life_days),
        "learn_from_ms": learn.from_ms,
        "learn_to_ms": learn.to_ms,
    }

    def query(sql: str, bound: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return _query(client, sql, database, bound)

    totals = period_totals(query, params)
    widened = (learn.from_ms, learn.to_ms) != (period.from_ms, period.to_ms)
    notes: list[str] = [stale] if stale else []
    if model in RULE_MODELS:
        rows = [(str(k), float(c), float(r)) for k, c, r in query(rule_sql(model, by), params)]
    elif model == "markov":
        rows = sorted_rows(
            markov_credit(query, params, order=order, by=by, totals=totals if widened else None)
        )
    elif model == "markov_path":
        rows = markov_path_credit(query, params, order=order, by=by)
    else:
        period_params = {**params, "learn_from_ms": period.from_ms, "learn_to_ms": period.to_ms}
        credit_by_key, pooled = shapley_rows(query, params, by, period_params if widened else None)
        rows = sorted_rows(credit_by_key)
        if pooled:
            notes.append(
                f"more than {MAX_PLAYERS} {by}s: {', '.join(pooled)} are credited together "
                f"as {OTHER} (Shapley values are exact for up to {MAX_PLAYERS} players)"
            )
    if model in DATA_DRIVEN_MODELS:
        notes.append(
            f"learnt from journeys {learn.label} per workspace"
            + (f", Markov order {order}" if model != "shapley" else "")
        )
    if totals.unattributed:
        notes.insert(
            0,
            f"{totals.unattributed} {conversion} conversion(s) in range had no touch within "
            f"{lookback_days} days and are not attributed",
        )
    name = f"{model} (order {order})" if model.startswith("markov") and order != 1 else model
    return Report(
        f"attribution: {name}, {conversion}, {period.label} by {by}",
        (by, "conversions", "revenue"),
        rows,
        tuple(notes),
    )


def markov_effects(
    client: Any,
    database: str,
    conversion: str,
    lookback_days: int = 90,
    workspace: str | None = None,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    order: int = 1,
) -> Report:
    """Removal effects per workspace and channel, learnt from the period's journeys."""
    if conversion not in CONVERSIONS:
        raise ReportError(f"unknown conversion {conversion!r}; one of {', '.join(CONVERSIONS)}")
    stale = refresh_for_reading(client, database)
    period = _period(client, database, date_from, date_to, workspace)
    params = {
        **period.params(workspace),
        "conversion": conversion,
        "lookback_days": lookback_days,
        "learn_from_ms": period.from_ms,
        "learn_to_ms": period.to_ms,
    }
    effects = effects_by_workspace(
        lambda sql, bound: _query(client, sql, database, bound), params, order
    )
    rows = [
        (w, c, e, v)
        for w in sorted(effects)
        for c, (e, v) in sorted(effects[w].items(), key=lambda x: (-x[1][0], x[0]))
    ]
    return Report(
        f"removal effects: {conversion}, order {order}, {period.label}",
        ("workspace", "channel", "removal_effect", "value_removal_effect"),
        rows,
        (stale,) if stale else (),
    )


def _learning_window(
    client: Any,
    database: str,
    period: Period,
    learn_from: date | None,
    learn_to: date | None,
    workspace: str | None,
) -> Period:
    if learn_from is None and learn_to is None:
        return period
    learn = _period(
        client,
        database,
        learn_from if learn_from is not None else period.start,
        learn_to if learn_to is not None else period.end,
        workspace,
    )
    if learn.from_ms > period.from_ms or learn.to_ms < period.to_ms:
        raise ReportError(
            f"the learning window {learn.label} must contain the report period {period.label}"
        )
    return learn


# -- funnel --------------------------------------------------------------------------------

FUNNEL_SQL = """
SELECT
    (SELECT uniqExact(person_id) FROM $db.v_touches
     WHERE occurred_at >= {from_ms:Int64} AND occurred_at < {to_ms:Int64} AND $ws)
        AS visitors,
    countIf(max_rank >= 1) AS leads,
    countIf(max_rank >= 2) AS mqls,
    countIf(max_rank >= 3) AS sqls,
    countIf(max_rank >= 4) AS opportunities,
    countIf(max_rank >= 5) AS customers
FROM $db.v_lead_funnel
WHERE created_at >= {from_ms:Int64} AND created_at < {to_ms:Int64} AND $ws
"""

CAUSES = {
    "lead": "low lead volume: visitors rarely become leads (offers, forms or traffic quality)",
    "mql": "high lead volume but low MQL rate: leads are a poor fit or do not engage",
    "sql": "high MQL volume but low SQL rate: sales rejects MQLs (threshold or follow-up)",
    "opportunity": "high SQL volume but low opportunity rate: SQLs stall before an opportunity",
    "customer": "high SQL volume but low close rate: opportunities are lost (see lost reasons)",
}


def funnel(
    client: Any,
    database: str,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    workspace: str | None = None,
) -> Report:
    """Counts per stage for the leads created in the range, the step rates, the worst leak.

    A lead counts at a stage if it ever reached that stage or a later one. Visitors are the
    distinct people (identified or not) with a touch in the range.
    """
    period = _period(client, database, date_from, date_to, workspace)
    counts = _query(client, FUNNEL_SQL, database, period.params(workspace))[0]
    rows: list[tuple[Any, ...]] = []
    worst: tuple[float, str, int, int] | None = None
    for i, stage in enumerate(FUNNEL):
        count = int(counts[i])
        rate = _ratio(count, int(counts[i - 1])) if i else None
        rows.append((stage, count, rate, (int(counts[i - 1]) - count) if i else None))
        if rate is not None and (worst is None or rate < worst[0]):
            worst = (rate, stage, int(counts[i - 1]), count)
    notes: tuple[str, ...] = ()
    if worst is not None:
        rate, stage, before, after = worst
        previous = FUNNEL[FUNNEL.index(stage) - 1]
        notes = (
            f"largest drop-off: {previous} -> {stage} ({after} of {before}, {rate:.1%}); "
            f"likely cause: {CAUSES[stage]}",
        )
    elif int(counts[0]) == 0:
        notes = ("no traffic in range",)
    return Report(
        f"funnel: leads created {period.label}",
        ("stage", "count", "rate_from_previous", "lost_from_previous"),
        rows,
        notes,
    )


def largest_drop_off(report: Report) -> str | None:
    """The stage with the lowest rate from its previous stage (``None`` without data)."""
    rated = [(row[2], row[0]) for row in report.rows if row[2] is not None]
    return min(rated)[1] if rated else None


# -- velocity ------------------------------------------------------------------------------

TIME_IN_STAGE_SQL = """
SELECT stage, {by:Identifier} AS dim, count() AS stays,
       avg(duration_days) AS mean_days,
       quantileExact(0.5)(duration_days) AS p50_days,
       quantileExact(0.9)(duration_days) AS p90_days
FROM $db.v_stage_durations
WHERE exited_at IS NOT NULL AND entered_at >= {from_ms:Int64} AND entered_at < {to_ms:Int64}
  AND $ws
GROUP BY stage, dim
ORDER BY multiIf(stage = 'lead', 1, stage = 'mql', 2, stage = 'sql', 3, stage = 'opportunity', 4,
                 stage = 'customer', 5, 6), stage, dim
"""

STAGE_CONVERSION_SQL = """
SELECT {by:Identifier} AS dim,
       countIf(max_rank >= 1) AS leads, countIf(max_rank >= 2) AS mqls,
       countIf(max_rank >= 3) AS sqls, countIf(max_rank >= 4) AS opportunities,
       countIf(max_rank >= 5) AS customers
FROM $db.v_lead_funnel
WHERE created_at >= {from_ms:Int64} AND created_at < {to_ms:Int64} AND $ws
GROUP BY dim ORDER BY dim
"""

SALES_CYCLE_SQL = """
SELECT {by:Identifier} AS dim, count() AS customers,
       avg((customer_at - created_at) / 86400000) AS mean_days,
       quantileExact(0.5)((customer_at - created_at) / 86400000) AS p50_days,
       quantileExact(0.9)((customer_at - created_at) / 86400000) AS p90_days
FROM $db.v_lead_funnel
WHERE customer_at > 0 AND customer_at >= {from_ms:Int64} AND customer_at < {to_ms:Int64}
  AND $ws
GROUP BY dim ORDER BY dim
"""


def _dimension(by: str | None) -> str:
    if by is None:
        return "'all'"
    if by not in DIMENSIONS:
        raise ReportError(f"unknown dimension {by!r}; one of {', '.join(DIMENSIONS)}")
    return by


def _query_by(
    client: Any,
    sql: str,
    database: str,
    by: str | None,
    period: Period,
    workspace: str | None,
) -> list[tuple[Any, ...]]:
    """Run a velocity query split by the dimension ``by`` (or not split), over a period."""
    return _query(
        client, sql.replace("{by:Identifier}", _dimension(by)), database, period.params(workspace)
    )


def time_in_stage(
    client: Any,
    database: str,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    by: str | None = None,
    workspace: str | None = None,
) -> Report:
    """Mean, p50 and p90 days spent in each stage (stays entered in the range and ended)."""
    period = _period(client, database, date_from, date_to, workspace)
    rows = _query_by(client, TIME_IN_STAGE_SQL, database, by, period, workspace)
    return Report(
        f"time in stage (days), stays entered {period.label}",
        ("stage", by or "all", "stays", "mean_days", "p50_days", "p90_days"),
        [(s, str(d), int(n), float(m), float(a), float(b)) for s, d, n, m, a, b in rows],
    )


def stage_conversion(
    client: Any,
    database: str,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    by: str | None = None,
    workspace: str | None = None,
) -> Report:
    """Stage-to-stage conversion of the leads created in the range, per dimension value."""
    period = _period(client, database, date_from, date_to, workspace)
    out = []
    for d, leads, mqls, sqls, opps, customers in _query_by(
        client, STAGE_CONVERSION_SQL, database, by, period, workspace
    ):
        out.append(
            (str(d), int(leads), _ratio(mqls, leads), _ratio(sqls, mqls), _ratio(opps, sqls),
             _ratio(customers, opps), _ratio(customers, leads))
        )  # fmt: skip
    return Report(
        f"stage conversion, leads created {period.label}",
        (by or "all", "leads", "lead_to_mql", "mql_to_sql", "sql_to_opportunity",
         "opportunity_to_customer", "lead_to_customer"),
        out,
    )  # fmt: skip


def sales_cycle(
    client: Any,
    database: str,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    by: str | None = None,
    workspace: str | None = None,
) -> Report:
    """Days from lead creation to customer, for customers won in the range."""
    period = _period(client, database, date_from, date_to, workspace)
    rows = _query_by(client, SALES_CYCLE_SQL, database, by, period, workspace)
    return Report(
        f"sales cycle (days), customers won {period.label}",
        (by or "all", "customers", "mean_days", "p50_days", "p90_days"),
        [(str(d), int(n), float(m), float(a), float(b)) for d, n, m, a, b in rows],
    )


# -- KPIs ----------------------------------------------------------------------------------

# "Reached" a stage = entered it or any later one (the funnel's definition): a lead that
# skipped MQL (a demo request makes it an SQL at once) reached MQL when it became an SQL, so
# mql_to_sql cannot exceed 1 through skipped stages. The first time counts.
KPI_COUNTS_SQL = """
SELECT source,
       countIf(created_at >= {from_ms:Int64} AND created_at < {to_ms:Int64}) AS leads,
       countIf(reached_mql > 0 AND reached_mql >= {from_ms:Int64} AND reached_mql < {to_ms:Int64})
           AS mqls,
       countIf(reached_sql > 0 AND reached_sql >= {from_ms:Int64} AND reached_sql < {to_ms:Int64})
           AS sqls,
       countIf(customer_at > 0 AND customer_at >= {from_ms:Int64} AND customer_at < {to_ms:Int64})
           AS customers
FROM
(
    SELECT source, created_at, customer_at,
           -- arrayMin of no time is 0: never reached
           arrayMin(arrayFilter(x -> x > 0, [mql_at, sql_at, opportunity_at, customer_at]))
               AS reached_mql,
           arrayMin(arrayFilter(x -> x > 0, [sql_at, opportunity_at, customer_at])) AS reached_sql
    FROM $db.v_lead_funnel
    WHERE $ws
)
GROUP BY source
"""

KPI_REVENUE_SQL = """
SELECT p.source AS source, sum(d.amount) AS revenue
FROM $db.v_deals AS d
LEFT JOIN $db.v_lead_profile AS p ON p.workspace_id = d.workspace_id AND p.lead_id = d.lead_id
WHERE d.outcome = 'won' AND d.occurred_at >= {from_ms:Int64} AND d.occurred_at < {to_ms:Int64}
  AND $ws_d
GROUP BY source
"""

KPI_COST_SQL = """
SELECT channel AS source, sum(amount) AS cost
FROM $db.v_costs
WHERE date >= toDate(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'))
  AND date < toDate(fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')) AND $ws
GROUP BY source
"""

KPI_COLUMNS = (
    "source", "cost", "leads", "mqls", "sqls", "customers", "revenue", "lead_to_mql",
    "mql_to_sql", "sql_to_close", "cpl", "cost_per_mql", "cost_per_sql", "cac", "ltv_cac",
)  # fmt: skip


def kpis(
    client: Any,
    database: str,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    workspace: str | None = None,
) -> Report:
    """The KPI sheet per source (the lead's first-touch channel) and in total.

    Counts are of leads reaching each stage *within* the range (first time; reaching = entering
    it or any later stage, as in the funnel, so a lead that skipped MQL counts as an MQL when
    it became an SQL), revenue is won
    in the range, cost is spend dated in the range on the same channel. LTV is approximated
    by won revenue per customer (no retention data), so LTV:CAC = revenue / cost.
    """
    period = _period(client, database, date_from, date_to, workspace)
    params = period.params(workspace)
    counts = {
        str(r[0]): [int(v) for v in r[1:]] for r in _query(client, KPI_COUNTS_SQL, database, params)
    }
    revenue = {str(r[0]): float(r[1]) for r in _query(client, KPI_REVENUE_SQL, database, params)}
    cost = {str(r[0]): float(r[1]) for r in _query(client, KPI_COST_SQL, database, params)}
    sources = sorted(set(counts) | set(revenue) | set(cost))
    rows = [
        _kpi_row(s, cost.get(s, 0.0), counts.get(s, [0, 0, 0, 0]), revenue.get(s, 0.0))
        for s in sources
    ]
    total_counts = [sum(counts.get(s, [0, 0, 0, 0])[i] for s in sources) for i in range(4)]
    rows.append(_kpi_row("total", sum(cost.values()), total_counts, sum(revenue.values())))
    return Report(f"KPIs {period.label}", KPI_COLUMNS, rows)


def _kpi_row(source: str, cost: float, counts: Sequence[int], revenue: float) -> tuple[Any, ...]:
    leads, mqls, sqls, customers = counts
    return (
        source, cost, leads, mqls, sqls, customers, revenue,
        _ratio(mqls, leads), _ratio(sqls, mqls), _ratio(customers, sqls),
        _ratio(cost, leads), _ratio(cost, mqls), _ratio(cost, sqls), _ratio(cost, customers),
        _ratio(revenue, cost),
    )  # fmt: skip


# -- lost leads ----------------------------------------------------------------------------

LOST_SQL = """
SELECT kind, from_stage, reason, p.source AS source, p.industry AS industry,
       p.size_band AS size_band, count() AS leads
FROM
(
    SELECT workspace_id, lead_id, toString(to_stage) AS kind, toString(from_stage) AS from_stage,
           reason
    FROM $db.v_stage_transitions
    WHERE to_stage IN ('disqualified', 'recycled') AND $ws
      AND occurred_at >= {from_ms:Int64} AND occurred_at < {to_ms:Int64}
    UNION ALL
    SELECT workspace_id, lead_id, 'deal_lost' AS kind, 'opportunity' AS from_stage, reason
    FROM $db.v_deals
    WHERE outcome = 'lost' AND occurred_at >= {from_ms:Int64} AND occurred_at < {to_ms:Int64}
      AND $ws
) AS l
LEFT JOIN $db.v_lead_profile AS p ON p.workspace_id = l.workspace_id AND p.lead_id = l.lead_id
GROUP BY kind, from_stage, reason, source, industry, size_band
ORDER BY leads DESC, kind, from_stage, reason
"""


def lost_reasons(
    client: Any,
    database: str,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    workspace: str | None = None,
) -> Report:
    """Disqualifications, recycles and lost deals by stage, reason, source and segment."""
    period = _period(client, database, date_from, date_to, workspace)
    rows = _query(client, LOST_SQL, database, period.params(workspace))
    return Report(
        f"lost leads {period.label}",
        ("kind", "from_stage", "reason", "source", "industry", "size_band", "leads"),
        rows,
    )


# -- experiments ---------------------------------------------------------------------------

EXPERIMENT_SQL = """
SELECT x.experiment AS experiment, x.variant AS variant, count() AS exposed,
       countIf(c.first_at > 0 AND c.first_at >= x.exposed_at) AS converted
FROM
(
    SELECT workspace_id, person_id, any(lead_id) AS lead_id, experiment,
           argMin(variant, (occurred_at, event_id)) AS variant, min(occurred_at) AS exposed_at
    FROM $db.v_person_events
    WHERE experiment != '' AND occurred_at >= {from_ms:Int64} AND occurred_at < {to_ms:Int64}
      AND $ws
    GROUP BY workspace_id, person_id, experiment
) AS x
LEFT JOIN
(
    SELECT workspace_id, lead_id, min(occurred_at) AS first_at
    FROM $db.v_conversions WHERE conversion = {conversion:String} AND $ws
    GROUP BY workspace_id, lead_id
) AS c ON c.workspace_id = x.workspace_id AND c.lead_id = x.lead_id AND x.lead_id != ''
GROUP BY experiment, variant
ORDER BY experiment, variant
"""


def two_proportion_z(success_a: int, n_a: int, success_b: int, n_b: int) -> tuple[float, float]:
    """Two-proportion z-test (pooled): ``(z, two-sided p-value)`` of B against A.

    Example:
        >>> z, p = two_proportion_z(10, 100, 20, 100)
        >>> round(z, 4), round(p, 4)
        (1.9803, 0.0477)
    """
    if not n_a or not n_b:
        return 0.0, 1.0
    pooled = (success_a + success_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0
    z = (success_b / n_b - success_a / n_a) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def experiments(
    client: Any,
    database: str,
    *,
    conversion: str,
    date_from: date | None = None,
    date_to: date | None = None,
    workspace: str | None = None,
) -> Report:
    """Conversion per variant, each variant tested against the experiment's first variant.

    A person is exposed to the variant of their first event carrying the experiment, and
    converts if their lead reached ``conversion`` at or after that exposure.
    """
    if conversion not in CONVERSIONS:
        raise ReportError(f"unknown conversion {conversion!r}")
    period = _period(client, database, date_from, date_to, workspace)
    params = {**period.params(workspace), "conversion": conversion}
    control: dict[str, tuple[int, int]] = {}
    out = []
    for experiment, variant, exposed, converted in _query(client, EXPERIMENT_SQL, database, params):
        n, k = int(exposed), int(converted)
        if str(experiment) in control:
            z, p = two_proportion_z(*control[str(experiment)], k, n)
        else:
            control[str(experiment)] = (k, n)
            z, p = 0.0, 1.0
        out.append((str(experiment), str(variant), n, k, _ratio(k, n), z, p))
    return Report(
        f"experiments: {conversion}, {period.label}",
        ("experiment", "variant", "exposed", "converted", "rate", "z_vs_control", "p_value"),
        out,
        ("control = first variant in alphabetical order; p < 0.05 means the difference is "
         "unlikely to be chance (two-proportion z-test; needs enough exposures per variant)",),
    )  # fmt: skip


LEAD_SCORES = """
SELECT s.lead_id,
       argMax(s.fit_score + s.engagement_score, s.occurred_at) AS rule_score,
       argMax(s.model_score, s.occurred_at) AS model_score
FROM $db.v_scores AS s
LEFT JOIN (
    SELECT workspace_id, lead_id, min(occurred_at) AS first_sql_at
    FROM $db.v_stage_transitions
    WHERE to_stage = 'sql' AND $ws
    GROUP BY workspace_id, lead_id
) AS q ON q.workspace_id = s.workspace_id AND q.lead_id = s.lead_id
WHERE $ws_s AND (q.first_sql_at = 0 OR s.occurred_at < q.first_sql_at)
GROUP BY s.workspace_id, s.lead_id
"""


def lead_scores(client: Any, database: str, *, workspace: str | None = None) -> Report:
    """Each lead's last rule score (fit + engagement) and model score *before* its first SQL.

    Scores from the SQL moment on are excluded, so the demo request that makes a lead SQL
    cannot grade its own prediction. Leads that never became SQL keep all their scores.
    """
    sql = LEAD_SCORES.replace("$ws_s", WORKSPACE.replace("workspace_id", "s.workspace_id"))
    rows = _query(client, sql, database, {"workspace": workspace or ""})
    return Report("Lead scores before SQL", ("lead_id", "rule_score", "model_score"), rows)


LATEST_HANDOFFS = """
SELECT became_sql_time, lead_id, company, industry, company_size, owner_id, reason,
       round(fit_score, 1), round(engagement_score, 1), model_score,
       first_touch_channel, last_touch_channel, qualification_completeness
FROM $db.handoffs FINAL
WHERE $ws
ORDER BY became_sql_at DESC, transition_id
LIMIT {limit:UInt32}
"""


def latest_handoffs(
    client: Any, database: str, *, limit: int = 5, workspace: str | None = None
) -> Report:
    """The newest "lead became SQL" hand-offs with the context a rep opens the call with."""
    rows = _query(client, LATEST_HANDOFFS, database, {"workspace": workspace or "", "limit": limit})
    return Report(
        "latest hand-offs to sales",
        (
            "became_sql", "lead", "company", "industry", "size", "owner", "why", "fit",
            "engagement", "model", "first_touch", "last_touch", "qualified",
        ),
        rows,
    )  # fmt: skip


# -- model health ------------------------------------------------------------------------------

MODEL_HEALTH_SQL = """
SELECT workspace_id, model, first_version, last_version, window_from, window_to, examples,
       positives, negatives, positive_rate, auc, ece, inputs_stored, inputs_refused,
       refused_share, warnings
FROM $db.model_health(window_days = {window_days:UInt32}, horizon_days = {horizon_days:UInt32},
                      min_labels = {min_labels:UInt32}, conversion_rank = {conversion_rank:UInt8},
                      refused_days = {refused_days:UInt32})
WHERE $ws
ORDER BY workspace_id, model
"""
MODEL_HEALTH_COLUMNS = (
    "workspace", "model", "first_version", "last_version", "window_from", "window_to",
    "examples", "positives", "negatives", "positive_rate", "auc", "ece", "inputs_stored",
    "inputs_refused", "refused_share", "warnings",
)  # fmt: skip
CONVERSION_RANKS = {"sql": 3, "won": 5}


def model_health(
    client: Any,
    database: str,
    *,
    window_days: int = 90,
    horizon_days: int = 30,
    min_labels: int = 30,
    conversion: str = "sql",
    workspace: str | None = None,
    refused_days: int = 7,
) -> Report:
    """The scoring model's label balance, AUC, ECE and warnings per workspace and model kind.

    Over the published model scores of open leads in a sliding event-time window of
    ``window_days`` ending ``horizon_days`` before each workspace's newest score, labelled
    like the trainer's examples (``conversion`` within ``horizon_days``): the view
    ``model_health`` in sinks/views.py. ``horizon_days``, ``min_labels`` and
    ``conversion`` are the policy's ``labels``/``model`` settings.

    Beside them, each workspace's inbound messages over the last ``refused_days`` of receive
    time: stored, refused (dead-lettered by the collector or the worker) and the refused
    share, with the warning ``inputs_refused`` above ``REFUSED_SHARE_WARN`` (a workspace
    whose inputs are refused but that has no model score yet has a row with model ``''``).
    """
    if conversion not in CONVERSION_RANKS:
        raise ReportError(f"conversion must be one of {sorted(CONVERSION_RANKS)}")
    if window_days < 1 or horizon_days < 1 or refused_days < 1:
        raise ReportError("window, horizon and refused days must be at least one day")
    params = {
        "workspace": workspace or "",
        "window_days": window_days,
        "horizon_days": horizon_days,
        "min_labels": min_labels,
        "conversion_rank": CONVERSION_RANKS[conversion],
        "refused_days": refused_days,
    }
    rows = _query(client, MODEL_HEALTH_SQL, database, params)
    rows = [(*r[:-1], list(r[-1])) for r in rows]
    notes = [
        f"examples: model scores of open leads made {window_days} days up to {horizon_days} "
        f"days before the workspace's newest score; label: became {conversion} within "
        f"{horizon_days} days (the trainer's label, docs/analytics.md)",
        f"inputs: inbound messages received in the workspace's last {refused_days} days, "
        f"stored or refused by the collector or the worker (leadflow.events.dlq); "
        f"inputs_refused warns above a {REFUSED_SHARE_WARN:.0%} refused share",
    ]
    empty = [str(r[0]) for r in rows if not r[6] and r[1]]
    if empty:
        notes.append(
            f"nothing labelled yet in {', '.join(empty)}: no model score of an open lead "
            f"{horizon_days}+ days older than the workspace's newest score (not yet measurable)"
        )
    return Report("model health", MODEL_HEALTH_COLUMNS, rows, tuple(notes))


def health_warnings(report: Report) -> list[str]:
    """One line per workspace and model kind with a warning (for stderr and the logs).

    Example:
        >>> r = Report("model health", MODEL_HEALTH_COLUMNS,
        ...            [("ws", "linear", "linear@0", "linear@9", None, None, 25, 0, 25, 0.0,
        ...              None, 0.1, 400, 12, 0.03, ["one_class", "few_labels"])])
        >>> health_warnings(r)[0][:42]
        'WARNING model health ws (linear): one_clas'
    """
    advice = {
        "one_class": "it learns from one class only: are stage changes refused "
        "(leadflow dlq) or is nobody converting?",
        "few_labels": "too few labels of a class: its scores are still mostly the rules prior",
    }
    out = []
    for row in report.as_dicts():
        for w in row["warnings"]:
            if w == "inputs_refused":
                out.append(
                    f"WARNING model health {row['workspace']} ({row['model'] or 'no model yet'})"
                    f": inputs_refused: {row['inputs_refused']} inbound messages refused, "
                    f"{row['inputs_stored']} stored (refused share {row['refused_share']:.0%}); "
                    "it learns from what little gets through: "
                    "see v_refusals (by field) and leadflow dlq show"
                )
                continue
            out.append(
                f"WARNING model health {row['workspace']} ({row['model']}): {w}: "
                f"{row['positives']} positives, {row['negatives']} negatives in the window; "
                f"{advice.get(w, '')}"
            )
    return out
