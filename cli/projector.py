"""``leadflow projector``: run the ClickHouse projector (thin glue over sinks.projector)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import click

from leadflow.cli.options import FiniteFloatRange, settings_of
from leadflow.cli.report import clickhouse_client, database_option
from leadflow.sinks.clickhouse_http import ServeError, serve
from leadflow.sinks.projector import DEFAULT_GROUP, DEFAULT_LINGER, Projector, ProjectorStalled
from leadflow.streams.logs import get_logger
from leadflow.streams.stall import EXIT_STALLED

log = get_logger(__name__)


def connect_with_backoff(
    connect: Callable[[], Any],
    stop: threading.Event,
    sleep: Callable[[float], None] = time.sleep,
    max_backoff: float = 30.0,
) -> Any:
    """The ClickHouse client, waiting with exponential backoff while the server refuses.

    clickhouse-connect pings the server when the client is built, so a projector started
    while ClickHouse is down (or the chdb directory is locked by another process) would
    die with a traceback; it waits instead, as it does for a failed insert. Returns
    ``None`` when ``stop`` is set first.
    """
    delay = 0.5
    while True:
        try:
            return connect()
        except Exception as exc:  # refused, timed out, locked: all mean "retry later"
            if stop.is_set():
                return None
            log.warning("projector.clickhouse_unreachable", retry_in=delay, error=str(exc))
            sleep(delay)
            delay = min(delay * 2, max_backoff)


@click.command("projector")
@database_option
@click.option("--group", "group_id", default=DEFAULT_GROUP, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=2000, show_default=True)
@click.option(
    "--linger-ms",
    type=click.IntRange(0, 60_000),
    default=int(DEFAULT_LINGER * 1000),
    show_default=True,
    help="How long a batch waits for more records after its first: the most a row waits "
    "to be inserted, and under a trickle the least time between two inserts per table.",
)
@click.option("--until-idle", is_flag=True, help="Stop once every partition is caught up.")
@click.option(
    "--max-seconds",
    type=FiniteFloatRange(min=0, min_open=True, max=7 * 86400),
    default=600.0,
    help="With --until-idle: give up after.",
)
@click.pass_context
def projector(
    ctx: click.Context,
    database: str,
    group_id: str,
    batch_size: int,
    linger_ms: int,
    until_idle: bool,
    max_seconds: float,
) -> None:
    """Project the contract topics into ClickHouse (migrates first; Ctrl-C stops cleanly).

    Offsets are committed only after ClickHouse has the batch, and every table dedups by
    its record id, so a restart or replay never double-counts. A partition that stays behind
    its end without moving for LEADFLOW_PROJECTOR_STALL_SECONDS gets a new consumer; if that
    does not move it either, the command exits 70 for its supervisor to start it again.
    """
    settings = settings_of(ctx)
    stop = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    give_up = threading.Timer(max_seconds, stop.set)  # --until-idle waits that long at most
    give_up.daemon = True
    if until_idle:
        give_up.start()
    client = connect_with_backoff(lambda: clickhouse_client(settings), stop)
    give_up.cancel()
    if client is None:
        raise click.ClickException("stopped before ClickHouse could be reached")
    runner = Projector(
        settings,
        client,
        database,
        group_id=group_id,
        batch_size=batch_size,
        linger=linger_ms / 1000,
    )
    try:
        # The embedded engine is this process's alone: analysts query it through the
        # ClickHouse HTTP interface served here (nothing is served for a ClickHouse server).
        with serve(settings, database) as serving:
            if serving is not None:
                click.echo(f"ClickHouse HTTP interface (read-only): {serving.url}", err=True)
            stats = runner.run_until_idle(max_seconds) if until_idle else runner.run(stop)
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None
    except ProjectorStalled as exc:
        # Logged as projector.stalled already; a fresh process is what the supervisor gives.
        click.echo(f"Error: stalled: {exc}", err=True)
        raise SystemExit(EXIT_STALLED) from None
    finally:
        client.close()
    missing = (
        f", {stats.unknown_topic_errors} reads of a missing topic or partition"
        if stats.unknown_topic_errors
        else ""
    )
    stalls = f", {stats.stall_rebuilds} new consumers after a stall" if stats.stall_rebuilds else ""
    click.echo(
        f"projected {stats.records} records into {stats.rows} rows ({stats.dead_lettered} "
        f"dead-lettered, {stats.insert_retries} insert retries{missing}{stalls})"
    )
