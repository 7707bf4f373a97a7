"""Workspace isolation for analysts: per-workspace view databases and row policies.

Every table and view of the ``leadflow`` database carries ``workspace_id``, and every
report takes a workspace. An analyst who may see only one workspace needs more than a
convention, so there are two enforced ways, both generated here (all SQL lives in sinks/):

1. **Per-workspace views** (works on chdb and on a server): a database
   ``<db>_ws_<workspace>`` holding one view per analyst-facing table and view, each
   ``WHERE workspace_id = '<workspace>'``, created ``SQL SECURITY DEFINER`` so that on a
   server ``GRANT SELECT ON <db>_ws_<workspace>.* TO analyst`` is enough: the analyst reads
   through the views without any grant on ``<db>`` itself. Parameterised views
   (``attribution``) keep their parameters.
2. **Row policies** (server only): ``CREATE ROW POLICY ... USING workspace_id = '...'`` on
   every table of ``<db>``, so the analyst may query ``<db>`` directly and still sees only
   their rows; the ``v_*`` views are ``SQL SECURITY INVOKER`` by default and therefore
   inherit the policy. Measured: chdb 4.4 (ClickHouse 26.9) runs as the ``default`` user
   without access management and refuses ``CREATE ROLE``/``CREATE ROW POLICY`` with
   ``ACCESS_DENIED``, so this path is generated as text and checked as text; the views
   path is the one the tests run on chdb.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from leadflow.processors.errors import LeadflowError
from leadflow.processors.workspace_id import InvalidWorkspaceId, check_workspace_id
from leadflow.sinks.tables import ALL_TABLES, DERIVED_TABLES, check_identifier, on_cluster
from leadflow.sinks.views import (
    merge_view_statements,
    model_health_statements,
    nullable_amount_statements,
    refusal_statements,
    view_statements,
)

_VIEW_NAME = re.compile(r"CREATE (?:OR REPLACE )?VIEW (?:IF NOT EXISTS )?\$db\.(\w+)\$oc")
_PARAMETER = re.compile(r"\{(\w+):(\w+)\}")


class WorkspaceError(LeadflowError):
    """A workspace id or grantee that cannot be used in isolation DDL."""


@dataclass(frozen=True, slots=True)
class AnalystObject:
    """One table or view an analyst may read, as exposed in a workspace database.

    Attributes:
        name: the table or view name in the base database.
        columns: the select list (``*`` for views; stored plus alias columns for tables,
            because ``SELECT *`` leaves ClickHouse ``ALIAS`` columns out).
        parameters: ``(name, type)`` of a parameterised view's parameters, in order.
    """

    name: str
    columns: str
    parameters: tuple[tuple[str, str], ...] = ()


def check_workspace(workspace_id: str) -> str:
    """Return ``workspace_id`` if it is safe in DDL, else raise :class:`WorkspaceError`.

    Example:
        >>> check_workspace("acme-eu")
        'acme-eu'
        >>> check_workspace("x' OR 1=1 --")
        Traceback (most recent call last):
        ...
        leadflow.sinks.workspaces.WorkspaceError: workspace id "x' OR 1=1 --" must match ...
    """
    # Workspace ids are pasted into DDL as string literals (DDL cannot bind parameters).
    try:
        return check_workspace_id(workspace_id)
    except InvalidWorkspaceId as exc:
        raise WorkspaceError(str(exc)) from None


def workspace_database(database: str, workspace_id: str) -> str:
    """The database of ``workspace_id``'s views: ``<database>_ws_<slug>``.

    The slug is the id lower-cased with other characters as ``_``; when that loses
    information (case, ``-`` vs ``_``) a short digest of the id keeps two workspaces
    from sharing a database.

    Example:
        >>> workspace_database("leadflow", "acme")
        'leadflow_ws_acme'
        >>> workspace_database("leadflow", "Acme-EU")
        'leadflow_ws_acme_eu_005dd04e'
    """
    ws = check_workspace(workspace_id)
    slug = re.sub(r"[^a-z0-9_]", "_", ws.lower())
    if slug != ws:
        slug += "_" + hashlib.sha256(ws.encode()).hexdigest()[:8]
    return check_identifier(f"{workspace_database_prefix(database)}{slug}", "database")


def workspace_database_prefix(database: str) -> str:
    """What the name of every workspace view database of ``database`` starts with.

    Example:
        >>> workspace_database_prefix("leadflow")
        'leadflow_ws_'
    """
    return f"{check_identifier(database, 'database')}_ws_"


def analyst_objects() -> tuple[AnalystObject, ...]:
    """Every table and view an analyst reads, in dependency-free order.

    The derived tables (``lead_state``, read through ``v_lead_state``; the attribution path
    tables, read through the reports), the materialized views and ``schema_migrations`` are
    internal and not exposed.

    Example:
        >>> names = [o.name for o in analyst_objects()]
        >>> "events" in names and "v_lead_funnel" in names and "lead_state" not in names
        True
    """
    tables = [
        AnalystObject(
            t.name,
            ", ".join(c.name for c in t.columns),
        )
        for t in ALL_TABLES
        if t not in DERIVED_TABLES
    ]
    views: dict[str, AnalystObject] = {}
    for statement in (
        *view_statements(),
        *merge_view_statements(),
        *model_health_statements(),
        *refusal_statements(),
        *nullable_amount_statements(),
    ):
        found = _VIEW_NAME.search(statement)
        if found is None:
            continue  # a materialized view: it writes lead_state, nobody reads it
        parameters = tuple(dict.fromkeys(_PARAMETER.findall(statement)))
        # A later migration's CREATE OR REPLACE is the view's definition now (same place).
        views[found.group(1)] = AnalystObject(found.group(1), "*", parameters)
    return (*tables, *views.values())


def workspace_view_statements(
    database: str, workspace_id: str, cluster: str | None = None
) -> tuple[str, ...]:
    """DDL for ``workspace_id``'s view database (idempotent: ``CREATE OR REPLACE``).

    Example:
        >>> ddl = workspace_view_statements("leadflow", "acme")
        >>> ddl[0]
        'CREATE DATABASE IF NOT EXISTS leadflow_ws_acme'
        >>> print(next(s for s in ddl if s.split()[4].endswith(".attribution")))
        CREATE OR REPLACE VIEW leadflow_ws_acme.attribution
        SQL SECURITY DEFINER AS
        SELECT * FROM leadflow.attribution(half_life_days = {half_life_days:Float64}, lookback_days = {lookback_days:UInt32})
        WHERE workspace_id = 'acme'
    """  # noqa: E501
    db = check_identifier(database, "database")
    ws = check_workspace(workspace_id)
    target = workspace_database(db, ws)
    oc = on_cluster(cluster)
    out = [f"CREATE DATABASE IF NOT EXISTS {target}{oc}"]
    for obj in analyst_objects():
        source = f"{db}.{obj.name}"
        if obj.parameters:
            source += "(" + ", ".join(f"{n} = {{{n}:{t}}}" for n, t in obj.parameters) + ")"
        out.append(
            f"CREATE OR REPLACE VIEW {target}.{obj.name}{oc}\nSQL SECURITY DEFINER AS\n"
            f"SELECT {obj.columns} FROM {source}\nWHERE workspace_id = '{ws}'"
        )
    return tuple(out)


def grant_statements(database: str, workspace_id: str, grantee: str) -> tuple[str, ...]:
    """Server DDL: let ``grantee`` (a user or role) read ``workspace_id``'s views only.

    Example:
        >>> grant_statements("leadflow", "acme", "analyst_acme")
        ('GRANT SELECT ON leadflow_ws_acme.* TO analyst_acme',)
    """
    target = workspace_database(database, workspace_id)
    return (f"GRANT SELECT ON {target}.* TO {check_identifier(grantee, 'grantee')}",)


def row_policy_statements(
    database: str, workspace_id: str, grantee: str, cluster: str | None = None
) -> tuple[str, ...]:
    """Server DDL: ``grantee`` reads ``database`` directly but only ``workspace_id``'s rows.

    One permissive policy per table: a grantee holding the policies of two workspaces
    sees both. Users with no policy on a table keep reading every row (the server setting
    ``users_without_row_policies_can_read_rows``, true by default), so admins and the
    projector are unaffected. chdb cannot run these (no access management).

    Example:
        >>> ddl = row_policy_statements("leadflow", "acme", "analyst_acme")
        >>> print(ddl[0])
        CREATE ROW POLICY OR REPLACE ws_acme ON leadflow.events
        AS PERMISSIVE FOR SELECT USING workspace_id = 'acme' TO analyst_acme
        >>> ddl[-1]
        'GRANT SELECT ON leadflow.* TO analyst_acme'
    """
    db = check_identifier(database, "database")
    ws = check_workspace(workspace_id)
    who = check_identifier(grantee, "grantee")
    policy = "ws_" + workspace_database(db, ws)[len(db) + len("_ws_") :]
    oc = on_cluster(cluster)
    out = [
        f"CREATE ROW POLICY OR REPLACE {policy} ON {db}.{t.name}{oc}\n"
        f"AS PERMISSIVE FOR SELECT USING workspace_id = '{ws}' TO {who}"
        for t in ALL_TABLES
        if any(c.name == "workspace_id" for c in t.columns)  # path_refreshes holds no tenant data
    ]
    out.append(f"GRANT SELECT ON {db}.* TO {who}")
    return tuple(out)


def create_workspace_views(
    client: object, database: str, workspace_id: str, cluster: str | None = None
) -> str:
    """Create (or refresh) ``workspace_id``'s view database; return its name.

    Run it again after a migration adds a table or view.
    """
    for statement in workspace_view_statements(database, workspace_id, cluster):
        client.command(statement)  # type: ignore[attr-defined]
    return workspace_database(database, workspace_id)
