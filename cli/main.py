"""The ``leadflow`` command: one entry point, one settings object, subcommands per concern."""

from __future__ import annotations

import os

import click
from rich.console import Console
from rich.table import Table

from leadflow import __version__
from leadflow.cli import (
    collector,
    demo,
    dlq,
    erase,
    identity_eval,
    kafka,
    keys,
    model_eval,
    policy,
    projector,
    replay,
    report,
    simulate,
    site,
    topics,
    worker,
    workspace,
)
from leadflow.cli.options import fail, settings_of
from leadflow.processors.errors import LeadflowError
from leadflow.streams.logs import configure_logging
from leadflow.streams.private_files import PRIVATE_UMASK, private_dir
from leadflow.streams.settings import Settings, SettingsError, load_settings

console = Console(stderr=False)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="leadflow")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """leadflow: B2B lead generation as one event log.

    Trackers and CRMs send events to the collector; Kafka keeps them forever; workers
    stitch identities, keep each lead's funnel stage and scores, and hand SQLs
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
    # Everything leadflow writes (broker segments with PII keys, worker state, ClickHouse,
    # key files) is for this user only: new files 0600, directories 0700 (docs/operations.md).
    os.umask(PRIVATE_UMASK)
    data_dir = settings.data_dir
    if data_dir.is_dir() and data_dir.stat().st_uid == os.getuid():
        private_dir(data_dir)
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


def main() -> None:
    """Console-script entry point: domain errors become one clear line and exit 1."""
    try:
        cli(prog_name="leadflow")
    except LeadflowError as exc:
        fail(str(exc))


# Each command group lives in its own module of leadflow.cli; they are registered here.
for command in (
    kafka.kafka,
    topics.topics,
    collector.collector,
    keys.keys,
    worker.worker_cmd,
    projector.projector,
    report.report,
    report.sql_cmd,
    replay.replay_cmd,
    workspace.workspace,
    erase.erase_cmd,
    dlq.dlq,
    simulate.simulate,
    site.site_cmd,
    demo.demo_cmd,
    model_eval.model_eval_cmd,
    identity_eval.identity_eval_cmd,
    policy.policy,
):
    cli.add_command(command)
