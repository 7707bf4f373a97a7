"""The compose stack must only set variables leadflow knows (a typo would be silently ignored)."""

from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

from leadflow.streams.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def leadflow_variables(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {k for k in node if isinstance(k, str) and k.startswith(ENV_PREFIX)}
        for value in node.values():
            found |= leadflow_variables(value)
        return found
    if isinstance(node, list):
        return set().union(*(leadflow_variables(v) for v in node)) if node else set()
    return set()


def test_compose_sets_only_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    used = leadflow_variables(compose)
    assert used, "the compose file configures leadflow through LEADFLOW_* variables"
    assert used <= known, f"unknown settings in docker-compose.yml: {sorted(used - known)}"


BROKERS = ("kafka-1", "kafka-2", "kafka-3")


def services() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])


def test_compose_runs_every_part_of_the_stack() -> None:
    found = services()
    for part in (*BROKERS, "schema-registry", "clickhouse-1", "clickhouse-2", "collector",
                 "worker", "projector", "grafana"):  # fmt: skip
        assert part in found
    assert all(found[b]["image"].startswith("apache/kafka:") for b in BROKERS)
    assert found["worker"]["deploy"]["replicas"] >= 3
    # Each worker replica keeps its own state: a shared volume would mix their stores.
    assert "volumes" not in found["worker"]


def test_the_three_kafka_nodes_form_one_quorum_with_three_copies() -> None:
    found = services()
    envs = [found[b]["environment"] for b in BROKERS]
    assert sorted(e["KAFKA_NODE_ID"] for e in envs) == [1, 2, 3]
    assert len({e["CLUSTER_ID"] for e in envs}) == 1
    voters = {e["KAFKA_CONTROLLER_QUORUM_VOTERS"] for e in envs}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    for env, broker in zip(envs, BROKERS, strict=True):
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{broker}:9092"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 2
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
    for name in ("collector", "worker", "projector", "init"):
        env = found[name]["environment"]
        assert env["LEADFLOW_KAFKA_BOOTSTRAP"] == ",".join(f"{b}:9092" for b in BROKERS)
        assert env["LEADFLOW_TOPIC_REPLICATION"] == "3"


def test_clickhouse_runs_the_cluster_the_ddl_names() -> None:
    found = services()
    cluster = found["worker"]["environment"]["LEADFLOW_CLICKHOUSE_CLUSTER"]
    config = ElementTree.parse(ROOT / "infra" / "clickhouse" / "cluster" / "cluster.xml")
    shard = config.getroot().find(f"remote_servers/{cluster}/shard")
    assert shard is not None, f"cluster {cluster} is not defined for the servers"
    hosts = {replica.findtext("host") for replica in shard.findall("replica")}
    assert hosts == {"clickhouse-1", "clickhouse-2"}
    for host in hosts:
        assert found[host]["environment"]["REPLICA"] == host
    keepers = {node.findtext("host") for node in config.getroot().findall("zookeeper/node")}
    assert keepers == {"keeper-1", "keeper-2", "keeper-3"} <= set(found)


def test_the_collector_is_healthy_only_when_it_can_acknowledge() -> None:
    check = " ".join(services()["collector"]["healthcheck"]["test"])
    assert "/ready" in check
