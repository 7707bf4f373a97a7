"""DDL text: single node and cluster mode, identifiers, migration bookkeeping."""

from __future__ import annotations

import pytest

from leadflow.sinks.migrations import MIGRATIONS, all_statements, bootstrap_statements
from leadflow.sinks.tables import ALL_TABLES, DdlError, check_identifier, create_table_sql


def test_cluster_mode_replicates_every_table_and_statement() -> None:
    statements = all_statements("leadflow", "prod")
    for statement in statements:
        if statement.startswith("INSERT"):
            # Data statements (migration 4's backfill) run once on one replica; the
            # Replicated engine copies the rows. ON CLUSTER is DDL-only.
            continue
        assert " ON CLUSTER prod" in statement, statement[:80]
    tables = [s for s in statements if s.startswith("CREATE TABLE")]
    assert len(tables) == len(ALL_TABLES) + 1  # + schema_migrations
    for statement in tables:
        assert "ENGINE = Replicated" in statement
        assert "non_replicated_deduplication_window" not in statement


def test_single_node_mode_has_no_cluster_clause() -> None:
    statements = all_statements("t_db")
    assert not any("ON CLUSTER" in s for s in statements)
    assert not any("Replicated" in s for s in statements)
    assert all("t_db." in s for s in statements if not s.startswith("CREATE DATABASE"))
    assert "leadflow." not in "\n".join(statements)


def test_events_dedup_key_and_partition() -> None:
    sql = create_table_sql(ALL_TABLES[0], "leadflow")
    assert "ENGINE = ReplacingMergeTree" in sql
    assert "ORDER BY (workspace_id, event_id)" in sql
    assert "PARTITION BY toYYYYMM(fromUnixTimestamp64Milli(occurred_at, 'UTC'))" in sql


@pytest.mark.parametrize("name", ["", "1abc", "lead-flow", "x; DROP TABLE y", "ä"])
def test_bad_identifiers_are_refused(name: str) -> None:
    with pytest.raises(DdlError):
        check_identifier(name, "database")
    with pytest.raises(DdlError):
        bootstrap_statements("leadflow", name or "-")


def test_migrations_are_numbered_and_stable() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[0].checksum() == MIGRATIONS[0].checksum()
    assert MIGRATIONS[0].checksum() != MIGRATIONS[1].checksum()
