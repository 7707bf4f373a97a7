"""``leadflow worker``: run the stream processors (the runtime is ``streams/worker.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from leadflow.cli.options import settings_of
from leadflow.streams.logs import get_logger
from leadflow.streams.worker import CLEAN_STOP, build_app, discard_after_unclean_stop

log = get_logger(__name__)


@click.command("worker")
@click.option(
    "--loglevel",
    default="info",
    show_default=True,
    type=click.Choice(["crit", "error", "warn", "info", "debug"]),
)
@click.pass_context
def worker_cmd(ctx: click.Context, loglevel: str) -> None:
    """Run the stream processors: identity, lead state and scoring, trainer.

    Start as many workers as you like with the same settings: they form one consumer
    group and share the partitions (LEADFLOW_TOPIC_PARTITIONS bounds the parallelism).
    Each needs its own LEADFLOW_WORKER_WEB_PORT and LEADFLOW_DATA_DIR on one machine.
    The topics must exist (`leadflow topics create`).
    """
    from faust.worker import Worker

    from leadflow.streams.topics import create_topics

    settings = settings_of(ctx)
    app = build_app(settings)
    marker = Path(app.app.conf.appdir) / CLEAN_STOP
    if discard_after_unclean_stop(Path(app.app.conf.tabledir), marker):
        log.warning("worker.unclean_stop", action="local tables discarded, rebuilt from changelogs")
    create_topics(settings, app.changelog_topics())
    try:
        Worker(
            app.app, loglevel=loglevel, override_logging=False, redirect_stdouts=False
        ).execute_from_commandline()
    except SystemExit as exc:
        if exc.code in (0, None):
            marker.touch()
        raise
