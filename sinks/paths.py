"""Attribution paths maintained as data: per person and per conversion, refreshed incrementally.

Attribution needs, for every conversion, the lead's touches before it (pre-identification
touches included), and for the data-driven models every person's journey. Joining all
touches with all conversions at report time costs seconds at 10M touches, so the paths are
kept as rows (tables in :mod:`leadflow.sinks.tables`, migration 4):

- ``touch_log``: every touch, keyed by the person it was sent for (``lead_id``, else
  ``anon:<device>``), written by a materialized view on ``events``. It is the index a
  refresh looks a person's touches up by.
- ``path_marks``: materialized views on ``events`` (touches and consent changes),
  ``identities``, ``stage_transitions`` and ``deals`` write ``(workspace, lead, device,
  now)`` for every insert: "this person's paths may have changed". Any writer (projector,
  tests, bench, replay) is covered, because the marks come from the database, not from it.
- ``journeys`` (one row per person) and ``conversion_paths`` (one row per conversion) are
  rebuilt by :func:`refresh_paths` for the persons marked since the last refresh, as
  ``INSERT ... SELECT`` with a newer ``version`` (ReplacingMergeTree keeps the newest; rows
  read with ``FINAL``). A person left without touches (a device that got linked to a lead)
  gets a tombstone (``is_deleted = 1``).

Person resolution is the one of ``v_person_events``: the event's own lead, else the lead the
device is linked to in ``v_identities`` (which honours tracking consent), else the device; a
lead id that was merged resolves to its survivor (``v_lead_merges``, migration 5), and a merge
marks both ids (``mv_path_marks_merges``).

Who refreshes: every attribution report before it reads (a no-op when nothing is marked),
the projector after committed batches, the benchmark after loading. Two refreshes may run at
once on a server: each one's version is its start time, and a refresh that started later read
at least what an earlier one read, so the newest version is also the most complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from leadflow.sinks.tables import check_identifier
from leadflow.sinks.views import TOUCH_KIND_LIST

# -- migration 4: the materialized views that maintain touch_log and path_marks ----------------

MV_TOUCH_LOG = """
CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_touch_log$oc TO $db.touch_log AS
SELECT workspace_id, if(lead_id != '', lead_id, concat('anon:', anonymous_id)) AS person_key,
       lead_id, anonymous_id, occurred_at, event_id, channel, campaign
FROM $db.events
WHERE kind IN ($touch_kinds)
"""

# Touches and consent changes (a withdrawal unlinks the device, see v_identities) mark
# their lead and device.
MV_MARKS_EVENTS = """
CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_path_marks_events$oc TO $db.path_marks AS
SELECT workspace_id, lead_id, anonymous_id, now64(6, 'UTC') AS marked_at
FROM $db.events
WHERE kind IN ($touch_kinds, 'consent_changed')
GROUP BY workspace_id, lead_id, anonymous_id
"""

MV_MARKS_IDENTITIES = """
CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_path_marks_identities$oc TO $db.path_marks AS
SELECT workspace_id, lead_id, anonymous_id, now64(6, 'UTC') AS marked_at
FROM $db.identities
GROUP BY workspace_id, lead_id, anonymous_id
"""

MV_MARKS_TRANSITIONS = """
CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_path_marks_transitions$oc TO $db.path_marks AS
SELECT workspace_id, lead_id, '' AS anonymous_id, now64(6, 'UTC') AS marked_at
FROM $db.stage_transitions
GROUP BY workspace_id, lead_id
"""

MV_MARKS_DEALS = """
CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_path_marks_deals$oc TO $db.path_marks AS
SELECT workspace_id, lead_id, '' AS anonymous_id, now64(6, 'UTC') AS marked_at
FROM $db.deals
GROUP BY workspace_id, lead_id
"""

# The touches of a database migrated with events already in it. Running it twice only
# inserts rows the table collapses (same key, same values), so the migration stays idempotent.
BACKFILL_TOUCH_LOG = """
INSERT INTO $db.touch_log
SELECT workspace_id, if(lead_id != '', lead_id, concat('anon:', anonymous_id)) AS person_key,
       lead_id, anonymous_id, occurred_at, event_id, channel, campaign
