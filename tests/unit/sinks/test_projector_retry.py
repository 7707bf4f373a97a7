"""The projector keeps a batch and backs off while ClickHouse fails, then catches up."""

from __future__ import annotations

import threading
from typing import Any

from leadflow.processors.events import Event, Kind
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import Projector, batch_token
from leadflow.streams.settings import load_settings


class FlakyClient:
    """Fails the first ``failures`` inserts, then records what it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inserts: list[tuple[str, int, dict[str, Any] | None]] = []

    def insert(self, table: str, data: list[Any], column_names: list[str], settings: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("clickhouse is down")
        self.inserts.append((table, len(data), settings))


def _rows() -> Any:
    return rows_for_all(
        [
            Event("e1", Kind.IDENTIFY, "w", 1, 2, "a1", "L1"),
            Event("e2", Kind.VISIT, "w", 3, 4, "a1"),
        ]
    )


def test_backs_off_exponentially_then_inserts_everything() -> None:
    client = FlakyClient(failures=4)
    waits: list[float] = []
    projector = Projector(load_settings(), client, "db", sleep=waits.append, max_backoff=2.0)
    spans = [("leadflow.events", 0, 10, 11)]
    assert projector.insert_batch(_rows(), spans, threading.Event())
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert [(t, n) for t, n, _ in client.inserts] == [("db.events", 2), ("db.identities", 1)]
    token = client.inserts[0][2]["insert_deduplication_token"]
    assert token == batch_token("events", spans)
    assert projector.stats.insert_retries == 4
    assert projector.stats.rows == 3


def test_stop_while_down_reports_not_inserted() -> None:
    client = FlakyClient(failures=100)
    stop = threading.Event()
    projector = Projector(load_settings(), client, "db", sleep=lambda _: stop.set())
    assert not projector.insert_batch(_rows(), [("t", 0, 1, 1)], stop)
    assert client.inserts == []
