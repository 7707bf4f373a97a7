"""Synthetic data and the baseline scan for the benchmarks (``bench/``): SQL lives here.

:func:`fill_synthetic` writes N touch events, the leads' funnel transitions and their won
deals straight into the real tables with ``INSERT ... SELECT FROM numbers()`` (no Kafka, no
Python per row), so the attribution and velocity reports can be timed at 10M touches in
seconds of setup. Columns come from the table specs, so the data always has the schema the
projector writes. The shape: ``leads`` leads with ``touches / leads`` touches each, three
days apart, over 8 channels and 40 campaigns; every lead is created, 40% become MQL, 15%
SQL, 6% reach opportunity and 2% become customers with a won deal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from leadflow.sinks.tables import DEALS, EVENTS, STAGE_TRANSITIONS, TableSpec, check_identifier

BENCH_WORKSPACE = "bench"
DAY_MS = 86_400_000
CHANNELS = (
    "organic_search", "paid_search", "paid_social", "email", "direct", "referral", "events",
    "content",
)  # fmt: skip
TOUCH_MIX = (
    "visit", "visit", "visit", "visit", "email_clicked", "ad_click", "form_submitted",
    "content_downloaded",
)  # fmt: skip
# (stage, previous stage, day after the lead's start, share of leads in percent)
FUNNEL = (
    ("lead", "", 4, 100),
    ("mql", "lead", 20, 40),
    ("sql", "mql", 35, 15),
    ("opportunity", "sql", 45, 6),
    ("customer", "opportunity", 55, 2),
)


def _array(values: Sequence[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _select(spec: TableSpec, given: Mapping[str, str]) -> str:
    """A SELECT list in ``spec``'s insert order: given expressions, type defaults elsewhere."""
    types = {c.name: c.type for c in spec.columns}
    out = []
    for name in spec.insert_columns:
        if name in given:
            out.append(f"{given[name]} AS {name}")
        elif types[name].startswith("Nullable"):
            out.append(f"NULL AS {name}")
        elif "String" in types[name]:
            out.append(f"'' AS {name}")
        else:
            out.append(f"0 AS {name}")
    return ",\n    ".join(out)


INSERT_SQL = "INSERT INTO $db.$table ($columns)\nSELECT\n    $select\n$source"
COUNT_SQL = "SELECT count() FROM $db.$table"
SCAN_SQL = "SELECT count(), sum(occurred_at) FROM $db.events"
VISIBLE_SQL = "SELECT event_id FROM $db.events WHERE event_id IN {ids:Array(String)}"
TOUCHES_SOURCE = "FROM (SELECT *, number % $leads AS lead FROM numbers($touches))"
LEADS_SOURCE = "FROM (SELECT number AS lead FROM numbers($leads))"


def _insert(db: str, spec: TableSpec, select: str, source: str) -> str:
    return (
        INSERT_SQL.replace("$db", db)
        .replace("$table", spec.name)
        .replace("$columns", ", ".join(spec.insert_columns))
        .replace("$select", select)
        .replace("$source", source)
    )


