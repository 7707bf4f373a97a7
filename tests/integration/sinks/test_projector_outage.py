"""ClickHouse really refusing connections: at the projector's start and in mid-stream.

Unlike test_projector_kafka's ``DownFirst`` (a client whose first inserts raise), this
serves the session's engine over ClickHouse's HTTP interface on a fixed loopback port and
stops and restarts that server, so the projector meets the real clickhouse-connect errors
("Connection refused") on the real HTTP path, backs off, and catches up with exact counts.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from clickhouse_connect import get_client
from confluent_kafka import Consumer, TopicPartition

from leadflow.cli.projector import connect_with_backoff
from leadflow.sinks.projector import PROJECTED_TOPICS, Projector
from leadflow.streams.local_kafka import free_port
from leadflow.streams.settings import Settings
from leadflow.streams.topics import create_topics
from tests.integration.collector.conftest import end_offsets
from tests.integration.sinks.test_projector_kafka import EXPECTED, _counts, _objects, _produce
from tests.integration.sinks.writable_server import _handler


class _DroppingServer(ThreadingHTTPServer):
    """Remembers its connections, so that a stop drops them as a crashed server would
    (``shutdown`` alone leaves keep-alive connections served by their threads)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connections: list[socket.socket] = []

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        self.connections.append(conn)
        return conn, addr

    def drop_connections(self) -> None:
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Server:
    """The writable stand-in on one fixed port, stoppable and restartable (a ClickHouse restart)."""

    def __init__(self, chdb_client: Any, port: int) -> None:
        self.backend = chdb_client._backend
        self.port = port
        self.server: _DroppingServer | None = None
        self.starts = 0

    def start(self) -> None:
        self.server = _DroppingServer(("127.0.0.1", self.port), _handler(self.backend))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.starts += 1

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server.drop_connections()
            self.server = None


def _group_starts_at_the_end(settings: Settings, group: str) -> None:
    """Commit ``group`` at the topics' current ends, so it reads only what comes next.

    The session's earlier tests leave thousands of records on the shared topics; read from
    the start in batches of 5, they outlast the 120 s window in a full run.
    """
    offsets = [
        TopicPartition(topic, partition, end)
        for topic in PROJECTED_TOPICS
        for partition, end in end_offsets(settings, topic).items()
    ]
    consumer = Consumer({**settings.kafka_client_config(), "group.id": group})
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def test_clickhouse_refusing_at_start_and_mid_stream_then_exact_counts(
    kafka: Settings,
    clickhouse_session: Any,
    clickhouse_db: str,
    counts_checked: Callable[[str], None],
) -> None:
    create_topics(kafka)
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    objects = _objects(workspace)
    _group_starts_at_the_end(kafka, f"refused-{workspace}")
    _produce(kafka, objects)
    server = Server(clickhouse_session, free_port())
    url = f"http://127.0.0.1:{server.port}"
    try:
        # 1. Down when the projector starts: it waits, then connects once the server is up.
        connect_waits: list[float] = []

        def come_up_after_two(delay: float) -> None:
            connect_waits.append(delay)
            if len(connect_waits) == 2:
                server.start()

        client = connect_with_backoff(
            lambda: get_client(dsn=url, compress=False),
            threading.Event(),
            sleep=come_up_after_two,
        )
        assert connect_waits == [0.5, 1.0]
        assert client.command("SELECT 1") == 1

        # 2. Down again before the first batch (its migrations are refused), and once more
        # right after the first batch was committed (the next inserts are refused); each
        # time the third backoff brings the server back.
        server.stop()
        waits: list[float] = []
        batches: list[int] = []

        def come_back_after_three(delay: float) -> None:
            waits.append(delay)
            if len(waits) % 3 == 0:
                server.start()

        def crash_after_first_batch(stats: Any) -> None:
            batches.append(stats.records)
            if len(batches) == 1:
                server.stop()

        projector = Projector(
            kafka, client, clickhouse_db, group_id=f"refused-{workspace}", batch_size=5,
            sleep=come_back_after_three, on_batch=crash_after_first_batch,
        )  # fmt: skip
        stats = projector.run_until_idle(max_seconds=120)
        assert waits == [0.5, 1.0, 2.0, 0.5, 1.0, 2.0]
        assert stats.insert_retries == 6
        assert server.starts == 3
        assert len(batches) >= 2
        assert stats.records == len(objects)  # this test's records, each read once
        counts = _counts(clickhouse_session, clickhouse_db, workspace)
        assert counts == EXPECTED
        # Committed only after the rows were in: the group has nothing left to read.
        again = Projector(kafka, client, clickhouse_db, group_id=f"refused-{workspace}")
        assert again.run_until_idle(max_seconds=60).records == 0
        counts_checked(
            f"ClickHouse refused {len(connect_waits)} connects, 3 migrations and 3 inserts; "
            f"projected {stats.records} records in {len(batches)} batches; counts {counts}"
        )
    finally:
        server.stop()
