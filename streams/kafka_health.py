"""What a Kafka cluster looks like right now: live brokers, leaders, under-replicated partitions.

Read from one metadata request (any client can ask any broker), so it works on the local
cluster and on a remote one alike. ``leadflow kafka status`` prints it; tests and the local
cluster wait on it after a broker returns.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient

from leadflow.processors.errors import LeadflowError
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings

log = get_logger(__name__)


class ClusterNotHealthy(LeadflowError):
    """The cluster did not reach the wanted state in time (the message says what is missing)."""


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition's placement.

    Attributes:
        topic: topic name.
        partition: partition number.
        leader: broker id of the leader, -1 when the partition has none (offline).
        replicas: broker ids that should hold a copy.
        isr: broker ids whose copy is in sync.
    """

    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def under_replicated(self) -> bool:
        """Fewer copies in sync than assigned.

        Example:
            >>> PartitionState("t", 0, 1, (1, 2, 3), (1, 3)).under_replicated
            True
        """
        return len(self.isr) < len(self.replicas)

    @property
    def offline(self) -> bool:
        """No leader: nobody can read or write the partition."""
        return self.leader < 0

    def describe(self) -> str:
        """One line for a person, e.g. ``leadflow.events[3] leader 2 replicas 1,2,3 isr 2,3``."""
        replicas = ",".join(map(str, self.replicas))
        isr = ",".join(map(str, self.isr)) or "-"
        return f"{self.topic}[{self.partition}] leader {self.leader} replicas {replicas} isr {isr}"


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    """A snapshot of the cluster's metadata.

    Attributes:
        brokers: ids of the brokers that are registered and not fenced.
        partitions: every partition of every topic, internal ones included.

    The metadata's "controller id" is left out: under KRaft a broker reports a random
    live broker there, not the active controller.
    """

    brokers: tuple[int, ...]
    partitions: tuple[PartitionState, ...]

    @property
    def under_replicated(self) -> tuple[PartitionState, ...]:
        """Partitions with a copy out of sync (a broker down or catching up)."""
        return tuple(p for p in self.partitions if p.under_replicated)

    @property
    def offline(self) -> tuple[PartitionState, ...]:
        """Partitions without a leader."""
        return tuple(p for p in self.partitions if p.offline)

    def leaders(self) -> dict[int, int]:
        """How many partitions each live broker leads (0 for one that leads none).

        Example:
            >>> h = ClusterHealth((1, 2), (PartitionState("t", 0, 2, (1, 2), (1, 2)),))
            >>> h.leaders()
            {1: 0, 2: 1}
        """
        counts = Counter(p.leader for p in self.partitions if not p.offline)
        return {broker: counts.get(broker, 0) for broker in self.brokers}

    def settled(self, brokers: int) -> bool:
        """``brokers`` brokers alive, every partition led and every copy in sync."""
        return len(self.brokers) >= brokers and not self.offline and not self.under_replicated


def cluster_health(settings: Settings, timeout: float = 10.0) -> ClusterHealth:
    """Ask the cluster for its metadata and summarise it.

    Raises:
        KafkaException: no broker answered within ``timeout``.
    """
    admin = AdminClient({**settings.kafka_client_config(), "log_level": 0})
    metadata = admin.list_topics(timeout=timeout)
    partitions = tuple(
        PartitionState(
            topic=name,
            partition=p.id,
            leader=p.leader,
            replicas=tuple(p.replicas),
            isr=tuple(p.isrs),
        )
        for name, topic in sorted(metadata.topics.items())
        for p in sorted(topic.partitions.values(), key=lambda q: q.id)
    )
    return ClusterHealth(tuple(sorted(metadata.brokers)), partitions)


def wait_settled(settings: Settings, brokers: int, timeout: float = 120.0) -> ClusterHealth:
    """Wait until ``brokers`` brokers are alive and every partition is led and in sync.

    Used after a broker returns: it serves before it has caught up, and until then the
    cluster survives one failure fewer than it seems to.

    Raises:
        ClusterNotHealthy: naming the brokers and partitions still missing at the deadline.
    """
    deadline = time.monotonic() + timeout
    health: ClusterHealth | None = None
    while True:
        try:
            health = cluster_health(settings, timeout=5.0)
        except Exception as exc:  # a broker mid-restart may refuse; the deadline decides
            log.info("kafka.health_unanswered", error=str(exc))
        else:
            if health.settled(brokers):
                return health
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if health is None:
        raise ClusterNotHealthy(f"no broker answered a metadata request in {timeout:.0f}s")
    behind = [p.describe() for p in (*health.offline, *health.under_replicated)[:5]]
    raise ClusterNotHealthy(
        f"not settled in {timeout:.0f}s: brokers {list(health.brokers)} of {brokers}, "
        f"{len(health.offline)} offline, {len(health.under_replicated)} under-replicated "
        f"partitions, e.g. {behind}"
    )
