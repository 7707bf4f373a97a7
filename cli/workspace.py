"""``leadflow workspace ...``: restrict analysts to one workspace (thin glue over sinks).

Workspaces appear when their first write key is created, not at migration time, so the
per-workspace views are made on demand by the operator; see docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click

from leadflow.cli.options import settings_of, workspace_param
from leadflow.cli.report import clickhouse_client, database_option
from leadflow.sinks.analysts import AnalystError, AnalystStore, users_path
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
    """Keep analysts to one workspace: analyst users, per-workspace views, grants, policies."""


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


def _now() -> datetime:
    return datetime.now(tz=UTC)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A user operation that cannot be done is one ``Error:`` line and exit 1."""
    try:
        yield
    except AnalystError as exc:
        raise click.ClickException(str(exc)) from None


@workspace.group("user")
def user() -> None:
    """Read-only analysts of one workspace on the local ClickHouse HTTP interface.

    An analyst sees only its workspace's rows (every leadflow table and view is filtered
    to it), its own <database>_ws_<workspace> views and the harmless system tables.
    Passwords are printed once and stored hashed; the running projector sees changes on
    the next query.
    """


@user.command("add")
@click.argument("workspace_id", callback=workspace_param)
@click.option("--name", callback=_identifier, help="User name (default analyst_<workspace>).")
@click.pass_context
def user_add(ctx: click.Context, workspace_id: str, name: str | None) -> None:
    """Create an analyst for WORKSPACE_ID and print its user name and password (once)."""
    settings = settings_of(ctx)
    with _clear_errors():
        created, password = AnalystStore(users_path(settings)).add(
            workspace_id, _now, name, reserved=(settings.clickhouse_http_user,)
        )
    click.echo(f"user: {created}\npassword: {password}")


@user.command("rotate")
@click.argument("name")
@click.pass_context
def user_rotate(ctx: click.Context, name: str) -> None:
    """Give user NAME a new password and print it (once); the old one stops working."""
    with _clear_errors():
        click.echo(AnalystStore(users_path(settings_of(ctx))).rotate(name, _now))


@user.command("revoke")
@click.argument("name")
@click.pass_context
def user_revoke(ctx: click.Context, name: str) -> None:
    """Revoke user NAME (its next query is refused)."""
    with _clear_errors():
        record = AnalystStore(users_path(settings_of(ctx))).revoke(name, _now)
    click.echo(f"revoked {record.user} of {record.workspace_id}")


@user.command("list")
@click.pass_context
def user_list(ctx: click.Context) -> None:
    """List analysts: user, workspace, created, revoked (never passwords)."""
    for r in AnalystStore(users_path(settings_of(ctx))).records():
        click.echo(f"{r.user}\t{r.workspace_id}\t{r.created_at}\t{r.revoked_at or ''}")
