"""The local cluster's layout and configuration, and the health summary (no JVM started)."""

import doctest
import importlib
import socket
from pathlib import Path

import pytest

from leadflow.streams.engine.kafka import producer_config
from leadflow.streams.kafka_cluster import KafkaCluster
from leadflow.streams.kafka_health import ClusterHealth, PartitionState
from leadflow.streams.local_kafka import KafkaError, LocalKafka, free_port_run, free_ports
from leadflow.streams.settings import SettingsError, load_settings


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_three_nodes_get_their_own_ports_and_every_node_in_the_bootstrap() -> None:
    settings = load_settings(kafka_brokers=3, kafka_port=27000, kafka_controller_port=27001)
    assert settings.kafka_node_ports == ((27000, 27001), (27002, 27003), (27004, 27005))
    assert settings.bootstrap == "127.0.0.1:27000,127.0.0.1:27002,127.0.0.1:27004"


def test_ports_that_would_collide_are_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"LEADFLOW_KAFKA_CONTROLLER_PORT: .*overlap"):
        load_settings(kafka_brokers=3, kafka_port=27000, kafka_controller_port=27002)


def test_cluster_nodes_form_one_quorum_with_three_copies_two_in_sync(tmp_path: Path) -> None:
    cluster = KafkaCluster.on_ports(
        tmp_path, tmp_path / "libs", [(27000, 27001), (27002, 27003), (27004, 27005)], "384m"
    )
    assert [node.home for node in cluster.nodes] == [tmp_path / f"node-{n}" for n in (1, 2, 3)]
    props = [properties(node._server_properties()) for node in cluster.nodes]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    voters = "1@127.0.0.1:27001,2@127.0.0.1:27003,3@127.0.0.1:27005"
    for p in props:
        assert p["controller.quorum.voters"] == voters
        assert "controller.quorum.bootstrap.servers" not in p
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
    assert cluster.bootstrap == "127.0.0.1:27000,127.0.0.1:27002,127.0.0.1:27004"


def test_one_node_stays_the_standalone_broker_in_the_same_folder(tmp_path: Path) -> None:
    cluster = KafkaCluster.on_ports(tmp_path, tmp_path / "libs", [(27000, 27001)], "384m")
    (node,) = cluster.nodes
    assert node.home == tmp_path
    p = properties(node._server_properties())
    assert p["controller.quorum.bootstrap.servers"] == "127.0.0.1:27001"
    assert p["offsets.topic.replication.factor"] == "1"
    assert "controller.quorum.voters" not in p


def test_a_property_override_replaces_the_default_and_adds_new_ones(tmp_path: Path) -> None:
    node = LocalKafka(
        tmp_path,
        tmp_path / "libs",
        27000,
        27001,
        overrides=(("num.io.threads", "8"), ("transaction.partition.verification.enable", "false")),
    )
    p = properties(node._server_properties())
    assert p["num.io.threads"] == "8"
    assert p["transaction.partition.verification.enable"] == "false"
    assert p["node.id"] == "1"


@pytest.mark.parametrize(
    "override", [("", "1"), ("a=b", "1"), ("num io", "1"), ("num.io.threads", "8\nnode.id=2")]
)
def test_an_override_that_is_not_one_property_line_is_refused(
    tmp_path: Path, override: tuple[str, str]
) -> None:
    node = LocalKafka(tmp_path, tmp_path / "libs", 27000, 27001, overrides=(override,))
    with pytest.raises(KafkaError, match="not a broker property"):
        node._server_properties()


def test_a_data_dir_holding_another_cluster_size_is_refused(tmp_path: Path) -> None:
    meta = tmp_path / "kafka" / "data" / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text("cluster.id=abc\n")
    with pytest.raises(KafkaError, match=r"holds a Kafka of 1 node.*LEADFLOW_KAFKA_BROKERS=1"):
        KafkaCluster.from_settings(load_settings(data_dir=tmp_path), brokers=3)


