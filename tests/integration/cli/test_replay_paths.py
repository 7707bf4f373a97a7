"""`leadflow replay paths` on a real embedded ClickHouse: one full rebuild, on record."""

from __future__ import annotations

from pathlib import Path

from tests.integration.cli.commands import leadflow


def test_paths_rebuilds_everything_once_and_records_it_as_full(tmp_path: Path) -> None:
    done = leadflow(tmp_path, "replay", "paths", "--database", "lf")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("every attribution path in lf rebuilt in ")
    # Each run is a full rebuild, on record as such (an incremental one would read 0).
    again = leadflow(tmp_path, "replay", "paths", "--database", "lf")
    assert again.returncode == 0, again.stderr
    rows = leadflow(tmp_path, "sql", "SELECT full FROM lf.path_refreshes ORDER BY refreshed_to",
                    "--database", "lf", "--format", "csv")  # fmt: skip
    assert rows.returncode == 0, rows.stderr
    assert rows.stdout.split() == ["full", "1", "1"]


def test_a_bad_database_name_is_refused_before_anything_opens(tmp_path: Path) -> None:
    done = leadflow(tmp_path, "replay", "paths", "--database", "lf; DROP")
    assert done.returncode == 2
    assert "database" in done.stderr
    assert not (tmp_path / "clickhouse").exists()
