"""``leadflow collector``: serve the Segment-compatible Tracking API."""

from __future__ import annotations

import click
from fastapi import FastAPI

from leadflow.cli.options import settings_of
from leadflow.streams.collector.app import build_collector, create_app
from leadflow.streams.collector.server import uvicorn_options
from leadflow.streams.logs import configure_logging
from leadflow.streams.settings import load_settings


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
    """Serve the Segment-compatible Tracking API in front of leadflow.events.

    \b
    POST /v1/track /v1/page /v1/identify /v1/alias /v1/batch (write key = Basic user)
    POST /v1/erasure, GET /v1/erasure/{id} (admin key = Bearer; see docs/privacy.md)
    GET  /health /ready (and /metrics /openapi.json /docs when enabled)
    A 200 means Kafka acknowledged every event of the request (acks=all). Create a
    write key first: `leadflow keys create <workspace>`. See docs/collector.md.
    """
    import uvicorn

    settings = settings_of(ctx)
    options = {
        "host": host or settings.collector_host,
        "port": port or settings.collector_port,
        # The request deadline, connection cap and keep-alive (streams/collector/server.py).
        **uvicorn_options(settings),
    }
    if workers == 1:
        uvicorn.run(create_app(build_collector(settings)), **options)
    else:
        # Worker processes import the factory and build their own settings and producer.
        uvicorn.run(
            "leadflow.cli.collector:app_from_environment",
            factory=True,
            workers=workers,
            **options,
        )


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``leadflow collector --workers N``."""
    settings = load_settings()
    configure_logging(settings)
    uvicorn_options(settings)  # this process's request deadline
    return create_app(build_collector(settings))
