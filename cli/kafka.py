"""``leadflow kafka``: install, start, stop and check the local Kafka (one node or a cluster)."""

from __future__ import annotations

import sys

import click

from leadflow.cli.options import fail, settings_of
from leadflow.processors.errors import LeadflowError
from leadflow.streams.kafka_cluster import KafkaCluster
from leadflow.streams.kafka_health import ClusterHealth, cluster_health
from leadflow.streams.local_kafka import install
from leadflow.streams.settings import Settings

# How many under-replicated or offline partitions `status` lists by name.
LISTED = 10


@click.group()
def kafka() -> None:
    """Run the local Kafka: one node, or a KRaft cluster of several (127.0.0.1).

    LEADFLOW_KAFKA_BROKERS=3 (or `start --brokers 3`) runs three nodes, each a broker and a
    controller: topics get 3 copies with min.insync.replicas=2, so any one node may die.
    Node n listens on LEADFLOW_KAFKA_PORT + 2(n-1) (controller: LEADFLOW_KAFKA_CONTROLLER_PORT
    + 2(n-1)); every leadflow process with the same LEADFLOW_KAFKA_BROKERS gets all nodes
    as its bootstrap list. Not used when LEADFLOW_KAFKA_BOOTSTRAP points at an existing
    cluster (`status` still reports on it). The jars come from Maven Central into
    LEADFLOW_CACHE_DIR, once; data and server.log live under LEADFLOW_DATA_DIR/kafka.
    """


def _local_cluster(ctx: click.Context, brokers: int | None = None) -> KafkaCluster:
    settings = settings_of(ctx)
    if not settings.local_kafka:
        fail(
            f"LEADFLOW_KAFKA_BOOTSTRAP is set ({settings.bootstrap}): "
            "leadflow does not manage that broker"
        )
    try:
        return KafkaCluster.from_settings(settings, brokers)
    except LeadflowError as exc:
        fail(str(exc))


@kafka.command("install")
@click.pass_context
def kafka_install(ctx: click.Context) -> None:
    """Fetch the broker's jars from Maven Central (once; later calls return at once)."""
    libs = install(settings_of(ctx))
    click.echo(f"Kafka jars in {libs}")


@kafka.command("start")
@click.option(
    "--brokers",
    type=click.IntRange(1, 9),
    help="Nodes to run (default LEADFLOW_KAFKA_BROKERS, 1); other processes need the same.",
)
@click.option("--timeout", default=240.0, show_default=True, help="Seconds to wait for ready.")
@click.pass_context
def kafka_start(ctx: click.Context, brokers: int | None, timeout: float) -> None:
    """Format storage if new, start the node(s) in the background, wait until all serve."""
    cluster = _local_cluster(ctx, brokers)
    try:
        cluster.start(timeout=timeout)
    except LeadflowError as exc:
        fail(str(exc))
    count = len(cluster.nodes)
    if count == 1:
        click.echo(f"Kafka is up on {cluster.bootstrap} (log: {cluster.nodes[0].log_file})")
        return
    click.echo(f"Kafka cluster of {count} nodes is up: {cluster.bootstrap}")
    if count != settings_of(ctx).kafka_brokers:
        click.echo(f"Set LEADFLOW_KAFKA_BROKERS={count} for every other leadflow command.")


@kafka.command("stop")
@click.pass_context
def kafka_stop(ctx: click.Context) -> None:
    """Stop every node cleanly (SIGTERM; SIGKILL after 30 s)."""
    _local_cluster(ctx).stop()
    click.echo("Kafka stopped")


def _print_health(health: ClusterHealth) -> None:
    leaders = ", ".join(f"{broker}: {n}" for broker, n in health.leaders().items())
    click.echo(f"brokers alive: {len(health.brokers)} ({', '.join(map(str, health.brokers))})")
    click.echo(f"partitions: {len(health.partitions)}; leaders per broker: {leaders}")
    for label, partitions in (
        ("under-replicated", health.under_replicated),
        ("offline", health.offline),
    ):
        click.echo(f"{label}: {len(partitions)}")
        for partition in partitions[:LISTED]:
            click.echo(f"  {partition.describe()}")
        if len(partitions) > LISTED:
            click.echo(f"  ... {len(partitions) - LISTED} more")


def _health_or_none(settings: Settings) -> ClusterHealth | None:
    try:
        return cluster_health(settings, timeout=5.0)
    except Exception as exc:
        click.echo(f"no broker answered: {exc}")
        return None


@kafka.command("status")
@click.pass_context
def kafka_status(ctx: click.Context) -> None:
    """Each node's process, then leaders, under-replicated and offline partitions.

    Exits 3 when a local node is down or does not serve, or a partition has no leader;
    under-replicated partitions alone (a node catching up) are reported, exit 0.
    With LEADFLOW_KAFKA_BOOTSTRAP set it reports on that cluster's partitions only.
    """
    settings = settings_of(ctx)
    healthy = True
    if settings.local_kafka:
        nodes = _local_cluster(ctx).nodes
        running = 0
        for number, node in enumerate(nodes, start=1):
            pid = node.pid()
            running += pid is not None
            if pid is not None and node.ready(timeout=3):
                click.echo(f"node {number}: running, pid {pid}, {node.bootstrap}, {node.log_file}")
            else:
                healthy = False
                click.echo(f"node {number}: {'running but not serving' if pid else 'stopped'}")
            if skipped := node.skipped_markers():
                click.echo(
                    f"node {number}: WARNING Kafka skipped the transaction markers of "
                    f"partitions without a leader {len(skipped)} time(s), last: "
                    f"{skipped[-1][:25]}; a transaction committing when the node was killed "
                    'may be broken (docs/operations.md, "The single-node broker killed -9")'
                )
        if not running:
            sys.exit(3)
    health = _health_or_none(settings)
    if health is None:
        sys.exit(3)
    _print_health(health)
    if not healthy or health.offline:
        sys.exit(3)