FROM $db.events
WHERE kind IN ($touch_kinds)
"""


def migration_statements() -> tuple[str, ...]:
    """Migration 4 after its tables: the materialized views, then the backfill.

    The views exist before the backfill reads ``events``, so a touch inserted meanwhile is
    in ``touch_log`` either way (twice at worst, which the table collapses).

    Example:
        >>> [s.split()[6] for s in migration_statements()[:2]]
        ['$db.mv_touch_log$oc', '$db.mv_path_marks_events$oc']
    """
    return tuple(
        s.replace("$touch_kinds", TOUCH_KIND_LIST)
        for s in (
            MV_TOUCH_LOG, MV_MARKS_EVENTS, MV_MARKS_IDENTITIES, MV_MARKS_TRANSITIONS,
            MV_MARKS_DEALS, BACKFILL_TOUCH_LOG,
        )
    )  # fmt: skip


# -- refresh SQL ---------------------------------------------------------------------------------

# The marks of one refresh: strictly after the previous refresh's horizon (minus a margin,
# see refresh_paths) and at most this refresh's start, so every statement of one refresh
# works on the same set.
MARKS = """
SELECT workspace_id, lead_id, anonymous_id FROM $db.path_marks
WHERE marked_at > {since:DateTime64(6, 'UTC')} AND marked_at <= {until:DateTime64(6, 'UTC')}
"""

# Leads whose conversions and journey may have changed: the marked leads, and every lead a
# marked device was ever linked to (a new earlier link or a consent withdrawal moves the
# device's touches away from its previous lead).
DIRECT_LEADS = """
SELECT workspace_id, lead_id FROM ($marks) WHERE lead_id != ''
UNION DISTINCT
SELECT workspace_id, lead_id FROM $db.identities
WHERE (workspace_id, anonymous_id) IN (SELECT workspace_id, anonymous_id FROM ($marks)
                                       WHERE anonymous_id != '')
"""

# Identity merges (issue 14, migration 5): a merged lead's touches are its survivor's, so a
# survivor's journey is rebuilt from the touches of every id merged into it, and a merged id
# gets its tombstone. lead_merges holds a row per merged id and each survivor it ever had (a
# chain A -> B -> C writes A -> C too), so one step each way reaches the whole person.
# The survivor is filtered in an inner query: with ``merged_lead_id AS lead_id`` in the same
# SELECT, ClickHouse reads ``lead_id`` in WHERE as the alias, and a survivor marked alone
# (a stage change, a touch of its own) was rebuilt without its merged ids' touches
# (session 20: found by the crash-equivalence run with merges, where attribution differed).
AFFECTED_LEADS = """
SELECT workspace_id, lead_id FROM ($direct)
UNION DISTINCT
SELECT workspace_id, merged_lead_id AS lead_id FROM (
    SELECT workspace_id, merged_lead_id FROM $db.lead_merges
    WHERE (workspace_id, lead_id) IN ($direct)
)
UNION DISTINCT
SELECT workspace_id, lead_id FROM $db.lead_merges
WHERE (workspace_id, merged_lead_id) IN ($direct)
""".replace("$direct", DIRECT_LEADS)

AFFECTED_PERSONS = """
SELECT workspace_id, lead_id AS person_id FROM ($affected_leads)
UNION DISTINCT
SELECT workspace_id, concat('anon:', anonymous_id) AS person_id FROM ($marks)
WHERE anonymous_id != ''
"""

# touch_log keys to read: the affected persons' own, and those of every device ever linked to
# an affected lead (resolution below decides whose touches they are now).
TOUCH_KEYS = """
SELECT workspace_id, person_id AS person_key FROM ($affected_persons)
UNION DISTINCT
SELECT workspace_id, concat('anon:', anonymous_id) AS person_key FROM $db.identities
WHERE (workspace_id, lead_id) IN ($affected_leads)
"""

# Each person's touches in time order (ties by event id, like the attribution view). A touch's
# lead is resolved like v_person_events: its own, else its device's, then through merges.
BUILT_JOURNEYS = """
SELECT workspace_id, person_id, lead_id,
       arrayMap(x -> x.1, touches) AS touch_at, arrayMap(x -> x.2, touches) AS touch_id,
       arrayMap(x -> x.3, touches) AS channel, arrayMap(x -> x.4, touches) AS campaign
