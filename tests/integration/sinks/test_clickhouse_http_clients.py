"""Other-language stock clients on the engine's HTTP interface, while the projector inserts.

* the ClickHouse JDBC driver (what DBeaver ships): a plain ``java.sql`` program,
  ``tests/clients/jdbc/Probe.java``, run with the driver's jars (its defaults: ClickHouse's
  compressed blocks with CityHash checksums, RowBinaryWithNamesAndTypes, basic auth);
  it also lists tables through ``DatabaseMetaData`` as DBeaver's navigator does;
* ``@clickhouse/client`` for Node.js: ``tests/clients/node/probe.mjs`` (gzip, JSONEachRow,
  bound ``{ws:String}`` parameters, ``X-ClickHouse-User``/``Key``).

``make client-kits`` (part of ``make test``) fetches both from Maven Central and npm.
Each program reads a growing count; the counts it prints only grow and never include a
duplicate, and its insert is refused with ClickHouse's code 164.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from leadflow.sinks.analysts import AnalystStore, users_path
from leadflow.sinks.clickhouse_http import Serving
from leadflow.streams.settings import Settings
from tests.integration.sinks.test_clickhouse_http import _owner_count, projecting, wait_for

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
Serve = Callable[..., AbstractContextManager[Serving]]


def _command(kind: str, url: str, user: str, password: str, table: str, ws: str) -> list[str]:
    port = url.rsplit(":", 1)[1]
    if kind == "jdbc":
        if not (CLIENTS / "jdbc" / "libs").is_dir() or shutil.which("java") is None:
            pytest.skip("the JDBC driver is not installed: run `make client-kits`")
        jdbc = f"jdbc:clickhouse://127.0.0.1:{port}/{table.split('.')[0]}"
        return ["java", "-cp", "libs/*", "Probe.java", jdbc, user, password, table, ws, "25"]
    if not (CLIENTS / "node" / "node_modules").is_dir() or shutil.which("node") is None:
        pytest.skip("@clickhouse/client is not installed: run `make client-kits`")
    return ["node", "probe.mjs", f"http://127.0.0.1:{port}", user, password, table, ws, "25"]


@pytest.mark.parametrize("kind", ["jdbc", "node"])
def test_other_language_client_reads_while_the_projector_inserts(
    kind: str,
    kafka: Settings,
    clickhouse_session: Any,
    clickhouse_db: str,
    serve_engine: Serve,
    counts_checked: Callable[[str], None],
) -> None:
    with (
        serve_engine(clickhouse_db) as serving,
        projecting(kafka, clickhouse_session, clickhouse_db, batches=40) as stream,
    ):
        # An analyst of the stream's workspace: the client's rows are that workspace's only.
        user, password = AnalystStore(users_path(serving.app.settings)).add(
            stream.workspace, lambda: datetime.now(UTC), f"{kind}_analyst"
        )
        wait_for(lambda: _owner_count(clickhouse_session, stream) > 0)
        table = f"{clickhouse_db}.v_events"
        done = subprocess.run(
            _command(kind, serving.url, user, password, table, stream.workspace),
            cwd=CLIENTS / kind,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    reads = [line for line in lines if "rows" in line]
    assert len(reads) == 25, done.stdout
    counts = [r["rows"] for r in reads]
    assert all(r["rows"] == r["distinct"] for r in reads), reads
    assert counts == sorted(counts), counts
    assert counts[-1] > 0
    assert {"insert_refused": 164} in lines, done.stdout
    counts_checked(
        f"{kind}: 25 reads while {stream.total} events were projected, counts {counts[0]} -> "
        f"{counts[-1]} only growing, never a duplicate; insert refused (164)"
    )


def test_grafana_data_source_driver_runs_every_shipped_panel(
    clickhouse_session: Any,
    clickhouse_db: str,
    serve_engine: Serve,
    tmp_path: Path,
    counts_checked: Callable[[str], None],
) -> None:
    """Grafana itself does not run here (no Docker); its ClickHouse data source does.

    ``tests/clients/go`` opens clickhouse-go v2 with the Options the plugin's ``Connect``
    builds in HTTP mode (gzip, basic auth, default database, client protocol revision
    54460, Native), pings, asks ``version()`` as the plugin does, then runs the shipped
    dashboard's workspace variable and every panel's ``rawSql`` with ``${workspace}``
    substituted, as an analyst of that workspace.
    """
    probe = CLIENTS / "go" / "grafanaprobe"
    if not probe.exists():
        pytest.skip("Grafana's driver probe is not built: run `make client-kits` (needs go)")
    from leadflow.sinks.dashboards import render
    from leadflow.sinks.migrations import migrate
    from leadflow.sinks.projection import rows_for_all
    from leadflow.sinks.projector import insert_rows
    from tests.integration.sinks import scenario
    from tests.integration.sinks.test_dashboards import EXTRA

    migrate(clickhouse_session, clickhouse_db)
    insert_rows(clickhouse_session, clickhouse_db, rows_for_all([*scenario.everything(), *EXTRA]))
    dashboard = tmp_path / "leadflow.json"
    dashboard.write_text(render().replace("leadflow.", f"{clickhouse_db}."))
    with serve_engine(clickhouse_db) as serving:
        user, password = AnalystStore(users_path(serving.app.settings)).add(
            scenario.W, lambda: datetime.now(UTC), "grafana_viewer"
        )
        done = subprocess.run(
            [str(probe), serving.url.removeprefix("http://"), user, password, clickhouse_db,
             str(dashboard), scenario.W],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    panels = [line for line in lines if "panel" in line]
    assert {"variable": [scenario.W]} in lines
    assert len(panels) == 6
    assert all(p["rows"] > 0 for p in panels), panels
    assert "(READONLY)" in lines[-1]["insert_error"]
    counts_checked(
        f"Grafana's driver (clickhouse-go, HTTP): variable + {len(panels)} panels answered "
        "for an analyst of the workspace, insert refused (164)"
    )
