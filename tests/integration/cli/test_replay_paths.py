"""`leadflow replay paths` on a real embedded ClickHouse: one full rebuild, on record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def leadflow(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A fresh process each: chdb holds one engine (one data dir) per process.
    env = {**os.environ, "LEADFLOW_DATA_DIR": str(tmp_path), "LEADFLOW_LOG_FORMAT": "json"}
    env.pop("LEADFLOW_CLICKHOUSE_DSN", None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "leadflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


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