FROM
(
    SELECT workspace_id, person_id, any(lead_id) AS lead_id,
           arraySort(groupArray((occurred_at, event_id, channel, campaign))) AS touches
    FROM
    (
        SELECT r.workspace_id AS workspace_id,
               if(m.lead_id != '', m.lead_id, if(r.raw_lead != '', r.raw_lead, r.person_key))
                   AS person_id,
               if(m.lead_id != '', m.lead_id, r.raw_lead) AS lead_id,
               r.occurred_at AS occurred_at, r.event_id AS event_id, r.channel AS channel,
               r.campaign AS campaign
        FROM
        (
            SELECT t.workspace_id AS workspace_id, t.person_key AS person_key,
                   if(t.lead_id != '', t.lead_id, i.lead_id) AS raw_lead,
                   t.occurred_at AS occurred_at, t.event_id AS event_id, t.channel AS channel,
                   t.campaign AS campaign
            FROM $db.touch_log AS t FINAL
            LEFT JOIN $db.v_identities AS i
                ON i.workspace_id = t.workspace_id AND i.anonymous_id = t.anonymous_id
            WHERE $touch_filter
        ) AS r
        LEFT JOIN $db.v_lead_merges AS m
            ON m.workspace_id = r.workspace_id AND m.merged_lead_id = r.raw_lead
    )
    WHERE $person_filter
    GROUP BY workspace_id, person_id
)
"""

VERSION = "toUInt64(toUnixTimestamp64Nano(now64(9)))"

# Every person in scope gets a row: its journey, or a tombstone when it has no touch left.
INSERT_JOURNEYS = """
INSERT INTO $db.journeys
    (workspace_id, person_id, lead_id, touch_at, touch_id, channel, campaign, version,
     is_deleted)
SELECT p.workspace_id, p.person_id, b.lead_id, b.touch_at, b.touch_id, b.channel, b.campaign,
       $version, length(b.touch_at) = 0
FROM ($persons) AS p
LEFT JOIN ($built) AS b ON b.workspace_id = p.workspace_id AND b.person_id = p.person_id
"""

# Conversions never disappear (transitions and deals are append-only), so they need no
# tombstones. The touch arrays are cut at the conversion; the lookback is cut on read.
INSERT_CONVERSION_PATHS = """
INSERT INTO $db.conversion_paths
    (workspace_id, conversion, conversion_id, lead_id, converted_at, revenue, lead_at, opp_at,
     touch_at, touch_id, channel, campaign, version, is_deleted)
SELECT workspace_id, conversion, conversion_id, lead_id, converted_at, revenue, lead_at, opp_at,
       arraySlice(all_at, 1, k), arraySlice(all_id, 1, k), arraySlice(all_channel, 1, k),
       arraySlice(all_campaign, 1, k), $version, 0