def synthetic_statements(database: str, touches: int, leads: int, start_ms: int) -> list[str]:
    """The INSERT statements of :func:`fill_synthetic` (integers only are pasted in).

    Example:
        >>> [s.split()[2] for s in synthetic_statements("db", 100, 5, 0)]
        ['db.events', 'db.stage_transitions', 'db.deals']
    """
    db = check_identifier(database, "database")
    touches, leads, start_ms = int(touches), int(leads), int(start_ms)
    if leads < 1 or touches < leads:
        raise ValueError("need at least one lead and one touch per lead")
    lead_start = f"{start_ms} + (lead % 30) * {DAY_MS}"
    events = _select(
        EVENTS,
        {
            "event_id": "concat('t-', toString(number))",
            "workspace_id": f"'{BENCH_WORKSPACE}'",
            "kind": f"{_array(TOUCH_MIX)}[1 + cityHash64(number, 1) % {len(TOUCH_MIX)}]",
            "occurred_at": f"toInt64({lead_start} + intDiv(number, {leads}) * 3 * {DAY_MS}"
            f" + cityHash64(number, 2) % {DAY_MS})",
            "received_at": "occurred_at",
            "lead_id": "concat('lead-', toString(lead))",
            "channel": f"{_array(CHANNELS)}[1 + cityHash64(number, 3) % {len(CHANNELS)}]",
            "campaign": "concat('c-', toString(cityHash64(number, 4) % 40))",
            "company_size": "toInt32(10 + cityHash64(lead, 6) % 5000)",
            "industry": "['saas', 'fintech', 'retail', 'health'][1 + cityHash64(lead, 7) % 4]",
            "country": "['US', 'DE', 'FR', 'GB', 'JP'][1 + cityHash64(lead, 8) % 5]",
        },
    )
    stages = ", ".join(f"('{s}', '{p}', {day}, {share}, {i})" for i, (s, p, day, share) in
                       enumerate(FUNNEL))  # fmt: skip
    transitions = _select(
        STAGE_TRANSITIONS,
        {
            "transition_id": "concat('lead-', toString(lead), '-', st.1)",
            "workspace_id": f"'{BENCH_WORKSPACE}'",
            "lead_id": "concat('lead-', toString(lead))",
            "from_stage": "st.2",
            "to_stage": "st.1",
            "occurred_at": f"toInt64({lead_start} + st.3 * {DAY_MS} + cityHash64(lead, 9) % "
            f"{DAY_MS})",
            "reason": "'bench'",
            "sequence": "toUInt32(st.5)",
        },
    )
    deals = _select(
        DEALS,
        {
            "event_id": "concat('won-', toString(lead))",
            "workspace_id": f"'{BENCH_WORKSPACE}'",
            "lead_id": "concat('lead-', toString(lead))",
            "deal_id": "concat('deal-', toString(lead))",
            "outcome": "'won'",
            "amount": "toFloat64(1000 + cityHash64(lead, 10) % 50000)",
            "currency": "'USD'",
            "occurred_at": f"toInt64({lead_start} + 60 * {DAY_MS})",
        },
    )
    lead_numbers = LEADS_SOURCE.replace("$leads", str(leads))
    return [
        _insert(
            db,
            EVENTS,
            events,
            TOUCHES_SOURCE.replace("$leads", str(leads)).replace("$touches", str(touches)),
        ),
        _insert(
            db,
            STAGE_TRANSITIONS,
            transitions,
            f"{lead_numbers}\nARRAY JOIN [{stages}] AS st\nWHERE cityHash64(lead, 5) % 100 < st.4",
        ),
        _insert(db, DEALS, deals, f"{lead_numbers}\nWHERE cityHash64(lead, 5) % 100 < 2"),
    ]


def more_touches_statement(database: str, touches: int, leads: int, start_ms: int) -> str:
    """``touches`` more touches, spread over the first ``leads`` leads, after ``start_ms``.

    What a live database receives between two reports; the benchmark times the path refresh
    that follows (ids ``m-<n>`` do not collide with :func:`fill_synthetic`'s ``t-<n>``).

    Example:
        >>> more_touches_statement("db", 10, 5, 0).split()[2]
        'db.events'
    """
    statement = synthetic_statements(database, max(touches, leads), leads, start_ms)[0]
    return statement.replace("concat('t-', ", "concat('m-', ").replace(
        f"numbers({max(touches, leads)})", f"numbers({int(touches)})"
    )


# One journey of path data (ChannelAttribution's format): channels, conversions, null journeys,
# and each conversion's value.
PathRecord = tuple[tuple[str, ...], int, int, tuple[float, ...]]
MINUTE_MS, HOUR_MS = 60_000, 3_600_000


