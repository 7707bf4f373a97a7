import pytest

from leadflow.streams.settings import load_settings
from leadflow.streams.stages.routes import ROUTES
from leadflow.streams.topics import (
    ALL_TOPICS,
    EVENTS,
    MODELS,
    TRAINING_EXAMPLES,
    TopicError,
    TopicSpec,
    replication_for,
)


def test_every_topic_the_worker_writes_is_created() -> None:
    created = {spec.name for spec in ALL_TOPICS}
    for spec, _key in ROUTES.values():
        assert spec.name in created, f"{spec.name} is written by the worker but never created"


def test_the_event_log_is_kept_forever_and_state_is_compacted() -> None:
    assert EVENTS.config(1) == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        # The broker's clock bounds receive stamps (processors/receive_bound.py).
        "message.timestamp.type": "LogAppendTime",
    }
    assert MODELS.config(1)["cleanup.policy"] == "compact"
    assert TopicSpec("x", "k", "d").config(3)["min.insync.replicas"] == "2"


def test_training_examples_is_one_partition_whatever_the_default() -> None:
    # Every by-lead partition promises each training-examples partition and each of them
    # promises every by-lead partition back: extra partitions multiply markers, not speed.
    assert TRAINING_EXAMPLES.partitions == 1


def test_topic_names_are_unique_and_namespaced() -> None:
    names = [spec.name for spec in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert all(name.startswith("leadflow.") for name in names)


def test_replication_follows_the_cluster_up_to_three_copies() -> None:
    settings = load_settings()
    assert [replication_for(settings, n) for n in (1, 2, 3, 5)] == [1, 2, 3, 3]


def test_a_replication_setting_wins_but_never_exceeds_the_brokers() -> None:
    settings = load_settings(topic_replication=2)
    assert replication_for(settings, 3) == 2
    with pytest.raises(TopicError, match="LEADFLOW_TOPIC_REPLICATION is 2 but the cluster has 1"):
        replication_for(settings, 1)