def test_health_counts_leaders_and_under_replicated_and_offline_partitions() -> None:
    health = ClusterHealth(
        (1, 3),
        (
            PartitionState("t", 0, 1, (1, 2, 3), (1, 3)),
            PartitionState("t", 1, 3, (3, 1, 2), (3, 1)),
            PartitionState("t", 2, -1, (2,), ()),
            PartitionState("u", 0, 3, (3, 1), (3, 1)),
        ),
    )
    assert health.leaders() == {1: 1, 3: 2}
    assert [p.partition for p in health.under_replicated] == [0, 1, 2]
    assert [p.describe() for p in health.offline] == ["t[2] leader -1 replicas 2 isr -"]
    assert not health.settled(2)
    settled = ClusterHealth((1, 2, 3), (PartitionState("t", 0, 1, (1, 2, 3), (1, 2, 3)),))
    assert settled.settled(3)
    assert not settled.settled(4)


def test_the_worker_producer_closes_idle_connections_before_the_hung_call_watchdog() -> None:
    # librdkafka #5511: a send_offsets_to_transaction stuck on a dead group coordinator is
    # looked at again only when a connection goes up or down; the idle close is that change,
    # and it must come before the watchdog exits the worker (docs/architecture.md).
    settings = load_settings()
    idle_ms = producer_config(settings, "w1")["connections.max.idle.ms"]
    assert isinstance(idle_ms, int)
    assert 0 < idle_ms < settings.worker_hung_call_seconds * 1000


@pytest.mark.parametrize("name", ["kafka_health", "settings", "topics", "local_kafka"])
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(f"leadflow.streams.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_picked_ports_are_free_and_outside_the_ephemeral_range() -> None:
    # A port from the ephemeral range can go to any outgoing connection before a broker
    # binds it (CI once lost a controller port so): picks stay below it.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    base = free_port_run(6)
    ports = [*range(base, base + 6), *free_ports(5)]
    assert len(set(ports[6:])) == 5
    assert all(port < low for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


SKIP_LINE = (
    "[2026-12-05 07:24:58,535] INFO [Transaction Marker Channel Manager 1]: Couldn't find "
    "leader endpoint for partitions HashSet(leadflow-release-changelog-3) while trying to "
    "send transaction markers for leadflow-worker-1, these partitions are likely deleted "
    "already and hence can be skipped (kafka.coordinator.transaction."
    "TransactionMarkerChannelManager)"
)


def test_skipped_transaction_markers_in_the_broker_log_are_found(tmp_path: Path) -> None:
    cluster = KafkaCluster.on_ports(tmp_path, tmp_path / "libs", [(27000, 27001)], "384m")
    (node,) = cluster.nodes
    assert node.skipped_markers() == []  # no log yet
    node.log_file.parent.mkdir(parents=True)
    node.log_file.write_text(f"[t] INFO Kafka Server started (k)\n{SKIP_LINE}\n")
    assert node.skipped_markers() == [SKIP_LINE]


def test_kafka_status_warns_about_skipped_transaction_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The warning shows even with the node stopped (status then exits 3 for that)."""
    from leadflow.cli.main import main
    from leadflow.streams import kafka_cluster

    monkeypatch.setenv("LEADFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(kafka_cluster, "install", lambda _settings: tmp_path / "libs")
    log_dir = tmp_path / "kafka" / "logs"
    log_dir.mkdir(parents=True)
    (log_dir / "server.log").write_text(f"{SKIP_LINE}\n{SKIP_LINE}\n")
    monkeypatch.setattr("sys.argv", ["leadflow", "kafka", "status"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 3
    out = capsys.readouterr().out
    assert "node 1: stopped" in out
    assert "WARNING Kafka skipped the transaction markers" in out
    assert "2 time(s), last: [2026-12-05 07:24:58,535]" in out
    assert "The single-node broker killed -9" in out


def test_a_node_logs_skipped_markers_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadflow.streams import local_kafka
    from tests.unit.streams.test_stall import Recorded

    recorded = Recorded()
    monkeypatch.setattr(local_kafka, "log", recorded)
    cluster = KafkaCluster.on_ports(tmp_path, tmp_path / "libs", [(27000, 27001)], "384m")
    (node,) = cluster.nodes
    node.warn_skipped_markers()
    assert recorded.lines == []
    node.log_file.parent.mkdir(parents=True)
    node.log_file.write_text(f"{SKIP_LINE}\n")
    node.warn_skipped_markers()
    assert [(level, event, f["times"]) for level, event, f in recorded.lines] == [
        ("error", "kafka.transaction_markers_skipped", 1)
    ]
