"""The ClickHouse tables: one spec per table, rendered to DDL for a database and a cluster.

Every table is keyed so that the id that defines a row (``event_id``, ``transition_id``,
``score_id`` ...) is the tail of the sorting key, and the engine is a ReplacingMergeTree:
a re-delivered record lands as an identical row with the same key, which ClickHouse
collapses on merge and which the ``v_*`` views hide *before* the merge (``FINAL`` or
``GROUP BY`` the id). See docs/analytics.md, "Why no number is ever counted twice".

Columns are one list per table here, so the DDL and the projector's insert column order
cannot drift apart.

Times are ``Int64`` epoch milliseconds (the wire format of every event); each table has an
``ALIAS`` column with the same instant as ``DateTime64(3, 'UTC')`` for analysts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from leadflow.processors.errors import LeadflowError


class DdlError(LeadflowError):
    """A database or cluster name that cannot be used safely in DDL."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column: name, ClickHouse type, and an optional ``ALIAS`` expression."""

    name: str
    type: str
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table of the ``leadflow`` database.

    Attributes:
        name: the table name.
        columns: stored columns (the projector inserts exactly these, in this order) and
            alias columns (computed on read).
        engine: the single-node engine; cluster mode prefixes ``Replicated``.
        order_by: the sorting key, which is also the dedup key of ReplacingMergeTree.
        partition_by: the partition expression, or ``None`` for one partition.
        doc: what one row is.
        ttl: a ``TTL`` expression (rows older than it are dropped by merges), or ``None``.
    """

    name: str
    columns: tuple[Column, ...]
    engine: str
    order_by: str
    partition_by: str | None
    doc: str
    ttl: str | None = None

    @property
    def insert_columns(self) -> tuple[str, ...]:
        """The stored columns, in insert order."""
        return tuple(c.name for c in self.columns if c.alias is None)


def _ms(name: str, alias: str) -> tuple[Column, Column]:
    return Column(name, "Int64"), Column(alias, "DateTime64(3, 'UTC')", _to_time(name))


def _to_time(column: str) -> str:
    return f"fromUnixTimestamp64Milli({column}, 'UTC')"


def _month(column: str) -> str:
    return f"toYYYYMM({_to_time(column)})"


S = "String"
LS = "LowCardinality(String)"

EVENTS = TableSpec(
    name="events",
    doc="every inbound event once (dedup by event_id); '' where the event has no value",
    columns=(
        Column("event_id", S),
        Column("workspace_id", LS),
        Column("kind", LS),
        *_ms("occurred_at", "occurred_time"),
        Column("received_at", "Int64"),
        Column("anonymous_id", S),
        Column("lead_id", S),
        Column("channel", LS),
        Column("campaign", S),
        Column("utm_source", S),
        Column("utm_medium", S),
        Column("utm_campaign", S),
        Column("utm_term", S),
        Column("utm_content", S),
        Column("url", S),
        Column("path", S),
        Column("referrer", S),
        Column("title", S),
        Column("experiment", S),
        Column("variant", S),
        Column("company_size", "Nullable(Int32)"),
        Column("industry", S),
        Column("country", S),
        Column("amount", "Nullable(Float64)"),
        Column("currency", S),
        Column("deal_id", S),
        Column("reason", S),
        Column("action", S),
        Column("name", S),
        Column("payload_json", S),
    ),
    engine="ReplacingMergeTree",
    # event_id last in the key and in no other column: a duplicate always has the same key.
    order_by="(workspace_id, event_id)",
    partition_by=_month("occurred_at"),
)

IDENTITIES = TableSpec(
    name="identities",
    doc="one row per (anonymous id, lead id, event that linked them); v_identities resolves",
    columns=(
        Column("workspace_id", LS),
        Column("anonymous_id", S),
        Column("lead_id", S),
        *_ms("linked_at", "linked_time"),
        Column("source_event_id", S),
        Column("source_kind", LS),
    ),
    engine="ReplacingMergeTree",
    order_by="(workspace_id, anonymous_id, lead_id, source_event_id)",
    partition_by=None,
)

STAGE_TRANSITIONS = TableSpec(
    name="stage_transitions",
    doc="one row per funnel transition (dedup by transition_id)",
    columns=(
        Column("transition_id", S),
        Column("workspace_id", LS),
        Column("lead_id", S),
        Column("from_stage", LS),
        Column("to_stage", LS),
        *_ms("occurred_at", "occurred_time"),
        Column("reason", S),
        Column("cause_event_id", S),
        Column("sequence", "UInt32"),
    ),
    engine="ReplacingMergeTree",
    order_by="(workspace_id, lead_id, transition_id)",
    partition_by=None,
)

SCORES = TableSpec(
    name="scores",
    doc="one row per score update (dedup by score_id)",
    columns=(
        Column("score_id", S),
        Column("workspace_id", LS),
        Column("lead_id", S),
        *_ms("occurred_at", "occurred_time"),
        Column("fit_score", "Float64"),
        Column("engagement_score", "Float64"),
        Column("model_score", "Nullable(Float64)"),
        Column("model_version", S),
        Column("top_rules", "Array(String)"),
        Column("top_points", "Array(Float64)"),
        Column("cause_event_id", S),
        Column("stage", LS),
        Column("segments", "Array(String)"),
    ),
    engine="ReplacingMergeTree",
    order_by="(workspace_id, lead_id, score_id)",
    partition_by=_month("occurred_at"),
)

# Fed only by materialized views from stage_transitions and scores (see views.py): argMax
# states are idempotent, so a duplicate insert upstream cannot change the merged value.
LEAD_STATE = TableSpec(
    name="lead_state",
    doc="current state per lead as argMax states; read it through v_lead_state",
    columns=(
        Column("workspace_id", LS),
        Column("lead_id", S),
        Column("stage", "AggregateFunction(argMax, String, Tuple(Int64, UInt32))"),
        Column("stage_since", "SimpleAggregateFunction(max, Int64)"),
        Column("transitions", "AggregateFunction(uniqExact, String)"),
        Column("fit_score", "AggregateFunction(argMax, Float64, Tuple(Int64, String))"),
        Column("engagement_score", "AggregateFunction(argMax, Float64, Tuple(Int64, String))"),
        Column("model_score", "AggregateFunction(argMax, Float64, Tuple(Int64, String))"),
        Column("scored_at", "SimpleAggregateFunction(max, Int64)"),
    ),
    engine="AggregatingMergeTree",
    order_by="(workspace_id, lead_id)",
    partition_by=None,
)

COSTS = TableSpec(
    name="costs",
    doc="one row per campaign_cost event; v_costs keeps the latest restatement per day",
    columns=(
        Column("event_id", S),
        Column("workspace_id", LS),
        Column("date", "Date"),
        Column("channel", LS),
        Column("campaign", S),
        Column("amount", "Float64"),
        Column("currency", LS),
        *_ms("occurred_at", "occurred_time"),
    ),
    engine="ReplacingMergeTree",
    order_by="(workspace_id, date, channel, campaign, event_id)",
    partition_by="toYYYYMM(date)",
)

DEALS = TableSpec(
    name="deals",
    doc="one row per deal_won / deal_lost event (dedup by event_id)",
    columns=(
        Column("event_id", S),
        Column("workspace_id", LS),
        Column("lead_id", S),
        Column("deal_id", S),
        Column("outcome", LS),
        # NULL: the event carried no amount (a deal_lost may not; a deal_won always does).
        # Stored as 0 it would count as a deal worth nothing in avg() and lost pipeline value.
        Column("amount", "Nullable(Float64)"),
        Column("currency", LS),
        Column("reason", S),
        *_ms("occurred_at", "occurred_time"),
    ),
    engine="ReplacingMergeTree",
    order_by="(workspace_id, lead_id, event_id)",
    partition_by=None,
)

HANDOFFS = TableSpec(
    name="handoffs",
    doc="one row per lead-became-SQL hand-off (dedup by transition_id)",
    columns=(
        Column("transition_id", S),
        Column("workspace_id", LS),
        Column("lead_id", S),
        *_ms("became_sql_at", "became_sql_time"),
        Column("reason", S),
        Column("sql_count", "UInt32"),
        Column("owner_id", S),
        Column("team", S),
        Column("fit_score", "Float64"),
        Column("engagement_score", "Float64"),
        Column("model_score", "Nullable(Float64)"),
        Column("model_version", S),
        Column("company", S),
        Column("company_size", "Nullable(Int32)"),
        Column("industry", S),
        Column("country", S),
        Column("segments", "Array(String)"),
        Column("first_touch_channel", S),
        Column("first_touch_campaign", S),
        Column("last_touch_channel", S),
        Column("last_touch_campaign", S),
        Column("qualification_framework", S),
        Column("qualification_completeness", "Float64"),
        Column("top_rules", "Array(String)"),
    ),
    engine="ReplacingMergeTree",
    order_by="(workspace_id, lead_id, transition_id)",
    partition_by=None,
)

SLA_BREACHES = TableSpec(
    name="sla_breaches",
    doc="one row per MQL not reviewed in time (dedup by breach_id)",
    columns=(
        Column("breach_id", S),
        Column("workspace_id", LS),
        Column("lead_id", S),
        Column("mql_transition_id", S),
        *_ms("mql_at", "mql_time"),
        *_ms("due_at", "due_time"),
        Column("owner_id", S),
    ),
    engine="ReplacingMergeTree",
    order_by="(workspace_id, lead_id, breach_id)",
    partition_by=None,
)

# Migration 5 (issue 14): identity merges. One row per merged id and merge; the latest
# merge of an id names its survivor (v_lead_merges), and the base views resolve every
# lead id through it, so a merged person is counted once.
LEAD_MERGES = TableSpec(
    name="lead_merges",
    doc="one row per (merged lead id, merge): the id now resolves to lead_id (v_lead_merges)",
    columns=(
        Column("merge_id", S),
        Column("workspace_id", LS),
        Column("merged_lead_id", S),
        Column("lead_id", S),
        *_ms("merged_at", "merged_time"),
        Column("reason", LS),
        Column("cause_event_id", S),
        Column("adopted_history", "UInt8"),
    ),
    engine="ReplacingMergeTree",
    order_by="(workspace_id, merged_lead_id, merge_id)",
    partition_by=None,
)

# The attribution path tables (migration 4, sinks/paths.py). Derived data: touch_log and
# path_marks are written by materialized views, journeys / conversion_paths / path_refreshes by
# sinks.paths.refresh_paths. Nobody inserts into them directly, and analysts read reports.

TOUCH_LOG = TableSpec(
    name="touch_log",
    doc="every touch once, keyed by the person it was sent for (lead, else anon:<device>)",
    columns=(
        Column("workspace_id", LS),
        # lead_id when the event carries one, else 'anon:' || anonymous_id: the key a path
        # refresh looks a person's touches up by (the devices of a lead are resolved on read).
        Column("person_key", S),
        Column("lead_id", S),
        Column("anonymous_id", S),
        Column("occurred_at", "Int64"),
        Column("event_id", S),
        Column("channel", LS),
        Column("campaign", S),
    ),
    engine="ReplacingMergeTree",
    # The event id determines every column, so a re-delivered touch has the same key.
    order_by="(workspace_id, person_key, occurred_at, event_id)",
    partition_by=None,
)

PATH_MARKS = TableSpec(
    name="path_marks",
    doc="a person whose paths may have changed (written by materialized views on insert)",
    columns=(
        Column("workspace_id", LS),
        Column("lead_id", S),
        Column("anonymous_id", S),
        Column("marked_at", "DateTime64(6, 'UTC')"),
    ),
    engine="MergeTree",
    order_by="marked_at",
    partition_by=None,
    # A refresh reads the marks since its watermark; one without a watermark this old
    # rebuilds everything (sinks/paths.py), so old marks are never needed.
    ttl="toDateTime(marked_at) + INTERVAL 30 DAY",
)

_PATH_ARRAYS = (
    Column("touch_at", "Array(Int64)"),
    Column("touch_id", "Array(String)"),
    Column("channel", "Array(LowCardinality(String))"),
    Column("campaign", "Array(String)"),
)
# version: the refresh's start time in ns (a later refresh read a superset and wins);
# is_deleted = 1 removes a person left without touches (FINAL hides it).
_PATH_VERSION = (Column("version", "UInt64"), Column("is_deleted", "UInt8"))

JOURNEYS = TableSpec(
    name="journeys",
    doc="per person (lead, or anon:<device> never linked): every touch in time order",
    columns=(
        Column("workspace_id", LS),
        Column("person_id", S),
        Column("lead_id", S),
        *_PATH_ARRAYS,
        *_PATH_VERSION,
    ),
    engine="ReplacingMergeTree(version, is_deleted)",
    order_by="(workspace_id, person_id)",
    partition_by=None,
)

CONVERSION_PATHS = TableSpec(
    name="conversion_paths",
    doc="per conversion: the lead's touches up to it, its revenue and milestone times",
    columns=(
        Column("workspace_id", LS),
        Column("conversion", LS),
        Column("conversion_id", S),
        Column("lead_id", S),
        Column("converted_at", "Int64"),
        Column("revenue", "Float64"),
        # First transition into 'lead' (0: none) and the latest into 'opportunity' at or
        # before the conversion (0: none): the W-shaped and full-path milestones.
        Column("lead_at", "Int64"),
        Column("opp_at", "Int64"),
        *_PATH_ARRAYS,
        *_PATH_VERSION,
    ),
    engine="ReplacingMergeTree(version, is_deleted)",
    # Reports read one conversion kind over a range of conversion times: the sort key prunes.
    order_by="(workspace_id, conversion, converted_at, conversion_id)",
    partition_by=None,
)

PATH_REFRESHES = TableSpec(
    name="path_refreshes",
    doc="each path refresh: up to which mark it is complete (the next one starts there)",
    columns=(
        Column("refreshed_to", "DateTime64(6, 'UTC')"),
        # How many marks (tail_from, refreshed_to] held when the refresh read them: a later
        # count that differs means a mark became visible late (see paths.refresh_paths).
        Column("tail_from", "DateTime64(6, 'UTC')"),
        Column("tail_marks", "UInt64"),
        Column("full", "UInt8"),
        Column("persons", "UInt64"),
        Column("finished_at", "DateTime64(6, 'UTC')"),
    ),
    engine="MergeTree",
    order_by="refreshed_to",
    partition_by=None,
)

# Migration 7 (issue 15): what was refused, without what was sent. One row per record of
# the dead-letter topic (`leadflow.events.dlq`), from its headers only: who refused it
# (collector, worker, projector), the short reason, and the names of the offending fields
# (collector refusals: the error paths without message indexes). Never the record's value
# or key, never the error messages (they may quote a value): see docs/privacy.md.
DEAD_LETTERS = TableSpec(
    name="dead_letters",
    doc="one row per dead-lettered record: workspace, who refused it, reason, field names",
    columns=(
        Column("dlq_id", S),  # partition:offset in leadflow.events.dlq
        Column("workspace_id", LS),
        *_ms("received_at", "received_time"),
        Column("stage", LS),  # collector | worker | projector
        Column("reason", LS),
        Column("source_topic", LS),
        Column("fields", "Array(String)"),
        Column("bytes", "UInt32"),
    ),
    engine="ReplacingMergeTree",
    order_by="(workspace_id, dlq_id)",
    partition_by=_month("received_at"),
)

# deals as migration 1 created it, amount Float64 (a deal without an amount became 0);
# migration 8 makes the column Nullable.
DEALS_V1 = replace(
    DEALS,
    columns=tuple(Column(c.name, "Float64") if c.name == "amount" else c for c in DEALS.columns),
)

# The tables of migration 1 as it created them, fixed: migration 1 renders them and its
# checksum is computed from them (a later migration changes a table, not this list).
BASE_TABLES: tuple[TableSpec, ...] = (
    EVENTS, IDENTITIES, STAGE_TRANSITIONS, SCORES, LEAD_STATE, COSTS, DEALS_V1, HANDOFFS,
    SLA_BREACHES,
)  # fmt: skip
PATH_TABLES: tuple[TableSpec, ...] = (
    TOUCH_LOG, PATH_MARKS, JOURNEYS, CONVERSION_PATHS, PATH_REFRESHES,
)  # fmt: skip
# Every table as it is after the last migration.
ALL_TABLES: tuple[TableSpec, ...] = (
    EVENTS, IDENTITIES, STAGE_TRANSITIONS, SCORES, LEAD_STATE, COSTS, DEALS, HANDOFFS,
    SLA_BREACHES, *PATH_TABLES, LEAD_MERGES, DEAD_LETTERS,
)  # fmt: skip

# Written by materialized views or by refreshes, never by the projector's inserts, and not
# exposed to analysts on their own (they are caches of what the views compute).
DERIVED_TABLES: tuple[TableSpec, ...] = (LEAD_STATE, *PATH_TABLES)

# Tables the projector writes.
PROJECTED_TABLES: tuple[TableSpec, ...] = tuple(t for t in ALL_TABLES if t not in DERIVED_TABLES)


def check_identifier(name: str, what: str) -> str:
    """Return ``name`` if it is a plain ClickHouse identifier, else raise :class:`DdlError`.

    Database and cluster names are pasted into DDL (identifiers cannot be bound as
    parameters), so only ``[A-Za-z_][A-Za-z0-9_]*`` is accepted.

    Example:
        >>> check_identifier("leadflow", "database")
        'leadflow'
    """
    if (
        not name
        or not (name[0].isalpha() or name[0] == "_")
        or not all(c.isascii() and (c.isalnum() or c == "_") for c in name)
    ):
        raise DdlError(f"{what} name {name!r} is not a plain identifier")
    return name


def on_cluster(cluster: str | None) -> str:
    """The ``ON CLUSTER`` clause for ``cluster`` (empty in single-node mode).

    Example:
        >>> on_cluster("prod")
        ' ON CLUSTER prod'
        >>> on_cluster(None)
        ''
    """
    return f" ON CLUSTER {check_identifier(cluster, 'cluster')}" if cluster else ""


def engine_for(engine: str, cluster: str | None) -> str:
    """The engine clause: ``Replicated*`` with the server's default path in cluster mode.

    No arguments are given to the replicated engine, so ClickHouse uses its
    ``default_replica_path`` / ``default_replica_name`` settings (``/clickhouse/tables/
    {uuid}/{shard}`` and ``{replica}``), which is right for ``ON CLUSTER`` DDL.

    Example:
        >>> engine_for("ReplacingMergeTree", "prod")
        'ReplicatedReplacingMergeTree'
        >>> engine_for("ReplacingMergeTree", None)
        'ReplacingMergeTree'
    """
    return f"Replicated{engine}" if cluster else engine


def create_table_sql(spec: TableSpec, database: str, cluster: str | None = None) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for ``spec`` in ``database`` (idempotent)."""
    db = check_identifier(database, "database")
    columns = ",\n    ".join(
        f"{c.name} {c.type}" + (f" ALIAS {c.alias}" if c.alias else "") for c in spec.columns
    )
    partition = f"\nPARTITION BY {spec.partition_by}" if spec.partition_by else ""
    ttl = f"\nTTL {spec.ttl}" if spec.ttl else ""
    # The window makes a retried insert with the same deduplication token a no-op on a
    # single node too (replicated tables deduplicate by token out of the box). Derived
    # tables get no window: a refresh may legitimately insert the same rows again.
    settings = (
        "\nSETTINGS non_replicated_deduplication_window = 1000"
        if not cluster and spec not in DERIVED_TABLES
        else ""
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{spec.name}{on_cluster(cluster)}\n(\n    {columns}\n)\n"
        f"ENGINE = {engine_for(spec.engine, cluster)}{partition}\n"
        f"ORDER BY {spec.order_by}{ttl}{settings}\n"
        f"COMMENT '{_quote(spec.doc)}'"
    )


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
