"""Versioned, idempotent schema migrations, tracked in ``<db>.schema_migrations``.

A migration is a numbered list of statements. :func:`migrate` creates the database and the
tracking table if needed, skips every version already recorded, runs the rest in order and
records each one after all its statements succeeded. Every statement is itself idempotent
(``IF NOT EXISTS``), so a migration interrupted half-way is simply run again.

A recorded migration whose checksum differs from the code's is an error, loudly: someone
edited history. Change the schema with a *new* migration instead.

Cluster mode (a cluster name given): ``Replicated*`` engines and ``ON CLUSTER`` on every
statement, so one call migrates every replica.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from leadflow.processors.errors import LeadflowError
from leadflow.sinks.paths import merge_mark_statements
from leadflow.sinks.paths import migration_statements as path_statements
from leadflow.sinks.tables import (
    ALL_TABLES,
    BASE_TABLES,
    DEAD_LETTERS,
    LEAD_MERGES,
    PATH_TABLES,
    TableSpec,
    check_identifier,
    create_table_sql,
    engine_for,
    on_cluster,
)
from leadflow.sinks.views import (
    V_IDENTITIES_CONSENT,
    merge_view_statements,
    model_health_statements,
    nullable_amount_statements,
    refusal_statements,
    view_statements,
)
from leadflow.sinks.workspaces import workspace_database_prefix
from leadflow.streams.logs import get_logger

log = get_logger(__name__)

DEFAULT_DATABASE = "leadflow"


class MigrationError(LeadflowError):
    """The database's recorded schema history disagrees with the code."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, a name, and the statements that build it.

    Statements may contain ``$db`` (database) and ``$oc`` (the ON CLUSTER clause); tables
    are given as specs (``table:<name>``, looked up in ``tables``) and rendered per
    database and cluster. ``tables`` holds them as this migration created them: a later
    migration that changes a table leaves this one's statements (and checksum) as they were.
    ``views_unchanged``: it changes no column a workspace's views read, so applying it
    alone does not ask for them to be made again (not part of the checksum).
    """

    version: int
    name: str
    statements: tuple[str, ...]
    tables: tuple[TableSpec, ...] = ALL_TABLES
    views_unchanged: bool = False

    def render(self, database: str, cluster: str | None = None) -> tuple[str, ...]:
        """The statements for ``database`` (and ``cluster``), ready to execute.

        Example:
            >>> MIGRATIONS[0].render("t1")[0].startswith("CREATE TABLE IF NOT EXISTS t1.events")
            True
        """
        db = check_identifier(database, "database")
        oc = on_cluster(cluster)
        out = []
        for statement in self.statements:
            if statement.startswith("table:"):
                spec = next(t for t in self.tables if t.name == statement[len("table:") :])
                out.append(create_table_sql(spec, db, cluster))
            else:
                out.append(statement.replace("$db", db).replace("$oc", oc).strip())
        return tuple(out)

    def checksum(self) -> str:
        """A digest of the statements as rendered for a fixed name (detects edited history)."""
        text = "\n;\n".join(self.render("leadflow_checksum"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "tables", tuple(f"table:{t.name}" for t in BASE_TABLES), BASE_TABLES),
    Migration(2, "views", view_statements()),
    Migration(3, "identities honour tracking consent", (V_IDENTITIES_CONSENT,)),
    Migration(
        4,
        "attribution paths as data (sinks/paths.py)",
        (*(f"table:{t.name}" for t in PATH_TABLES), *path_statements()),
    ),
    Migration(
        5,
        "identity merges: lead_merges, views resolve merged ids",
        (f"table:{LEAD_MERGES.name}", *merge_view_statements(), *merge_mark_statements()),
    ),
    Migration(6, "model health view (sinks/views.py MODEL_HEALTH)", model_health_statements()),
    Migration(
        7,
        "dead letters, refusals, model health warns on refused inputs",
        (f"table:{DEAD_LETTERS.name}", *refusal_statements()),
    ),
    Migration(
        8,
        "deals.amount Nullable: a deal without an amount is NULL, not 0",
        # Rows stored before keep their value (a lost deal without an amount stays 0).
        (
            "ALTER TABLE $db.deals$oc MODIFY COLUMN amount Nullable(Float64)",
            *nullable_amount_statements(),
        ),
    ),
    Migration(
        9,
        "attribution paths rebuilt once: merged leads' touches (session 20)",
        # Before it, a survivor rebuilt for a mark of its own lost the touches of the ids
        # merged into it (sinks/paths.py, AFFECTED_LEADS). No refresh on record makes the
        # next one rebuild every path with the fixed query.
        ("TRUNCATE TABLE IF EXISTS $db.path_refreshes$oc",),
        views_unchanged=True,  # rows only: the warning after it would be a false alarm
    ),
)


def bootstrap_statements(database: str, cluster: str | None = None) -> tuple[str, ...]:
    """The database and the ``schema_migrations`` table (both idempotent).

    Example:
        >>> bootstrap_statements("leadflow", "prod")[0]
        'CREATE DATABASE IF NOT EXISTS leadflow ON CLUSTER prod'
    """
    db = check_identifier(database, "database")
    oc = on_cluster(cluster)
    return (
        f"CREATE DATABASE IF NOT EXISTS {db}{oc}",
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations{oc}\n"
        "(\n    version UInt32,\n    name String,\n    checksum String,\n"
        "    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)\n)\n"
        f"ENGINE = {engine_for('ReplacingMergeTree', cluster)}\nORDER BY version",
    )


def all_statements(database: str, cluster: str | None = None) -> tuple[str, ...]:
    """Every statement a fresh database needs, in order (for review and for tests)."""
    out = list(bootstrap_statements(database, cluster))
    for migration in MIGRATIONS:
        out.extend(migration.render(database, cluster))
    return tuple(out)


def applied_versions(client: Any, database: str) -> dict[int, str]:
    """``{version: checksum}`` of the migrations recorded in ``database``."""
    db = check_identifier(database, "database")
    rows = client.query(
        f"SELECT version, any(checksum) FROM {db}.schema_migrations GROUP BY version"  # noqa: S608
    ).result_rows
    return {int(v): str(c) for v, c in rows}


def pending_migrations(client: Any, database: str) -> list[int]:
    """Versions the code has and ``database`` has not applied (a read-only check).

    A reader of the projector's read-only HTTP interface cannot migrate; it checks instead.
    """
    try:
        done = applied_versions(client, database)
    except Exception as exc:  # no schema_migrations table (or database): nothing applied
        if "UNKNOWN_TABLE" not in str(exc) and "UNKNOWN_DATABASE" not in str(exc):
            raise
        done = {}
    return [m.version for m in MIGRATIONS if m.version not in done]


def migrate(client: Any, database: str = DEFAULT_DATABASE, cluster: str | None = None) -> list[int]:
    """Bring ``database`` up to the newest schema; return the versions applied now.

    Args:
        client: a clickhouse-connect client (chdb or HTTP).
        database: the target database (``leadflow`` in production, one per test).
        cluster: a cluster name for replicated engines and ``ON CLUSTER`` DDL.

    Raises:
        MigrationError: a recorded migration differs from the code's.
    """
    for statement in bootstrap_statements(database, cluster):
        client.command(statement)
    done = applied_versions(client, database)
    applied = []
    for migration in MIGRATIONS:
        checksum = migration.checksum()
        if migration.version in done:
            if done[migration.version] != checksum:
                raise MigrationError(
                    f"{database}: migration {migration.version} ({migration.name}) was applied "
                    f"with checksum {done[migration.version]}, the code has {checksum}; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for statement in migration.render(database, cluster):
            client.command(statement)
        client.insert(
            f"{database}.schema_migrations",
            [[migration.version, migration.name, checksum]],
            column_names=["version", "name", "checksum"],
        )
        applied.append(migration.version)
        log.info("clickhouse.migrated", database=database, version=migration.version)
    if any(not m.views_unchanged for m in MIGRATIONS if m.version in applied):
        _warn_stale_workspace_views(client, database)
    return applied


def _warn_stale_workspace_views(client: Any, database: str) -> None:
    """Name the workspace view databases a migration left behind.

    A ClickHouse view keeps the columns it was created with, so ``leadflow workspace views``
    must run again for each (migration 8's Nullable ``deals.amount`` fails their old views).
    """
    found = client.query(
        "SELECT name FROM system.databases WHERE startsWith(name, %(prefix)s) ORDER BY name",
        parameters={"prefix": workspace_database_prefix(database)},
    ).result_rows
    if found:
        log.warning(
            "clickhouse.workspace_views_stale",
            database=database,
            view_databases=[str(row[0]) for row in found],
            action="run `leadflow workspace views <workspace>` again for each",
        )