def _columns(spec: TableSpec, given: Mapping[str, list[Any]], rows: int) -> list[list[Any]]:
    """Columns in ``spec``'s insert order: the given ones, type defaults elsewhere."""
    types = {c.name: c.type for c in spec.columns}

    def default(name: str) -> Any:
        kind = types[name]
        return None if kind.startswith("Nullable") else "" if "String" in kind else 0

    return [list(given[n]) if n in given else [default(n)] * rows for n in spec.insert_columns]


def load_path_records(
    client: Any, database: str, records: Iterable[PathRecord], workspace: str, start_ms: int
) -> dict[str, int]:
    """Write path data as people: one person per journey, touches an hour apart.

    A converting journey is a lead with a won deal (its value) an hour after its last touch;
    a null journey is a lead (odd person numbers) or an anonymous device (even) that never
    converts. People start a minute apart from ``start_ms``. Used by the agreement test and
    by ``bench/channelattribution_check.py`` to load ChannelAttribution's sample.
    """
    touch: dict[str, list[Any]] = defaultdict(list)
    won: dict[str, list[Any]] = defaultdict(list)
    person = 0
    for path, conversions, nulls, values in records:
        for j in range(conversions + nulls):
            person += 1
            converted = j < conversions
            lead = f"L{person}" if converted or person % 2 else ""
            start = start_ms + person * MINUTE_MS
            for i, channel in enumerate(path):
                touch["event_id"].append(f"e{person}-{i}")
                touch["occurred_at"].append(start + i * HOUR_MS)
                touch["anonymous_id"].append(f"a{person}")
                touch["lead_id"].append(lead)
                touch["channel"].append(channel)
            if converted:
                won["event_id"].append(f"won{person}")
                won["lead_id"].append(lead)
                won["deal_id"].append(f"D{person}")
                won["amount"].append(float(values[j]))
                won["occurred_at"].append(start + len(path) * HOUR_MS)
    n_touch, n_won = len(touch["event_id"]), len(won["event_id"])
    touch |= {"workspace_id": [workspace] * n_touch, "kind": ["visit"] * n_touch,
              "received_at": touch["occurred_at"]}  # fmt: skip
    won |= {"workspace_id": [workspace] * n_won, "outcome": ["won"] * n_won,
            "currency": ["USD"] * n_won}  # fmt: skip
    db = check_identifier(database, "database")
    for spec, columns, rows in ((EVENTS, touch, n_touch), (DEALS, won, n_won)):
        if rows:
            client.insert(
                f"{db}.{spec.name}", _columns(spec, columns, rows),
                column_names=list(spec.insert_columns), column_oriented=True,
            )  # fmt: skip
    return {"people": person, "touches": n_touch, "conversions": n_won}


def fill_synthetic(
    client: Any, database: str, touches: int, leads: int, start_ms: int
) -> dict[str, int]:
    """Write the synthetic data set into ``database`` (migrated); return rows per table."""
    for statement in synthetic_statements(database, touches, leads, start_ms):
        client.command(statement)
    db = check_identifier(database, "database")
    return {
        spec.name: int(client.command(COUNT_SQL.replace("$db", db).replace("$table", spec.name)))
        for spec in (EVENTS, STAGE_TRANSITIONS, DEALS)
    }


def scan_baseline(client: Any, database: str) -> tuple[int, int]:
    """The plain scan every analytics figure is compared with: count and a sum over events."""
    db = check_identifier(database, "database")
    row = client.query(SCAN_SQL.replace("$db", db)).result_rows[0]
    return int(row[0]), int(row[1])


def visible_event_ids(client: Any, database: str, event_ids: Sequence[str]) -> set[str]:
    """Which of ``event_ids`` the events table already shows (freshness probes)."""
    if not event_ids:
        return set()
    db = check_identifier(database, "database")
    result = client.query(
        VISIBLE_SQL.replace("$db", db),
        parameters={"ids": list(event_ids)},
    )
    return {str(r[0]) for r in result.result_rows}
