"""The contract topics and the one function that creates them.

The event log keeps events forever (it *is* the system of record: every projection and
every piece of state can be rebuilt from it). Derived event topics are kept forever too,
so ClickHouse can be rebuilt by replay. Keyed state topics are compacted: only the latest
value per key matters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from leadflow.processors.errors import LeadflowError
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings

log = get_logger(__name__)

FOREVER = -1


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the contract.

    Attributes:
        name: the public topic name.
        key: what the record key is (documentation, and what partitions by).
        description: what flows on it.
        compacted: keep only the newest record per key.
        overrides: extra broker-side config for this topic only (``(name, value)`` pairs).
    """

    name: str
    key: str
    description: str
    compacted: bool = False
    overrides: tuple[tuple[str, str], ...] = ()

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


EVENTS = TopicSpec("leadflow.events", "person (lead_id or anonymous_id)", "inbound events, Avro")
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
    "leadflow.training-examples", "lead_id", "labelled feature vectors for the online model"
)
MODELS = TopicSpec("leadflow.models", "workspace_id", "signed model snapshots", compacted=True)
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
)


class TopicError(LeadflowError):
    """A topic could not be created."""


def create_topics(
    settings: Settings, topics: Iterable[TopicSpec] = ALL_TOPICS, timeout: float = 30.0
) -> dict[str, str]:
    """Create the topics that do not exist yet; return ``{name: "created" | "exists"}``.

    Safe to run again: existing topics are left as they are (partitions are never shrunk).
    """
    admin = AdminClient(settings.kafka_client_config())
    wanted = list(topics)
    existing = set(admin.list_topics(timeout=timeout).topics)
    outcome = {spec.name: "exists" for spec in wanted if spec.name in existing}
    new = [
        NewTopic(
            spec.name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
            config=spec.config(settings.topic_replication),
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
    log.info(
        "topics.ensured",
        created=sorted(n for n, s in outcome.items() if s == "created"),
        existing=sum(1 for s in outcome.values() if s == "exists"),
    )
    return outcome
