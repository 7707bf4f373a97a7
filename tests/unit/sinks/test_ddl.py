"""DDL text: single node and cluster mode, identifiers, migration bookkeeping."""

from __future__ import annotations

import pytest

from leadflow.sinks.migrations import MIGRATIONS, all_statements, bootstrap_statements
from leadflow.sinks.tables import ALL_TABLES, DEALS, DdlError, check_identifier, create_table_sql


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


# What databases recorded when each migration was applied. A changed checksum is an edited
# history, which migrate() refuses on every database that has it: add a migration instead.
CREATE = "CREATE TABLE IF NOT EXISTS"
APPLIED = {
    1: "ac731b10c670373c", 2: "86c2662a8c13e38f", 3: "8733d9b972095a26",
    4: "253c8a5f9b72a6e0", 5: "713eb59fd9a24c67", 6: "fe43d5b08ac2cc5a",
    7: "77aece1dc0403fe6", 8: "f10fa1009eb9af13", 9: "613821a24d5ec584",
}  # fmt: skip


def test_migration_9_makes_the_next_path_refresh_rebuild_everything() -> None:
    # No refresh on record: refresh_paths rebuilds every path (with session 20's fixed query).
    assert MIGRATIONS[8].render("db", "prod") == (
        "TRUNCATE TABLE IF EXISTS db.path_refreshes ON CLUSTER prod",
    )


def test_applied_migrations_keep_their_checksums() -> None:
    assert {m.version: m.checksum() for m in MIGRATIONS} == APPLIED


def test_deals_amount_is_nullable_from_migration_8_and_migration_1_stays_as_it_ran() -> None:
    # A lost deal without an amount was stored as 0 (Float64); migration 8 makes it NULL-able.
    first = [s for s in MIGRATIONS[0].render("db") if s.startswith(f"{CREATE} db.deals\n")]
    assert len(first) == 1
    assert "amount Float64," in first[0]
    assert "amount Nullable(Float64)," in create_table_sql(DEALS, "db")
    alter, *views = MIGRATIONS[7].render("db", "prod")
    assert alter == "ALTER TABLE db.deals ON CLUSTER prod MODIFY COLUMN amount Nullable(Float64)"
    assert [s.split()[4] for s in views] == ["db.v_deals", "db.v_lead_funnel", "db.v_conversions"]
