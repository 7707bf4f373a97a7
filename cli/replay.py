"""``leadflow replay``: rebuild ClickHouse from offset 0; ``replay rekey``; ``replay paths``.

Glue over sinks.replay, over streams.rekey (copy an inbound log keyed the old way with
person keys), and over sinks.paths (rebuild the attribution paths from the tables).
"""

from __future__ import annotations

import re

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from leadflow.cli.options import FiniteFloatRange, settings_of
from leadflow.cli.report import clickhouse_client, database_option
from leadflow.sinks.migrations import migrate
from leadflow.sinks.paths import refresh_margin, refresh_paths
from leadflow.sinks.projector import Projector, ProjectorStats
from leadflow.sinks.replay import replay
from leadflow.streams.rekey import Outcome, RekeyStats, progress_group, rekey


@click.group("replay", invoke_without_command=True)
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
    `leadflow replay rekey` first re-keys an event log written before keys carried the
    workspace (docs/operations.md, "Records keyed before the workspace"). `leadflow replay
    paths` rebuilds only the attribution paths, from what ClickHouse holds.
    """
    if ctx.invoked_subcommand is not None:
        return
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


@replay_cmd.command("paths")
@database_option
@click.pass_context
def paths_cmd(ctx: click.Context, database: str) -> None:
    """Rebuild every attribution path (journeys, conversion paths) from the tables.

    Paths are kept up to date incrementally, for the people marked since the last refresh
    (the projector's, or a report's). This rebuilds them all from the events, identities
    and merges ClickHouse already holds, without reading Kafka again: after a fix to how
    paths are built, or to check that the incremental paths match a full build. Run it
    when nothing else refreshes them (the projector holds the embedded engine anyway; on a
    server, stop it first). docs/analytics.md, "Attribution".
    """
    settings = settings_of(ctx)
    client = clickhouse_client(settings)
    try:
        migrate(client, database, settings.clickhouse_cluster)
        done = refresh_paths(client, database, margin_seconds=refresh_margin(client), full=True)
    finally:
        client.close()
    click.echo(f"every attribution path in {database} rebuilt in {done.seconds:.1f} s")


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topic(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not _TOPIC.fullmatch(value) or value in {".", ".."}:
        raise click.BadParameter(f"{value!r} is not a Kafka topic name")
    return value


@replay_cmd.command("rekey")
@click.option("--from", "source", required=True, callback=_topic, help="Topic to read.")
@click.option(
    "--to", "target", required=True, callback=_topic, help="Topic to write (new or this copy's)."
)
@click.option("--dry-run", is_flag=True, help="Read and count; write and commit nothing.")
@click.option("--batch", type=click.IntRange(1, 100_000), default=5000, show_default=True)
@click.pass_context
def rekey_cmd(ctx: click.Context, source: str, target: str, dry_run: bool, batch: int) -> None:
    """Copy an event log keyed by plain ids into TARGET keyed by person keys.

    Every record keyed by its device or lead id (as before keys carried the workspace) is
    written with its person key ["<workspace>","<id>"]; records with the person key already
    are copied as they are; value bytes and headers are unchanged. Records that do not
    decode, name nobody, or have no or someone else's key go to leadflow.events.dlq with
    their reason. Exactly once: each batch is one transaction with the source offsets (group
    leadflow-rekey.<from>.<to>); run it again to resume or to copy what came since. Stop the
    worker and the collector first for a rebuild (docs/operations.md).
    """
    settings = settings_of(ctx)
    with Progress(
        TextColumn("re-keying" if not dry_run else "counting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("records", total=None)

        def start(stats: RekeyStats) -> None:
            progress.update(task, total=stats.total or None)

        def advance(stats: RekeyStats) -> None:
            progress.update(task, completed=stats.read)

        stats = rekey(
            settings,
            source,
            target,
            dry_run=dry_run,
            batch_size=batch,
            on_start=start,
            on_batch=advance,
        )
    verb = "would copy" if dry_run else "copied"
    click.echo(
        f"{source} -> {target}: read {stats.read} records; {verb} "
        f"{stats.of(Outcome.REKEYED)} re-keyed + {stats.of(Outcome.KEPT)} kept, "
        f"{stats.of(Outcome.DEAD)} {'to dead-letter' if dry_run else 'dead-lettered'}, "
        f"{stats.of(Outcome.SKIPPED)} skipped"
        + (
            " (dry run: nothing written)"
            if dry_run
            else f" (progress: group {progress_group(source, target)})"
        )
    )
    for line in stats.lines():
        click.echo(f"  {line}")
    if stats.expired:
        click.echo(
            f"warning: {stats.expired} records of {source} expired (retention) after the last "
            "run stopped and before this one: not copied",
            err=True,
        )
