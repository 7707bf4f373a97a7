"""The ``leadflow`` command: one entry point, one settings object, subcommands per concern."""

from __future__ import annotations

import sys
from typing import NoReturn

import click
from rich.console import Console
from rich.table import Table

from leadflow import __version__
from leadflow.cli import collector as collector_cli
from leadflow.cli import simulate as simulator_cli
from leadflow.cli.dlq import dlq as dlq_group
from leadflow.cli.erase import erase_cmd
from leadflow.cli.model_eval import model_eval_cmd
from leadflow.cli.projector import projector as projector_cmd
from leadflow.cli.replay import replay_cmd
from leadflow.cli.report import report as report_group
from leadflow.cli.report import sql_cmd
from leadflow.cli.workspace import workspace as workspace_group
from leadflow.demo.run import demo_cmd
from leadflow.demo.site import site_cmd
from leadflow.processors.errors import LeadflowError
from leadflow.streams.local_kafka import LocalKafka, install
from leadflow.streams.logs import configure_logging
from leadflow.streams.settings import Settings, SettingsError, load_settings
from leadflow.streams.topics import ALL_TOPICS, create_topics
from leadflow.streams.worker import worker_cmd

console = Console(stderr=False)


def fail(message: str) -> NoReturn:
    """Print a clear error and exit 1 (no traceback for expected failures)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def settings_of(ctx: click.Context) -> Settings:
    """The settings the root command built."""
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="leadflow")
@click.pass_context
def cli(ctx: click.Context) -> None:
    r"""leadflow: B2B lead generation as one event log.

    Trackers and CRMs send events to the collector; Kafka keeps them forever; faust
    workers stitch identities, keep each lead's funnel stage and scores, and hand SQLs
    to sales; ClickHouse answers attribution, velocity and funnel questions.

    \b
    Quick start (local, nothing but Python, Java and Maven needed):
      leadflow kafka start      # a real Kafka broker on 127.0.0.1
      leadflow topics create    # the contract topics
      leadflow demo             # the whole pipeline on simulated traffic

    Configuration comes from LEADFLOW_* environment variables; `leadflow config`
    shows every one with its current value. Set LEADFLOW_KAFKA_BOOTSTRAP to use an
    existing Kafka, LEADFLOW_CLICKHOUSE_DSN for an existing ClickHouse.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        fail(str(exc))
    configure_logging(settings)
    ctx.obj = settings


@cli.command("config")
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Show every setting, its environment variable and its current value (secrets hidden)."""
    settings = settings_of(ctx)
    table = Table("variable", "value", "meaning")
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        table.add_row(f"LEADFLOW_{name.upper()}", str(value), field.description or "")
    console.print(table)


@cli.group()
def kafka() -> None:
    """Run the local Kafka broker (single-node KRaft on 127.0.0.1).

    Not used when LEADFLOW_KAFKA_BOOTSTRAP points at an existing cluster. The broker's
    jars come from Maven Central into LEADFLOW_CACHE_DIR, once; its data and server.log
    live under LEADFLOW_DATA_DIR/kafka.
    """


def _local_broker(ctx: click.Context) -> LocalKafka:
    settings = settings_of(ctx)
    if not settings.local_kafka:
        fail(
            f"LEADFLOW_KAFKA_BOOTSTRAP is set ({settings.bootstrap}): "
            "leadflow does not manage that broker"
        )
    return LocalKafka.from_settings(settings)


@kafka.command("install")
@click.pass_context
def kafka_install(ctx: click.Context) -> None:
    """Fetch the broker's jars from Maven Central (once; later calls return at once)."""
    libs = install(settings_of(ctx))
    click.echo(f"Kafka jars in {libs}")


@kafka.command("start")
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for ready.")
@click.pass_context
def kafka_start(ctx: click.Context, timeout: float) -> None:
    """Format storage if new, start the broker in the background, wait until it serves."""
    broker = _local_broker(ctx)
    broker.start(timeout=timeout)
    click.echo(f"Kafka is up on {broker.bootstrap} (log: {broker.log_file})")


@kafka.command("stop")
@click.pass_context
def kafka_stop(ctx: click.Context) -> None:
    """Stop the broker cleanly (SIGTERM; SIGKILL after 30 s)."""
    _local_broker(ctx).stop()
    click.echo("Kafka stopped")


@kafka.command("status")
@click.pass_context
def kafka_status(ctx: click.Context) -> None:
    """Say whether the broker runs and serves requests; exit 3 when it does not."""
    broker = _local_broker(ctx)
    pid = broker.pid()
    if pid is not None and broker.ready(timeout=3):
        click.echo(f"running: pid {pid}, {broker.bootstrap}, log {broker.log_file}")
        return
    click.echo("running but not serving yet" if pid else "stopped")
    sys.exit(3)


@cli.group()
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


def main() -> None:
    """Console-script entry point: domain errors become one clear line and exit 1."""
    try:
        cli(prog_name="leadflow")
    except LeadflowError as exc:
        fail(str(exc))


# Each concern's commands live in its own module; they are registered here, one line each.
cli.add_command(site_cmd)
cli.add_command(worker_cmd)
cli.add_command(demo_cmd)
cli.add_command(collector_cli.collector)
cli.add_command(collector_cli.keys)
cli.add_command(simulator_cli.simulate)
cli.add_command(projector_cmd)
cli.add_command(report_group)
cli.add_command(sql_cmd)
cli.add_command(replay_cmd)
cli.add_command(model_eval_cmd)
cli.add_command(workspace_group)
cli.add_command(erase_cmd)
cli.add_command(dlq_group)
