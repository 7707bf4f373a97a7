"""``leadflow site``: serve the instrumented demo landing site (``demo/site.py``)."""

from __future__ import annotations

import threading

import click

from leadflow.cli.options import settings_of
from leadflow.demo.site import serve_site


@click.command("site")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8089, show_default=True, help="Site port."
)
@click.option("--write-key", required=True, help="A collector write key (leadflow keys create).")
@click.pass_context
def site_cmd(ctx: click.Context, port: int, write_key: str) -> None:
    """Serve the demo landing site on 127.0.0.1, wired to the local collector.

    Open it, browse pricing, submit the form: your visit becomes a lead in the pipeline.
    The collector must allow the site's origin (LEADFLOW_COLLECTOR_CORS_ORIGINS; the
    default allows http://127.0.0.1:8089 and http://localhost:8089).
    """
    settings = settings_of(ctx)
    collector = f"http://{settings.collector_host}:{settings.collector_port}"
    server = serve_site("127.0.0.1", port, write_key, collector)
    click.echo(f"demo site on http://127.0.0.1:{port}/ (collector {collector}); Ctrl-C stops")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