FROM
(
SELECT c.workspace_id AS workspace_id, c.conversion AS conversion,
       c.conversion_id AS conversion_id, c.lead_id AS lead_id, c.occurred_at AS converted_at,
       c.revenue AS revenue, m.lead_at AS lead_at,
       arrayMax(arrayFilter(x -> x <= c.occurred_at, arrayPushFront(m.opp_times, 0))) AS opp_at,
       j.touch_at AS all_at, j.touch_id AS all_id, j.channel AS all_channel,
       j.campaign AS all_campaign, arrayCount(t -> t <= c.occurred_at, j.touch_at) AS k
FROM
(
    SELECT workspace_id, person_id, touch_at, touch_id, channel, campaign
    FROM $db.journeys FINAL
    WHERE $journey_filter
) AS j
RIGHT JOIN
(
    SELECT workspace_id, lead_id, conversion, conversion_id, occurred_at, revenue
    FROM $db.v_conversions
    WHERE $lead_filter
) AS c ON j.workspace_id = c.workspace_id AND j.person_id = c.lead_id
LEFT JOIN
(
    SELECT workspace_id, lead_id, minIf(occurred_at, to_stage = 'lead') AS lead_at,
           groupArrayIf(occurred_at, to_stage = 'opportunity') AS opp_times
    FROM $db.v_stage_transitions
    WHERE $lead_filter
    GROUP BY workspace_id, lead_id
) AS m ON m.workspace_id = c.workspace_id AND m.lead_id = c.lead_id
)
"""

# A conversion of a lead that has since been merged is its survivor's now (the same
# conversion id, rebuilt below with a newer version) or, when the survivor kept its own
# history, no conversion any more: tombstone every path row still under a merged id first.
TOMBSTONE_MERGED_CONVERSIONS = """
INSERT INTO $db.conversion_paths
    (workspace_id, conversion, conversion_id, lead_id, converted_at, revenue, lead_at, opp_at,
     touch_at, touch_id, channel, campaign, version, is_deleted)
SELECT workspace_id, conversion, conversion_id, lead_id, converted_at, revenue, lead_at, opp_at,
       touch_at, touch_id, channel, campaign, $version, 1
FROM $db.conversion_paths FINAL
WHERE (workspace_id, lead_id) IN (SELECT workspace_id, merged_lead_id FROM $db.lead_merges)
  AND $lead_filter
"""

# Migration 5 (issue 14): a merge marks both ids, so the next refresh moves the merged id's
# touches and conversions to the survivor.
MV_MARKS_MERGES = """
CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_path_marks_merges$oc TO $db.path_marks AS
SELECT workspace_id, arrayJoin([lead_id, merged_lead_id]) AS lead_id, '' AS anonymous_id,
       now64(6, 'UTC') AS marked_at
FROM $db.lead_merges
"""


def merge_mark_statements() -> tuple[str, ...]:
    """Migration 5's path statement: merges mark the ids they join (after ``lead_merges``).

    Example:
        >>> merge_mark_statements()[0].split()[6]
        '$db.mv_path_marks_merges$oc'
    """
    return (MV_MARKS_MERGES,)


# A full rebuild's persons: everyone with a touch, and everyone with a row already (so a
# row that is no longer anybody's gets its tombstone).
ALL_PERSONS = """
SELECT workspace_id, person_id FROM ($built)
UNION DISTINCT
SELECT workspace_id, person_id FROM $db.journeys FINAL
"""

LAST_REFRESH_SQL = """
SELECT refreshed_to, tail_from, tail_marks FROM $db.path_refreshes
ORDER BY refreshed_to DESC LIMIT 1
"""

NOW_SQL = "SELECT now64(6, 'UTC')"

TAIL_SQL = """
SELECT count() FROM $db.path_marks
WHERE marked_at > {tail_from:DateTime64(6, 'UTC')} AND marked_at <= {until:DateTime64(6, 'UTC')}
"""

RECORD_SQL = """
INSERT INTO $db.path_refreshes
    (refreshed_to, tail_from, tail_marks, full, persons, finished_at)
SELECT {until:DateTime64(6, 'UTC')}, {tail_from:DateTime64(6, 'UTC')}, {tail_marks:UInt64},
       {full:UInt8}, {persons:UInt64}, now64(6, 'UTC')
