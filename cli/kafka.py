"""``leadflow kafka``: install, start, stop and check the local Kafka broker."""

from __future__ import annotations

import sys

import click

from leadflow.cli.options import fail, settings_of
from leadflow.streams.local_kafka import LocalKafka, install


@click.group()
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
