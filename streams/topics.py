"""The contract topics and the one function that creates them.

The event log keeps events forever (it *is* the system of record: every projection and
every piece of state can be rebuilt from it). Derived event topics are kept forever too,
so ClickHouse can be rebuilt by replay. Keyed state topics are compacted: only the latest
value per key matters.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException, Message
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from leadflow.processors.errors import LeadflowError
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings

log = get_logger(__name__)

FOREVER = -1

# How each writer maps a key to a partition. The collector (and every other writer of
# ``leadflow.events``: the eraser, ``leadflow rekey``; the PII key vault and the audit log
# too) keeps librdkafka's default, CRC32; the
# worker hashes as Java's clients do (murmur2), the partitions faust used for by-lead and the
# changelogs. A record sent back by hand must land where its writer put it, or it meets
# another partition's state: one person split in two.
COLLECTOR_PARTITIONER = "consistent_random"
WORKER_PARTITIONER = "murmur2_random"


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the contract.

    Attributes:
        name: the public topic name.
        key: what the record key is (documentation, and what partitions by).
        description: what flows on it.
        compacted: keep only the newest record per key.
        overrides: extra broker-side config for this topic only (``(name, value)`` pairs).
        partitions: a fixed partition count (``None``: ``LEADFLOW_TOPIC_PARTITIONS``).
    """

    name: str
    key: str
    description: str
    compacted: bool = False
    overrides: tuple[tuple[str, str], ...] = ()
    partitions: int | None = None

    def config(self, replication: int) -> dict[str, str]:
        """Broker-side topic config for this topic."""
        config = (
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
            if self.compacted
            else {"cleanup.policy": "delete", "retention.ms": str(FOREVER)}
        )
        if replication >= 3:
            # With acks=all, one replica down must not stop writes; two down must.
            config["min.insync.replicas"] = "2"
        config.update(dict(self.overrides))
        return config


EVENTS = TopicSpec(
    "leadflow.events",
    "person (lead_id or anonymous_id)",
    "inbound events, Avro",
    # The broker's clock stamps every record: the bound on receive stamps
    # (processors/receive_bound.py) then does not trust a writer's clock.
    overrides=(("message.timestamp.type", "LogAppendTime"),),
)
EVENTS_BY_LEAD = TopicSpec(
    "leadflow.events.by-lead", "lead_id", "inbound events re-keyed by lead after identity"
)
DLQ = TopicSpec(
    "leadflow.events.dlq", "original key", "records that could not be processed, with reason"
)
LEAD_SCORED = TopicSpec("leadflow.lead-scored", "lead_id", "rule and model scores")
LEAD_STAGE_CHANGED = TopicSpec("leadflow.lead-stage-changed", "lead_id", "funnel transitions")
LEAD_BECAME_MQL = TopicSpec("leadflow.lead-became-mql", "lead_id", "a lead became MQL")
LEAD_BECAME_SQL = TopicSpec(
    "leadflow.lead-became-sql", "lead_id", "hand-off payload, one per SQL transition"
)
LEAD_OWNER_ASSIGNED = TopicSpec(
    "leadflow.lead-owner-assigned", "lead_id", "routing: a lead got (or escalated to) an owner"
)
SLA_BREACHED = TopicSpec("leadflow.sla-breached", "lead_id", "MQL not reviewed within the SLA")
NURTURE_ACTIONS = TopicSpec("leadflow.nurture-actions", "lead_id", "behavioural nurture triggers")
TRAINING_EXAMPLES = TopicSpec(
    "leadflow.training-examples",
    "workspace_id",
    "labelled feature vectors for the online model",
    # One partition: every lead partition sends its promise to every partition here and every
    # trainer partition promises every by-lead partition (the model switch), so each extra
    # partition adds a marker and a changelog write to most transactions (docs/benchmarks.md,
    # session 6); examples are ~1 in 50 records and learning one takes microseconds.
    partitions=1,
)
MODELS = TopicSpec("leadflow.models", "workspace_id", "signed model snapshots", compacted=True)
LEAD_MERGED = TopicSpec(
    "leadflow.lead-merged",
    "lead_id (the survivor)",
    "identity merges: an id merged into a survivor for good (redirected, never re-used)",
)
IDENTITIES = TopicSpec(
    "leadflow.identities", "anonymous_id", "anonymous id to lead id", compacted=True
)
PII_KEYS = TopicSpec(
    "leadflow.pii-keys",
    "[kind, workspace, subject, key id] (JSON)",
    "per-person PII encryption keys; a tombstone shreds (docs/privacy.md)",
    compacted=True,
    # A shredded key's bytes must leave the disk in bounded time, not "eventually":
    # roll segments every 10 min and force compaction within an hour of the tombstone.
    overrides=(
        ("segment.ms", "600000"),
        ("max.compaction.lag.ms", "3600000"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ),
)

AUDIT = TopicSpec(
    "leadflow.audit",
    "[workspace, audit id] (JSON)",
    "who did what, when: erasures and their previews (JSON, kept forever; docs/privacy.md)",
    # One partition: one total order of what was done, and a lookup reads one log.
    partitions=1,
)

# What `leadflow worker` consumes (its agents' inputs; lag is counted over these).
WORKER_INPUTS: tuple[TopicSpec, ...] = (EVENTS, EVENTS_BY_LEAD, TRAINING_EXAMPLES)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    EVENTS,
    EVENTS_BY_LEAD,
    DLQ,
    LEAD_SCORED,
    LEAD_STAGE_CHANGED,
    LEAD_BECAME_MQL,
    LEAD_BECAME_SQL,
    LEAD_OWNER_ASSIGNED,
    SLA_BREACHED,
    NURTURE_ACTIONS,
    TRAINING_EXAMPLES,
    MODELS,
    IDENTITIES,
    PII_KEYS,
    AUDIT,
    LEAD_MERGED,
)


