"""`leadflow kafka start --brokers 3 | status | stop` and `topics create` on a real 3-node cluster.

A node is killed with -9 between two `status` calls: status names it stopped and counts the
under-replicated partitions; `kafka start` brings it back and the cluster settles.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from confluent_kafka.admin import AdminClient, ConfigResource

from leadflow.cli.main import cli
from leadflow.streams.kafka_health import cluster_health, wait_settled
from leadflow.streams.local_kafka import free_port_run
from leadflow.streams.settings import Settings, load_settings
from leadflow.streams.topics import ALL_TOPICS, EVENTS


@pytest.fixture
def cluster_env(base_settings: Settings, tmp_path: Path) -> dict[str, str]:
    if not base_settings.local_kafka:
        pytest.skip("LEADFLOW_KAFKA_BOOTSTRAP is set: this test runs its own local cluster")
    base = free_port_run(6)  # 3 nodes: clients p, p+2, p+4; controllers +1
    return {
        "LEADFLOW_DATA_DIR": str(tmp_path),
        "LEADFLOW_CACHE_DIR": str(base_settings.cache_dir),
        "LEADFLOW_KAFKA_PORT": str(base),
        "LEADFLOW_KAFKA_CONTROLLER_PORT": str(base + 1),
        "LEADFLOW_KAFKA_HEAP": "384m",
        "LEADFLOW_TOPIC_PARTITIONS": "4",
        "LEADFLOW_LOG_FORMAT": "json",
    }


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.slow
@pytest.mark.timeout(900)  # three JVM starts, one restart and a stop on two shared cores
def test_a_three_node_cluster_from_the_cli_survives_a_node_killed(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    three = {**cluster_env, "LEADFLOW_KAFKA_BROKERS": "3"}
    settings = load_settings(
        data_dir=tmp_path,
        kafka_brokers=3,
        kafka_port=int(cluster_env["LEADFLOW_KAFKA_PORT"]),
        kafka_controller_port=int(cluster_env["LEADFLOW_KAFKA_CONTROLLER_PORT"]),
    )
    started = run(cluster_env, "kafka", "start", "--brokers", "3", "--timeout", "400")
    try:
        assert started.exit_code == 0, started.output
        assert f"cluster of 3 nodes is up: {settings.bootstrap}" in started.output
        assert "Set LEADFLOW_KAFKA_BROKERS=3" in started.output

        # The data dir holds three nodes: a command that expects one says what to set.
        wrong = run(cluster_env, "kafka", "status")
        assert wrong.exit_code == 1
        assert "holds a Kafka of 3 node(s), not 1: set LEADFLOW_KAFKA_BROKERS=3" in wrong.output

        created = run(three, "topics", "create")
        assert created.exit_code == 0, created.output
        admin = AdminClient(settings.kafka_client_config())
        topics = admin.list_topics(timeout=10).topics
        for spec in ALL_TOPICS:
            assert {len(p.replicas) for p in topics[spec.name].partitions.values()} == {3}
        resource = ConfigResource(ConfigResource.Type.TOPIC, EVENTS.name)
        config = admin.describe_configs([resource])[resource].result(timeout=10)
        assert config["min.insync.replicas"].value == "2"
        del admin  # its threads would keep reconnecting after the stop below

        healthy = run(three, "kafka", "status")
        assert healthy.exit_code == 0, healthy.output
        assert "brokers alive: 3 (1, 2, 3)" in healthy.output
        assert "under-replicated: 0" in healthy.output
        partitions = len(cluster_health(settings).partitions)

        pid = int((tmp_path / "kafka" / "node-2" / "broker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # the CLI started it in this process: reap it
        # Until the controller fences the dead node (its session ends) and every broker has
        # heard of it, a broker's metadata may still name it alive: ask until one does not.
        degraded = run(three, "kafka", "status")
        while "brokers alive: 3" in degraded.output:
            time.sleep(0.5)
            degraded = run(three, "kafka", "status")
        assert degraded.exit_code == 3, degraded.output
        assert "node 2: stopped" in degraded.output
        assert "brokers alive: 2 (1, 3)" in degraded.output
        # Every partition had a copy on node 2 (3 copies on 3 nodes); none lost its leader.
        assert f"under-replicated: {partitions}" in degraded.output
        assert "offline: 0" in degraded.output

        restarted = run(three, "kafka", "start")
        assert restarted.exit_code == 0, restarted.output
        wait_settled(settings, brokers=3)
        settled = run(three, "kafka", "status")
        assert settled.exit_code == 0, settled.output
        assert "under-replicated: 0" in settled.output
    finally:
        stopped = run(three, "kafka", "stop")
    assert stopped.exit_code == 0, stopped.output
    for node in (1, 2, 3):
        assert not (tmp_path / "kafka" / f"node-{node}" / "broker.pid").exists()
