"""A query the HTTP interface cannot kill is a warning naming it, not a debug line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from leadflow.sinks import query_runner
from leadflow.sinks.query_runner import QueryRunner
from leadflow.streams.settings import load_settings
from tests.unit.recorded_log import Recorded

REFUSED = "Code: 1001. DB::Exception: the engine is shutting down. (STD_EXCEPTION)"


@pytest.fixture
def refusing_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[QueryRunner, Recorded]:
    """A runner whose engine refuses every connection, and what its module logs."""
    lines = Recorded()
    monkeypatch.setattr(query_runner, "log", lines)
    runner = QueryRunner(str(tmp_path / "engine"), load_settings(data_dir=tmp_path), "leadflow")

    @contextmanager
    def refusing() -> Iterator[Any]:
        raise RuntimeError(REFUSED)
        yield

    monkeypatch.setattr(runner, "_connection", refusing)
    return runner, lines


def test_a_query_past_its_limit_that_cannot_be_killed_is_a_warning(
    refusing_runner: tuple[QueryRunner, Recorded],
) -> None:
    # It runs on past max_execution_time, holding an engine thread and its memory: it was
    # logged at debug, where no operator looks.
    runner, lines = refusing_runner
    runner._kill_overdue("leadflow:q-1")
    assert lines.lines == [
        ("warning", "clickhouse_http.kill_failed",
         {"marker": "leadflow:q-1", "overdue": True, "error": REFUSED}),
    ]  # fmt: skip


def test_a_failed_kill_for_a_client_gone_is_a_warning_too(
    refusing_runner: tuple[QueryRunner, Recorded],
) -> None:
    runner, lines = refusing_runner
    runner.kill("leadflow:q-2")
    assert lines.events("warning") == [
        ("clickhouse_http.kill_failed", {"marker": "leadflow:q-2", "overdue": False,
                                         "error": REFUSED}),
    ]  # fmt: skip