class TopicError(LeadflowError):
    """A topic could not be created."""


# Three copies survive one broker down with min.insync.replicas=2 still met; more copies
# cost disk and replication traffic without changing what one failure does.
MAX_DEFAULT_REPLICATION = 3


def replication_for(settings: Settings, brokers: int) -> int:
    """The replication factor for new topics on a cluster of ``brokers`` brokers.

    ``LEADFLOW_TOPIC_REPLICATION`` when set, else the cluster's size up to 3.

    Raises:
        TopicError: the setting asks for more copies than there are brokers.

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> replication_for(load_settings(), 1), replication_for(load_settings(), 5)
        (1, 3)
    """
    wanted = settings.topic_replication
    if wanted is None:
        return max(1, min(brokers, MAX_DEFAULT_REPLICATION))
    if wanted > brokers:
        raise TopicError(
            f"LEADFLOW_TOPIC_REPLICATION is {wanted} but the cluster has {brokers} broker(s)"
        )
    return wanted


def _await_on_every_broker(
    settings: Settings, brokers: Iterable[str], names: list[str], timeout: float
) -> None:
    """Wait until every broker's metadata has the topics, each partition with a leader.

    A created topic is committed by the controller first and reaches each broker's
    metadata cache a moment later; a client starting right after `topics create` that
    asks another broker would be told the topic does not exist.

    Raises:
        TopicError: naming the broker and the topics it still lacks at the deadline.
    """
    deadline = time.monotonic() + timeout
    for address in brokers:
        admin = AdminClient({**settings.kafka_client_config(), "bootstrap.servers": address})
        while True:
            try:
                topics = admin.list_topics(timeout=5.0).topics
            except KafkaException as exc:
                # A broker that just died is still listed until the controller fences it;
                # it misleads nobody while it does not answer.
                log.warning("topics.broker_unanswered", broker=address, error=str(exc))
                break
            lacking = [
                name
                for name in names
                if name not in topics
                or topics[name].error is not None
                or any(p.leader < 0 for p in topics[name].partitions.values())
            ]
            if not lacking:
                break
            if time.monotonic() > deadline:
                raise TopicError(f"broker {address} still lacks {lacking} after {timeout:.0f}s")
            time.sleep(0.1)


Header = tuple[str, str | bytes | None]


