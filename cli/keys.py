"""``leadflow keys``: write and admin keys per workspace, stored hashed, every change audited."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table

from leadflow.cli.options import settings_of, workspace_param
from leadflow.streams.audit import AuditRecord, FileAudit
from leadflow.streams.collector.app import keys_path
from leadflow.streams.collector.keys import ADMIN, WRITE, KeyRecord, KeyStore, KeyStoreError

_ADMIN = click.option(
    "--admin",
    is_flag=True,
    help="An admin key (secret, for servers: erasure through POST /v1/erasure) instead of a "
    "write key (public, in web pages: adds events only).",
)


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
    """Manage write and admin keys (stored hashed in LEADFLOW_COLLECTOR_KEYS_FILE).

    A new key is printed once and never again; a running collector sees changes on its
    next request. Every change is audited in audit.jsonl beside the keys file.
    """


def _store(ctx: click.Context) -> KeyStore:
    return KeyStore(keys_path(settings_of(ctx)))


def _audit(ctx: click.Context, action: str, record: KeyRecord) -> None:
    """Who changed which key, when: beside the keys file (docs/privacy.md, audit)."""
    trail = FileAudit(keys_path(settings_of(ctx)).parent / "audit.jsonl")
    trail.write(
        AuditRecord(
            audit_id=str(uuid.uuid4()),
            action=action,
            status="done",
            workspace_id=record.workspace_id,
            actor=f"cli:{getpass.getuser()}",
            at=_now().isoformat(),
            details={"key_id": record.key_id, "role": record.role},
        )
    )


def _newest(store: KeyStore, workspace: str, role: str) -> KeyRecord:
    return [r for r in store.records() if r.workspace_id == workspace and r.role == role][-1]


@keys.command("create")
@click.argument("workspace", callback=workspace_param)
@_ADMIN
@click.pass_context
def keys_create(ctx: click.Context, workspace: str, admin: bool) -> None:
    """Make a new key for WORKSPACE and print it (once)."""
    role = ADMIN if admin else WRITE
    store = _store(ctx)
    with _clear_errors():
        key = store.create(workspace, _now, role=role)
    _audit(ctx, "key.created", _newest(store, workspace, role))
    click.echo(key)


@keys.command("rotate")
@click.argument("workspace", callback=workspace_param)
@_ADMIN
@click.pass_context
def keys_rotate(ctx: click.Context, workspace: str, admin: bool) -> None:
    """Revoke WORKSPACE's active keys of that kind and print a new one (once)."""
    role = ADMIN if admin else WRITE
    store = _store(ctx)
    with _clear_errors():
        key = store.rotate(workspace, _now, role=role)
    _audit(ctx, "key.rotated", _newest(store, workspace, role))
    click.echo(key)


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke one key by its id (see `leadflow keys list`)."""
    with _clear_errors():
        record = _store(ctx).revoke(key_id, _now)
    _audit(ctx, "key.revoked", record)
    click.echo(f"revoked {record.key_id} of {record.workspace_id}")


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List key ids, workspaces, roles and dates (never the keys themselves)."""
    table = Table("key id", "workspace", "role", "created", "revoked")
    for record in _store(ctx).records():
        table.add_row(
            record.key_id,
            record.workspace_id,
            record.role,
            record.created_at,
            record.revoked_at or "",
        )
    Console().print(table)
