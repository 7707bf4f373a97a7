"""Known issue: a single KRaft node killed -9 can skip a committing transaction's markers.

docs/operations.md, "The single-node broker killed -9": about 9 s after the node restarts,
its controller fences the node's previous registration, every partition is briefly without
a leader, and the transaction coordinator drops the markers it still had to write for them
("likely deleted already and hence can be skipped"). The transaction's records on those
partitions stay open until the producer's next transaction on them ends, and share its
fate. It hit the crash-equivalence module once (session 11's CI); in a scratch experiment
2 of 14 kills of a node under back-to-back transactions skipped markers, and this
test failed in 2 of 2 runs (session 12).

This test drives a plain transactional producer (no leadflow code on the path: the defect
is Kafka's) over 24 partitions, kills the node -9 up to ``KILLS`` times and fails as soon
as the node's log shows skipped markers, naming the transaction's partitions. It is
deselected by default (``pytest -m known_issue``). It fails while Kafka behaves so, unless
by chance no kill lands in the window (about (6/7)^KILLS, 5 %, from the experiment's rate).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from leadflow.streams.local_kafka import scratch_broker
from leadflow.streams.settings import Settings

PARTITIONS = 24
KILLS = 20

pytestmark = [pytest.mark.known_issue, pytest.mark.slow, pytest.mark.timeout(900)]


def _commit_back_to_back(bootstrap: str, stop: threading.Event, renew: threading.Event) -> None:
    """One transaction after another, one record per partition; a fresh producer on ``renew``."""
    while not stop.is_set():
        try:
            producer = Producer(
                {"bootstrap.servers": bootstrap, "transactional.id": "known-issue", "log_level": 0}
            )
            producer.init_transactions(30)
            while not stop.is_set() and not renew.is_set():
                producer.begin_transaction()
                for partition in range(PARTITIONS):
                    producer.produce("t", value=b"x", partition=partition)
                producer.commit_transaction(30)
            renew.clear()
        except KafkaException:
            time.sleep(0.5)  # the broker is away: start over with a fresh producer


def test_a_killed_single_node_writes_every_marker_of_a_committed_transaction(
    base_settings: Settings, tmp_path: Path
) -> None:
    with scratch_broker(base_settings, tmp_path / "kafka") as (broker, settings):
        admin = AdminClient({"bootstrap.servers": settings.bootstrap})
        admin.create_topics([NewTopic("t", PARTITIONS, 1)])["t"].result()
        stop, renew = threading.Event(), threading.Event()
        writer = threading.Thread(
            target=_commit_back_to_back, args=(settings.bootstrap, stop, renew), daemon=True
        )
        writer.start()
        try:
            for kill in range(1, KILLS + 1):
                time.sleep(2.0 + (kill % 3) * 0.7)  # land at different points of a commit
                renew.set()
                broker.kill()
                time.sleep(1.0)
                broker.start(timeout=120)
                time.sleep(3.0)  # the fence and the markers' retry come around ready
                skipped = broker.skipped_markers()
                assert skipped == [], f"kill {kill} of {KILLS}: Kafka skipped markers: {skipped}"
        finally:
            stop.set()
            writer.join(60)