def record_headers(message: Message) -> list[tuple[str, bytes | None]]:
    """A consumed record's headers as ``(name, bytes)`` pairs, in order (``[]`` for none)."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in pairs]


def dead_letter_headers(
    message: Message, reason: str, error: str, *, stage: str, group: str
) -> list[Header]:
    """The record's own headers plus why and whence, for ``leadflow.events.dlq``.

    The convention the projector, the collector and ``leadflow replay rekey`` write and
    ``leadflow dlq show`` reads (``by`` = ``<stage>:<group>``).
    """
    return [
        *record_headers(message),
        ("reason", reason.encode()),
        ("error", error.encode()[:4000]),
        ("source.topic", str(message.topic()).encode()),
        ("source.partition", str(message.partition()).encode()),
        ("source.offset", str(message.offset()).encode()),
        ("stage", stage.encode()),
        ("group", group.encode()),
    ]


def create_topics(
    settings: Settings, topics: Iterable[TopicSpec] = ALL_TOPICS, timeout: float = 30.0
) -> dict[str, str]:
    """Create the topics that do not exist yet; return ``{name: "created" | "exists"}``.

    Safe to run again: existing topics are left as they are (partitions are never shrunk,
    replication is not changed). New topics get :func:`replication_for` the cluster.
    """
    admin = AdminClient(settings.kafka_client_config())
    wanted = list(topics)
    metadata = admin.list_topics(timeout=timeout)
    existing = set(metadata.topics)
    # The brokers that answer, but never fewer than the local cluster's known size: a
    # local node that is down then makes creation fail loudly instead of quietly giving
    # fewer copies. (A remote broker that is down lowers it; the log line says so.)
    brokers = max(len(metadata.brokers), settings.kafka_brokers if settings.local_kafka else 0)
    replication = replication_for(settings, brokers)
    outcome = {spec.name: "exists" for spec in wanted if spec.name in existing}
    new = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions or settings.topic_partitions,
            replication_factor=replication,
            config=spec.config(replication),
        )
        for spec in wanted
        if spec.name not in existing
    ]
    if new:
        for name, future in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
                outcome[name] = "created"
            except KafkaException as exc:
                if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                    outcome[name] = "exists"
                else:
                    raise TopicError(f"creating {name} failed: {exc}") from exc
    addresses = [f"{b.host}:{b.port}" for b in metadata.brokers.values()]
    _await_on_every_broker(settings, addresses, [spec.name for spec in wanted], timeout)
    log.info(
        "topics.ensured",
        created=sorted(n for n, s in outcome.items() if s == "created"),
        replication=replication,
        existing=sum(1 for s in outcome.values() if s == "exists"),
    )
    return outcome


def writer_partitioner(topic: str) -> str:
    """The partitioner of the process that writes ``topic`` (librdkafka's name for it).

    Example:
        >>> writer_partitioner("leadflow.events"), writer_partitioner("leadflow.events.by-lead")
        ('consistent_random', 'murmur2_random')
    """
    # Written through the collector's or the acknowledged producer (streams/acked_producer).
    by_default = {EVENTS.name, PII_KEYS.name, AUDIT.name}
    return COLLECTOR_PARTITIONER if topic in by_default else WORKER_PARTITIONER


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash, as Java's clients and librdkafka's ``murmur2_random`` compute it.

    Example (Kafka's own test vectors, as signed 32-bit values):
        >>> [murmur2(s) - (1 << 32) * (murmur2(s) >> 31) for s in (b"21", b"abc", b"foobar")]
        [-973932308, 479470107, -790332482]
    """
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) // 4
    for i in range(whole):
        k = (int.from_bytes(data[4 * i : 4 * i + 4], "little") * m) & 0xFFFFFFFF
        k ^= k >> r
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    tail = data[4 * whole :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def worker_partition(key: bytes, partitions: int) -> int:
    """The partition the worker's producer (:data:`WORKER_PARTITIONER`) puts ``key`` on.

    A task that must know where a record lands when it sends it (the lead stage counts its
    forwards per target partition) names this partition explicitly, so placement and count
    cannot disagree; ``tests/integration/cli/test_dlq.py`` checks it against librdkafka.

    Example:
        >>> worker_partition(b"21", 12)
        0
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions
