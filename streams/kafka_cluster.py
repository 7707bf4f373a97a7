"""A local Kafka cluster: N KRaft nodes from the same Maven jars, on loopback ports.

Each node is a broker and a controller in one JVM (``LocalKafka`` with ``voters``), and
the N controllers form a static quorum: with 3 nodes any one may die (kill -9) and the
other two keep electing leaders and accepting ``acks=all`` writes at
``min.insync.replicas=2``. One node is the single broker leadflow always ran, in the same
folder (``<data dir>/kafka``); N nodes live in ``<data dir>/kafka/node-<n>``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from leadflow.streams.kafka_health import ClusterHealth, wait_settled
from leadflow.streams.local_kafka import KafkaError, LocalKafka, free_ports, install, kafka_uuid
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings, node_ports_problem

log = get_logger(__name__)


def _formatted_nodes(home: Path) -> int:
    """How many nodes' storage is formatted under ``home`` (0: nothing there yet)."""
    if (home / "data" / "meta.properties").exists():
        return 1
    return sum(1 for _ in home.glob("node-*/data/meta.properties"))


def _cluster_id(node: LocalKafka) -> str | None:
    meta = node.home / "data" / "meta.properties"
    if not meta.exists():
        return None
    for line in meta.read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1].strip()
    return None


@dataclass(frozen=True)
class KafkaCluster:
    """The nodes of one local cluster, node 1 first.

    Attributes:
        home: the folder holding the node folders (or the single node itself).
        nodes: one ``LocalKafka`` per node.
    """

    home: Path
    nodes: tuple[LocalKafka, ...]

    @classmethod
    def on_ports(
        cls, home: Path, libs: Path, ports: Sequence[tuple[int, int]], heap: str
    ) -> KafkaCluster:
        """A cluster whose node n uses ``ports[n-1]`` (client port, controller port)."""
        if len(ports) == 1:
            port, controller = ports[0]
            return cls(home, (LocalKafka(home, libs, port, controller, heap),))
        voters = tuple((n, controller) for n, (_, controller) in enumerate(ports, start=1))
        nodes = tuple(
            LocalKafka(home / f"node-{n}", libs, port, controller, heap, n, voters)
            for n, (port, controller) in enumerate(ports, start=1)
        )
        return cls(home, nodes)

    @classmethod
    def from_settings(cls, settings: Settings, brokers: int | None = None) -> KafkaCluster:
        """The cluster the settings describe (``brokers`` overrides LEADFLOW_KAFKA_BROKERS).

        Raises:
            KafkaError: the ports collide, or the data dir already holds a cluster of
                another size (its nodes' ids and quorum are fixed when formatted).
        """
        count = brokers or settings.kafka_brokers
        problem = node_ports_problem(count, settings.kafka_port, settings.kafka_controller_port)
        if problem:
            raise KafkaError(problem)
        home = (settings.data_dir / "kafka").resolve()
        found = _formatted_nodes(home)
        if found and found != count:
            raise KafkaError(
                f"{home} holds a Kafka of {found} node(s), not {count}: set "
                f"LEADFLOW_KAFKA_BROKERS={found}, or use another LEADFLOW_DATA_DIR for "
                f"{count} (the quorum is fixed when storage is formatted)"
            )
        ports = settings.model_copy(update={"kafka_brokers": count}).kafka_node_ports
        return cls.on_ports(home, install(settings), ports, settings.kafka_heap)

    @property
    def bootstrap(self) -> str:
        """Every node's client address (clients find the cluster through any live one)."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        """Node ``node_id`` (1-based, as in the broker ids)."""
        return self.nodes[node_id - 1]

    def settings_for(self, settings: Settings) -> Settings:
        """``settings`` pointed at this cluster (what every client of a test should use)."""
        return settings.model_copy(update={"kafka_bootstrap": self.bootstrap})

    def start(self, timeout: float = 240.0) -> None:
        """Format new storage, start every node that is not running, wait until all serve.

        The nodes start together: a node alone cannot serve, since broker registration
        needs an elected controller, and that needs a majority of the voters.

        Raises:
            KafkaError: a node exited or did not serve in time (with its log's tail).
        """
        if len(self.nodes) > 1:
            cluster_id = next(filter(None, map(_cluster_id, self.nodes)), None) or kafka_uuid()
            with ThreadPoolExecutor(len(self.nodes)) as pool:  # a JVM start each: ~2 s
                list(pool.map(lambda node: node.format(cluster_id), self.nodes))
        elif not self.nodes[0].formatted:
            self.nodes[0].format(kafka_uuid())
        deadline = time.monotonic() + timeout
        launched = [(node, node.launch()) for node in self.nodes if node.pid() is None]
        try:
            for node, process in launched:
                node.await_ready(process, max(1.0, deadline - time.monotonic()))
        except KafkaError:
            self.stop()
            raise
        log.info("kafka.cluster_started", nodes=len(self.nodes), bootstrap=self.bootstrap)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node cleanly, all at once (SIGTERM, then SIGKILL after ``timeout``).

        In parallel, because a node's controlled shutdown waits for the controller, and
        one by one each would wait for the next election.
        """
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(timeout), self.nodes))

    def kill(self, node_id: int) -> None:
        """Kill node ``node_id`` with SIGKILL (a crash)."""
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout: float = 240.0) -> None:
        """Start node ``node_id`` again (it recovers its log and catches up by itself).

        The generous default is for shared 2-core machines: a JVM start there was measured
        at 85 s under a load average of 30.
        """
        node = self.node(node_id)
        node.await_ready(node.launch(), timeout)

    def wait_settled(self, settings: Settings, timeout: float = 120.0) -> ClusterHealth:
        """Wait until every node is back and every partition is in sync again."""
        return wait_settled(self.settings_for(settings), len(self.nodes), timeout)


@contextlib.contextmanager
def scratch_cluster(
    settings: Settings, home: Path, brokers: int = 3, heap: str = "384m"
) -> Iterator[tuple[KafkaCluster, Settings]]:
    """A throwaway cluster on free loopback ports in ``home``, and settings that use it.

    Small heaps: three JVMs share the machine with the workers under test. The settings
    leave the topic replication to the cluster's size (3 copies, 2 in sync).
    """
    free = free_ports(2 * brokers)
    ports = list(zip(free[::2], free[1::2], strict=True))
    cluster = KafkaCluster.on_ports(home, install(settings), ports, heap)
    cluster.start()
    try:
        yield cluster, cluster.settings_for(settings).model_copy(update={"topic_replication": None})
    finally:
        cluster.stop(timeout=20)
