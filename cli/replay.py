"""``leadflow replay``: rebuild ClickHouse from offset 0 and swap it in (glue over sinks.replay)."""

from __future__ import annotations

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from leadflow.cli.options import FiniteFloatRange, settings_of
from leadflow.cli.report import clickhouse_client, database_option
from leadflow.sinks.projector import Projector, ProjectorStats
from leadflow.sinks.replay import replay


@click.command("replay")
@database_option
@click.option(
    "--max-seconds",
    type=FiniteFloatRange(min=0, min_open=True, max=7 * 86400),
    default=3600.0,
    show_default=True,
)
@click.pass_context
def replay_cmd(ctx: click.Context, database: str, max_seconds: float) -> None:
    """Rebuild the projections from offset 0 into a fresh database version and swap it in.

    Stop the projector first. The previous data stays in <database>_r<N>; drop it with
    `leadflow sql "DROP DATABASE <database>_r<N>"` once the new numbers look right.
    """
    settings = settings_of(ctx)
    client = clickhouse_client(settings)
    try:
        total = Projector(settings, client, database).backlog()
        with Progress(
            TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        ) as progress:
            task = progress.add_task("records", total=total or None)

            def advance(stats: ProjectorStats) -> None:
                progress.update(task, completed=stats.records)

            result = replay(settings, client, database, max_seconds=max_seconds, on_batch=advance)
    finally:
        client.close()
    click.echo(
        f"{result.database} rebuilt from {result.stats.records} records "
        f"({result.stats.dead_lettered} dead-lettered); previous data in {result.previous_data_in}"
    )
