"""`leadflow sql` on a real embedded ClickHouse: a bad query is one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cli.commands import leadflow

BAD_QUERIES = [
    ("SELEC 1", "SYNTAX_ERROR"),
    ("SELECT * FROM nope", "UNKNOWN_TABLE"),
    ("SELECT throwIf(1, 'boom')", "boom"),
]


@pytest.mark.parametrize(("query", "reason"), BAD_QUERIES)
def test_a_bad_query_is_one_line_with_clickhouses_reason(
    tmp_path: Path, query: str, reason: str
) -> None:
    # Issue 19 (LOW): a bad query printed a Python traceback with install paths.
    done = leadflow(tmp_path, "sql", query, "--database", "default")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: query failed: Code:")
    assert reason in lines[0]
    assert "Traceback" not in done.stderr
    assert ".py" not in done.stderr