"""

COUNT_PERSONS_SQL = "SELECT count() FROM ($persons)"

# Settings for every refresh statement: FINAL on tables whose duplicates never cross
# partitions needs no cross-partition merge (10x faster on 10M events, measured).
REFRESH_SETTINGS = {"do_not_merge_across_partitions_select_final": 1}

# The marks live 30 days (tables.PATH_MARKS); a watermark older than this (minus a day of
# slack) may have lost marks, so the refresh rebuilds everything instead.
MARKS_KEPT = timedelta(days=29)


def _bind(sql: str, database: str) -> str:
    return sql.replace("$db", check_identifier(database, "database"))


def incremental_statements(database: str) -> tuple[str, str, str]:
    """``(journeys insert, merged tombstones, conversion_paths insert)`` for the marked persons.

    Parameters ``since`` and ``until`` (``DateTime64(6)``) bound the marks.

    Example:
        >>> j, t, c = incremental_statements("leadflow")
        >>> all("FROM leadflow.path_marks" in s for s in (j, t, c))
        True
    """
    leads = AFFECTED_LEADS.replace("$marks", MARKS)
    persons = AFFECTED_PERSONS.replace("$affected_leads", leads).replace("$marks", MARKS)
    keys = TOUCH_KEYS.replace("$affected_persons", persons).replace("$affected_leads", leads)
    built = (
        BUILT_JOURNEYS.replace("$touch_filter", f"(t.workspace_id, t.person_key) IN ({keys})")
        .replace("$person_filter", f"(workspace_id, person_id) IN ({persons})")
    )  # fmt: skip
    journeys = INSERT_JOURNEYS.replace("$persons", persons).replace("$built", built)
    journey_filter = f"(workspace_id, person_id) IN ({leads})"
    lead_filter = f"(workspace_id, lead_id) IN ({leads})"
    tombstones = TOMBSTONE_MERGED_CONVERSIONS.replace("$lead_filter", lead_filter)
    conversions = INSERT_CONVERSION_PATHS.replace("$journey_filter", journey_filter).replace(
        "$lead_filter", lead_filter
    )
    return tuple(  # type: ignore[return-value]
        _bind(s.replace("$version", VERSION), database) for s in (journeys, tombstones, conversions)
    )


def full_statements(database: str) -> tuple[str, str, str]:
    """``(journeys insert, merged tombstones, conversion_paths insert)`` for everyone.

    Example:
        >>> j, t, c = full_statements("leadflow")
        >>> "path_marks" in j + t + c
        False
    """
    built = BUILT_JOURNEYS.replace("$touch_filter", "1").replace("$person_filter", "1")
    persons = ALL_PERSONS.replace("$built", built)
    journeys = INSERT_JOURNEYS.replace("$persons", persons).replace("$built", built)
    tombstones = TOMBSTONE_MERGED_CONVERSIONS.replace("$lead_filter", "1")
    conversions = INSERT_CONVERSION_PATHS.replace("$journey_filter", "1").replace(
        "$lead_filter", "1"
    )
    return tuple(  # type: ignore[return-value]
        _bind(s.replace("$version", VERSION), database) for s in (journeys, tombstones, conversions)
    )


def persons_count_sql(database: str) -> str:
    """How many persons an incremental refresh covers (parameters ``since``, ``until``)."""
    leads = AFFECTED_LEADS.replace("$marks", MARKS)
    persons = AFFECTED_PERSONS.replace("$affected_leads", leads).replace("$marks", MARKS)
    return _bind(COUNT_PERSONS_SQL.replace("$persons", persons), database)


@dataclass(frozen=True, slots=True)
class PathRefresh:
    """What one refresh did.

    Attributes:
        full: every path was rebuilt (first refresh, or marks older than kept).
        persons: persons whose journey was rebuilt (incremental), 0 for a full rebuild.
        seconds: wall time of the refresh.
    """

    full: bool
    persons: int
    seconds: float


def refresh_paths(
    client: Any, database: str, *, margin_seconds: float = 10.0, full: bool = False
) -> PathRefresh:
    """Bring ``journeys`` and ``conversion_paths`` up to date with the tables.

    A refresh covers the marks up to its start (``until``) that it has not covered before.
    On a server an insert's mark can become visible a moment after a later one (parts commit
    independently), so each refresh also records how many marks the last ``margin_seconds``
    before ``until`` held; the next refresh counts them again and, only if more have appeared
    since, reads that tail again. The embedded engine runs one statement at a time and
    passes 0 (:func:`refresh_margin`).

    Args:
        client: a clickhouse-connect client (chdb or HTTP).
        database: the leadflow database (migrated).
        margin_seconds: how far back a late mark may hide.
        full: rebuild everything regardless of the marks.

    Returns:
        what was rebuilt; ``persons == 0`` and ``full`` false when nothing was marked.
    """
    started = time.perf_counter()

    def scalar(sql: str, params: dict[str, Any] | None = None) -> Any:
        return client.query(
            _bind(sql, database), parameters=params or {}, settings=REFRESH_SETTINGS
        ).result_rows[0][0]

    last = client.query(_bind(LAST_REFRESH_SQL, database)).result_rows
    until = _naive(scalar(NOW_SQL))
    tail_from = until - timedelta(seconds=margin_seconds)
    tail_marks = int(scalar(TAIL_SQL, {"tail_from": tail_from, "until": until}))
    full = full or not last or _naive(last[0][0]) < until - MARKS_KEPT
    if full:
        statements = full_statements(database)
        params: dict[str, Any] = {"until": until}
        persons = 0
    else:
        previous, previous_tail_from, previous_tail = last[0]
        previous, previous_tail_from = _naive(previous), _naive(previous_tail_from)
        again = scalar(TAIL_SQL, {"tail_from": previous_tail_from, "until": previous})
        since = previous if int(again) == int(previous_tail) else previous_tail_from
        params = {"since": since, "until": until}
        # The common case, nothing marked: one count on the marks' sort key, no set logic.
        if not int(scalar(TAIL_SQL, {"tail_from": since, "until": until})):
            return PathRefresh(False, 0, time.perf_counter() - started)
        persons = int(scalar(persons_count_sql(database), params))
        if not persons:
            return PathRefresh(False, 0, time.perf_counter() - started)
        statements = incremental_statements(database)
    for statement in statements:
        client.command(statement, parameters=params, settings=REFRESH_SETTINGS)
    client.command(
        _bind(RECORD_SQL, database),
        parameters={
            "until": until, "tail_from": tail_from, "tail_marks": tail_marks,
            "full": int(full), "persons": persons,
        },
    )  # fmt: skip
    return PathRefresh(full, persons, time.perf_counter() - started)


PENDING_SQL = """
WITH (SELECT max(refreshed_to) FROM $db.path_refreshes) AS last_refresh
SELECT uniqExact(workspace_id, lead_id, anonymous_id),
       dateDiff('second', last_refresh, now64(6, 'UTC'))
