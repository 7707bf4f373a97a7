"""Every SQL example in docs/analytics.md runs (analysts paste them as they are)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from leadflow.sinks.migrations import migrate
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import insert_rows
from tests.integration.sinks import scenario

DOC = Path(__file__).resolve().parents[3] / "docs" / "analytics.md"


def test_documented_queries_run(client: Any, clickhouse_db: str) -> None:
    migrate(client, clickhouse_db)
    insert_rows(client, clickhouse_db, rows_for_all(scenario.everything()))
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    statements = [s.strip() for b in blocks for s in b.split(";") if s.strip()]
    assert len(statements) >= 15
    results = {}
    for statement in statements:
        sql = statement.replace("leadflow.", f"{clickhouse_db}.")
        results[statement] = client.query(sql).result_rows
    # The self-check query of the docs returns no rows: weights sum to 1.
    check = next(s for s in statements if "HAVING abs(s - 1)" in s)
    assert results[check] == []
