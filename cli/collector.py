"""``leadflow collector`` (serve the Tracking API) and ``leadflow keys`` (write keys)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click
from fastapi import FastAPI
from rich.console import Console
from rich.table import Table

from leadflow.cli.options import workspace_param
from leadflow.streams.collector.app import build_collector, create_app, keys_path
from leadflow.streams.collector.keys import KeyStore, KeyStoreError
from leadflow.streams.logs import configure_logging
from leadflow.streams.settings import Settings, load_settings


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A key operation that cannot be done is one ``Error:`` line and exit 1."""
    try:
        yield
    except KeyStoreError as exc:
        raise click.ClickException(str(exc)) from None


def _now() -> datetime:
    return datetime.now(tz=UTC)


@click.command("collector")
@click.option("--host", help="Bind address (default LEADFLOW_COLLECTOR_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (LEADFLOW_COLLECTOR_PORT).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes sharing the port (one core each; rate limits are per process).",
)
@click.pass_context
def collector(ctx: click.Context, host: str | None, port: int | None, workers: int) -> None:
    r"""Serve the Segment-compatible Tracking API in front of leadflow.events.

    \b
    POST /v1/track /v1/page /v1/identify /v1/alias /v1/batch (write key = Basic user)
    GET  /health /ready /metrics /openapi.json /docs
    A 200 means Kafka acknowledged every event of the request (acks=all). Create a
    write key first: `leadflow keys create <workspace>`. See docs/collector.md.
    """
    import uvicorn

    settings = _settings(ctx)
    options = {
        "host": host or settings.collector_host,
        "port": port or settings.collector_port,
        "log_config": None,  # logging is structlog's, configured by the root command
        "access_log": False,
    }
    if workers == 1:
        uvicorn.run(create_app(build_collector(settings)), **options)  # type: ignore[arg-type]
    else:
        # Worker processes import the factory and build their own settings and producer.
        uvicorn.run(
            "leadflow.cli.collector:app_from_environment",
            factory=True,
            workers=workers,
            **options,  # type: ignore[arg-type]
        )


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``leadflow collector --workers N``."""
    settings = load_settings()
    configure_logging(settings)
    return create_app(build_collector(settings))


@click.group("keys")
def keys() -> None:
    """Manage write keys (stored hashed in LEADFLOW_COLLECTOR_KEYS_FILE).

    A new key is printed once and never again; a running collector sees changes on its
    next request.
    """


def _store(ctx: click.Context) -> KeyStore:
    return KeyStore(keys_path(_settings(ctx)))


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
