"""Every non-worker client on a 3-broker cluster while one broker is killed with -9 and returns.

Simulated traffic flows through the real collector (PII sealed, so it also writes the key
ring) into ``leadflow.events`` while the projector fills ClickHouse. The broker leading
most ``leadflow.events`` partitions is killed mid-traffic; while it is down the key ring,
the model feed and ``leadflow topics create`` / ``kafka status`` are used; then it comes
back and the cluster settles with traffic still flowing. Every acknowledged event must be in
Kafka exactly once and in ClickHouse.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from leadflow.cli.main import cli
from leadflow.demo.simulator.generator import SimConfig, Simulation
from leadflow.demo.simulator.send import Message, send_http
from leadflow.sinks.projector import Projector
from leadflow.streams.kafka_cluster import KafkaCluster
from leadflow.streams.kafka_health import cluster_health
from leadflow.streams.model_feed import latest_snapshots
from leadflow.streams.pii.keyring import Keyring
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, MODELS, create_topics
from tests.integration.collector.conftest import make_collector, serve
from tests.integration.collector.test_outage import read_all_ids

# Steady, modest traffic: the point is records in flight at the kill, not load.
RATE = 60.0


class Traffic:
    """Simulated messages posted to the collector in a thread until stopped."""

    def __init__(self, url: str, key: str, rate: float = RATE) -> None:
        self.sent: list[Message] = []
        self.acknowledged = 0
        self.retries = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._url, self._key, self._rate = url, key, rate
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _messages(self) -> Iterator[Message]:
        for message in Simulation(SimConfig(people=3_000, days=60, seed=18)).messages():
            if self.stop.is_set():
                return
            self.sent.append(message)
            yield message

    def _on_sent(self, count: int, _last: Message) -> None:
        self.acknowledged += count

    def _run(self) -> None:
        try:
            self.retries = send_http(
                self._messages(),
                collector_url=self._url,
                write_key=self._key,
                rate=self._rate,
                on_sent=self._on_sent,
                max_retries=30,
            ).retries
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def wait_for(self, acknowledged: int) -> None:
        while self.acknowledged < acknowledged:
            assert self.error is None, self.error
            assert self._thread.is_alive(), "sender stopped early"
            time.sleep(0.2)

    def finish(self) -> list[str]:
        """Stop sending; the ids of every acknowledged message (batches go in order)."""
        self.stop.set()
        self._thread.join(120)
        assert self.error is None, self.error
        return [str(m["messageId"]) for m in self.sent[: self.acknowledged]]


def busiest_leader(settings: Settings) -> int:
    leaders = Counter(
        p.leader for p in cluster_health(settings).partitions if p.topic == EVENTS.name
    )
    return leaders.most_common(1)[0][0]


def publish_snapshot(settings: Settings, value: bytes) -> None:
    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    producer.produce(MODELS.name, key=b"ws-acme", value=value)
    assert producer.flush(30) == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_collector_projector_keyring_and_cli_ride_out_a_broker_killed(
    kafka_cluster: tuple[KafkaCluster, Settings],
    clickhouse_session: Any,
    clickhouse_db: str,
    tmp_path: Path,
    counts_checked: Callable[[str], None],
) -> None:
    cluster, cluster_settings = kafka_cluster
    settings = cluster_settings.model_copy(update={"data_dir": tmp_path})
    create_topics(settings)
    publish_snapshot(settings, b"snapshot-1")
    collector, key = make_collector(settings, tmp_path / "keys.json")
    projector = Projector(settings, clickhouse_session, clickhouse_db, batch_size=500)
    stop_projector = threading.Event()
    crashed: list[BaseException] = []

    def project() -> None:
        try:
            projector.run(stop_projector, 0.5)
        except BaseException as exc:  # the test fails on it below
            crashed.append(exc)

    projecting = threading.Thread(target=project, daemon=True)
    projecting.start()
    invoke = CliRunner().invoke
    env = {
        "LEADFLOW_KAFKA_BOOTSTRAP": settings.bootstrap,
        "LEADFLOW_DATA_DIR": str(tmp_path),
        "LEADFLOW_LOG_FORMAT": "json",
    }
    try:
        with serve(collector) as url:
            traffic = Traffic(url, key)
            traffic.start()
            traffic.wait_for(300)
            victim = busiest_leader(settings)
            cluster.kill(victim)
            at_kill = traffic.acknowledged

            # While the node is dead (fenced or not yet), the other clients still work.
            keyring = Keyring(settings)
            try:
                keys_read = keyring.refresh()
            finally:
                keyring.close()
            assert keys_read > 0
            assert latest_snapshots(settings) == {b"ws-acme": b"snapshot-1"}
            created = invoke(cli, ["topics", "create"], env=env, catch_exceptions=False)
            assert created.exit_code == 0, created.output
            # Until the controller fences the dead node and the brokers hear of it, metadata
            # may still name it alive: ask until it does not.
            status = invoke(cli, ["kafka", "status"], env=env, catch_exceptions=False)
            while "brokers alive: 3" in status.output:
                time.sleep(0.5)
                status = invoke(cli, ["kafka", "status"], env=env, catch_exceptions=False)
            assert status.exit_code == 0, status.output  # degraded, not down
            assert "brokers alive: 2" in status.output
            assert "under-replicated: 0" not in status.output
            assert "offline: 0" in status.output
            traffic.wait_for(at_kill + 300)  # the collector is acknowledging again
            during = traffic.acknowledged - at_kill

            cluster.restart(victim)
            cluster.wait_settled(settings)
            traffic.wait_for(traffic.acknowledged + 300)
            acknowledged = traffic.finish()
    finally:
        stop_projector.set()
        projecting.join(60)
    assert not crashed, f"the projector died: {crashed[0]!r}"

    counts = Counter(read_all_ids(settings))
    ours = {str(m["messageId"]) for m in traffic.sent}
    twice = {mid: n for mid, n in counts.items() if n > 1 and mid in ours}
    missing = [mid for mid in acknowledged if counts[mid] == 0]
    assert not missing, f"{len(missing)} acknowledged events are not in Kafka"
    assert not twice, f"{len(twice)} events are in Kafka more than once"

    final = Projector(settings, clickhouse_session, clickhouse_db, batch_size=2000)
    final.run_until_idle(max_seconds=180)
    rows = clickhouse_session.query(
        f"SELECT event_id, count() FROM {clickhouse_db}.events GROUP BY event_id"
    ).result_rows
    in_clickhouse = {str(event_id) for event_id, _ in rows}
    assert not set(acknowledged) - in_clickhouse
    counts_checked(
        f"3 brokers, node {victim} killed -9 after {at_kill} acknowledged events and brought "
        f"back: {len(acknowledged)} acknowledged ({during} while it was down or being fenced, "
        f"{traffic.retries} requests retried), each exactly once in Kafka and in ClickHouse "
        f"({len(in_clickhouse)} distinct event ids there); {keys_read} key records and the "
        "model snapshot read while it was down"
    )
