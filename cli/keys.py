"""``leadflow keys``: write keys per workspace, stored hashed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table

from leadflow.cli.options import settings_of, workspace_param
from leadflow.streams.collector.app import keys_path
from leadflow.streams.collector.keys import KeyStore, KeyStoreError


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A key operation that cannot be done is one ``Error:`` line and exit 1."""
    try:
        yield
    except KeyStoreError as exc:
        raise click.ClickException(str(exc)) from None


def _now() -> datetime:
    return datetime.now(tz=UTC)


@click.group("keys")
def keys() -> None:
    """Manage write keys (stored hashed in LEADFLOW_COLLECTOR_KEYS_FILE).

    A new key is printed once and never again; a running collector sees changes on its
    next request.
    """


def _store(ctx: click.Context) -> KeyStore:
    return KeyStore(keys_path(settings_of(ctx)))


@keys.command("create")
@click.argument("workspace", callback=workspace_param)
@click.pass_context
def keys_create(ctx: click.Context, workspace: str) -> None:
    """Make a new write key for WORKSPACE and print it (once)."""
    with _clear_errors():
        click.echo(_store(ctx).create(workspace, _now))


@keys.command("rotate")
@click.argument("workspace", callback=workspace_param)
@click.pass_context
def keys_rotate(ctx: click.Context, workspace: str) -> None:
    """Revoke WORKSPACE's active keys and print a new one (once)."""
    with _clear_errors():
        click.echo(_store(ctx).rotate(workspace, _now))


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke one key by its id (see `leadflow keys list`)."""
    with _clear_errors():
        record = _store(ctx).revoke(key_id, _now)
    click.echo(f"revoked {record.key_id} of {record.workspace_id}")


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List key ids, workspaces and dates (never the keys themselves)."""
    table = Table("key id", "workspace", "created", "revoked")
    for record in _store(ctx).records():
        table.add_row(
            record.key_id, record.workspace_id, record.created_at, record.revoked_at or ""
        )
    Console().print(table)
