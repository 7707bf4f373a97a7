"""Session fixtures: a real Kafka broker and a real embedded ClickHouse, both in temp dirs.

Set LEADFLOW_KAFKA_BOOTSTRAP to run the integration tests against an existing cluster
instead of starting a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from leadflow.streams.kafka_cluster import KafkaCluster, scratch_cluster
from leadflow.streams.local_kafka import LocalKafka, free_port, install
from leadflow.streams.settings import Settings, load_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder, so ``-m unit`` and ``-m integration`` need no decorators."""
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the session: temp data dir, free ports, JSON logs."""
    data_dir = tmp_path_factory.mktemp("leadflow")
    return load_settings(
        data_dir=data_dir,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        collector_port=free_port(),
        clickhouse_http_port=free_port(),
        kafka_heap="768m",
        topic_partitions=4,
        log_format="json",
    )


@pytest.fixture(scope="session")
def kafka(base_settings: Settings) -> Iterator[Settings]:
    """A real broker for the session; yields settings whose ``bootstrap`` points at it."""
    if not base_settings.local_kafka:
        yield base_settings
        return
    broker = LocalKafka(
        home=base_settings.data_dir / "kafka",
        libs=install(base_settings),
        port=base_settings.kafka_port,
        controller_port=base_settings.kafka_controller_port,
        heap=base_settings.kafka_heap,
    )
    broker.start()
    try:
        yield base_settings
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kafka_cluster(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KafkaCluster, Settings]]:
    """A real 3-node KRaft cluster (broker + controller per JVM, 384 MB heaps) for one module.

    Per module, not per session: its three JVMs would otherwise idle through the rest of
    the suite on a 2-core machine.

    Yields the cluster (to kill and restart nodes) and settings whose bootstrap lists all
    three nodes. A test that kills a node brings it back and waits for
    ``cluster.wait_settled`` before it ends, so the next test finds three nodes in sync.
    """
    if not base_settings.local_kafka:
        pytest.skip("LEADFLOW_KAFKA_BOOTSTRAP is set: the cluster tests kill local brokers")
    with scratch_cluster(base_settings, tmp_path_factory.mktemp("kafka-cluster")) as pair:
        yield pair


@pytest.fixture(scope="session")
def clickhouse_session(base_settings: Settings) -> Iterator[Any]:
    """The session's embedded ClickHouse (chdb) through clickhouse-connect.

    chdb holds one engine per process with one data path, so all tests share it and
    isolate themselves by database name (see ``clickhouse_db``).
    """
    from clickhouse_connect import get_client

    client = get_client(dsn=base_settings.clickhouse_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def clickhouse_db(clickhouse_session: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database name for one test; dropped afterwards."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    clickhouse_session.command(f"DROP DATABASE IF EXISTS {name}")
    clickhouse_session.command(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        clickhouse_session.command(f"DROP DATABASE IF EXISTS {name}")


# Fault and bad-input tests state the counts they checked; the lines are printed in one
# section at the end of the run (make test), not only on failure.
_COUNTS_CHECKED: list[str] = []


@pytest.fixture
def counts_checked(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a line such as ``"15 acknowledged, each once in Kafka"`` for the summary."""

    def state(line: str) -> None:
        _COUNTS_CHECKED.append(f"{request.node.nodeid}: {line}")

    return state


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print every count the fault and bad-input tests checked."""
    if _COUNTS_CHECKED:
        terminalreporter.section("counts checked by the fault and bad-input tests")
        for line in _COUNTS_CHECKED:
            terminalreporter.write_line(line)
