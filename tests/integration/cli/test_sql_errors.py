"""`leadflow sql` on a real embedded ClickHouse: a bad query is one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BAD_QUERIES = [
    ("SELEC 1", "SYNTAX_ERROR"),
    ("SELECT * FROM nope", "UNKNOWN_TABLE"),
    ("SELECT throwIf(1, 'boom')", "boom"),
]


@pytest.mark.parametrize(("query", "reason"), BAD_QUERIES)
def test_a_bad_query_is_one_line_with_clickhouses_reason(
    tmp_path: Path, query: str, reason: str
) -> None:
    # Issue 19 (LOW): a bad query printed a Python traceback with install paths. A fresh
    # process: chdb holds one engine (one data dir) per process.
    env = {**os.environ, "LEADFLOW_DATA_DIR": str(tmp_path), "LEADFLOW_LOG_FORMAT": "json"}
    env.pop("LEADFLOW_CLICKHOUSE_DSN", None)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "leadflow"), "sql", query, "--database", "default"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: query failed: Code:")
    assert reason in lines[0]
    assert "Traceback" not in done.stderr
    assert ".py" not in done.stderr
