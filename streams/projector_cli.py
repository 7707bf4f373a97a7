"""``leadflow projector``: run the ClickHouse projector (thin glue over sinks.projector)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from leadflow.sinks.migrations import DEFAULT_DATABASE
from leadflow.sinks.projector import DEFAULT_GROUP, Projector
from leadflow.streams.report_cli import clickhouse_client
from leadflow.streams.settings import Settings


@click.command("projector")
@click.option("--database", default=DEFAULT_DATABASE, show_default=True)
@click.option("--group", "group_id", default=DEFAULT_GROUP, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=2000, show_default=True)
@click.option("--until-idle", is_flag=True, help="Stop once every partition is caught up.")
@click.option("--max-seconds", type=float, default=600.0, help="With --until-idle: give up after.")
@click.pass_context
def projector(
    ctx: click.Context,
    database: str,
    group_id: str,
    batch_size: int,
    until_idle: bool,
    max_seconds: float,
) -> None:
    """Project the contract topics into ClickHouse (migrates first; Ctrl-C stops cleanly).

    Offsets are committed only after ClickHouse has the batch, and every table dedups by
    its record id, so a restart or replay never double-counts.
    """
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        raise click.UsageError("settings were not loaded")
    client = clickhouse_client(settings)
    runner = Projector(settings, client, database, group_id=group_id, batch_size=batch_size)
    try:
        if until_idle:
            stats = runner.run_until_idle(max_seconds)
        else:
            stop = threading.Event()

            def _stop(_sig: int, _frame: FrameType | None) -> None:
                stop.set()

            signal.signal(signal.SIGINT, _stop)
            signal.signal(signal.SIGTERM, _stop)
            stats = runner.run(stop)
    finally:
        client.close()
    click.echo(
        f"projected {stats.records} records into {stats.rows} rows "
        f"({stats.dead_lettered} dead-lettered, {stats.insert_retries} insert retries)"
    )