FROM $db.path_marks
WHERE marked_at > last_refresh
"""


def refresh_for_reading(client: Any, database: str) -> str | None:
    """Refresh the paths before a report reads them; a note when this client cannot write.

    Through the projector's read-only HTTP interface (``leadflow report`` while the
    projector holds the embedded engine) the insert is refused with READONLY: the report
    then reads the paths as the projector last refreshed them (it does after its batches
    and whenever it runs dry), and the note says how many people changed since.

    Returns:
        ``None`` after a refresh; else the note for the report.
    """
    try:
        refresh_paths(client, database, margin_seconds=refresh_margin(client))
        return None
    except Exception as exc:  # only a refused write is expected; anything else is real
        if "READONLY" not in str(exc):
            raise
    pending, age = client.query(_bind(PENDING_SQL, database)).result_rows[0]
    if not int(pending):
        return None
    return (
        f"read-only connection: the attribution paths are the projector's last refresh "
        f"({int(age)} s ago); {int(pending)} people changed since are not in them yet"
    )


def refresh_margin(client: Any) -> float:
    """The mark margin :func:`refresh_paths` needs with ``client``.

    The embedded engine runs one statement at a time (clickhouse-connect's chdb client holds
    a lock per statement), so an insert's marks are visible before a refresh starts or carry
    a later time: no margin. A server commits parts of concurrent inserts independently.

    Example:
        >>> refresh_margin(object())
        10.0
    """
    return 0.0 if type(client).__name__ == "ChdbClient" else 10.0


def _naive(value: Any) -> datetime:
    """A DateTime64 from either client as a naive UTC datetime (parameters bind it as UTC)."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {value!r}")
    return value.replace(tzinfo=None) if value.tzinfo else value
