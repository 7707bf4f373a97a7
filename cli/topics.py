"""``leadflow topics``: create and list the contract topics."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from leadflow.cli.options import settings_of
from leadflow.streams.topics import ALL_TOPICS, create_topics

console = Console(stderr=False)


@click.group()
def topics() -> None:
    """Create and list the contract topics (see docs/architecture.md)."""


@topics.command("create")
@click.option("--partitions", type=click.IntRange(1, 10_000), help="Override partitions.")
@click.option("--replication", type=click.IntRange(1, 32), help="Override replication factor.")
@click.pass_context
def topics_create(ctx: click.Context, partitions: int | None, replication: int | None) -> None:
    """Create every contract topic that does not exist yet (safe to run again).

    The event log and derived topics keep records forever; keyed state topics are
    compacted. Defaults: LEADFLOW_TOPIC_PARTITIONS (12), LEADFLOW_TOPIC_REPLICATION (1).
    """
    settings = settings_of(ctx)
    overrides = {
        k: v
        for k, v in {"topic_partitions": partitions, "topic_replication": replication}.items()
        if v is not None
    }
    if overrides:
        settings = settings.model_copy(update=overrides)
    for name, status in sorted(create_topics(settings).items()):
        click.echo(f"{status:8} {name}")


@topics.command("list")
def topics_list() -> None:
    """List the contract topics with their key and purpose."""
    table = Table("topic", "key", "kind", "what flows on it")
    for spec in ALL_TOPICS:
        table.add_row(
            spec.name, spec.key, "compacted" if spec.compacted else "log", spec.description
        )
    console.print(table)
