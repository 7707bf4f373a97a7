"""``leadflow workspace ...``: restrict analysts to one workspace (thin glue over sinks).

Workspaces appear when their first write key is created, not at migration time, so the
per-workspace views are made on demand by the operator; see docs/operations.md.
"""

from __future__ import annotations

import click

from leadflow.cli.options import settings_of, workspace_param
from leadflow.cli.report import clickhouse_client, database_option
from leadflow.sinks.workspaces import (
    create_workspace_views,
    grant_statements,
    row_policy_statements,
    workspace_view_statements,
)


def _identifier(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not (
        value
        and (value[0].isalpha() or value[0] == "_")
        and all(c.isascii() and (c.isalnum() or c == "_") for c in value)
    ):
        raise click.BadParameter(f"{value!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return value


@click.group("workspace")
def workspace() -> None:
    """Keep analysts to one workspace: per-workspace views, grants and row policies."""


@workspace.command("views")
@click.argument("workspace_id", callback=workspace_param)
@database_option
@click.option("--grantee", callback=_identifier, help="Also print the GRANT for this user/role.")
@click.option("--print-only", is_flag=True, help="Print the DDL instead of running it.")
@click.pass_context
def views_cmd(
    ctx: click.Context, workspace_id: str, database: str, grantee: str | None, print_only: bool
) -> None:
    """Create (or refresh) <database>_ws_<workspace>: every table and view, that workspace only.

    Run it again after an upgrade that adds tables or views.
    """
    grants = grant_statements(database, workspace_id, grantee) if grantee else ()
    if print_only:
        statements = (*workspace_view_statements(database, workspace_id), *grants)
        click.echo(";\n\n".join(statements) + ";")
        return
    settings = settings_of(ctx)
    client = clickhouse_client(settings)
    try:
        target = create_workspace_views(client, database, workspace_id, settings.clickhouse_cluster)
    finally:
        client.close()
    click.echo(f"created {target}")
    for grant in grants:
        click.echo(f"on a ClickHouse server, run as an admin: {grant};")


@workspace.command("policy")
@click.argument("workspace_id", callback=workspace_param)
@click.option("--grantee", required=True, callback=_identifier, help="ClickHouse user or role.")
@database_option
def policy_cmd(workspace_id: str, grantee: str, database: str) -> None:
    """Print the row-policy DDL that limits GRANTEE to WORKSPACE_ID on a ClickHouse server.

    Review it and run it as an admin (chdb has no access management, so nothing runs here).
    """
    click.echo(";\n\n".join(row_policy_statements(database, workspace_id, grantee)) + ";")
