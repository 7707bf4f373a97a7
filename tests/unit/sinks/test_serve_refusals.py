"""The HTTP interface refuses to start loudly, and serves nothing for a ClickHouse server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from leadflow.sinks.clickhouse_http import ServeError, serve
from leadflow.streams.settings import load_settings


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        settings = load_settings(data_dir=tmp_path, clickhouse_http_port=port)
        with pytest.raises(ServeError, match=f"127.0.0.1:{port}.*LEADFLOW_CLICKHOUSE_HTTP_PORT"):
            serve(settings, "leadflow").__enter__()
    finally:
        taken.close()


def test_every_workspace_without_a_password_is_never_exposed(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, clickhouse_http_host="0.0.0.0")
    with pytest.raises(ServeError, match="LEADFLOW_CLICKHOUSE_HTTP_PASSWORD"):
        serve(settings, "leadflow").__enter__()


def test_nothing_is_served_for_a_clickhouse_server(tmp_path: Path) -> None:
    server = load_settings(
        data_dir=tmp_path, clickhouse_dsn=SecretStr("http://u:p@127.0.0.1:9/leadflow")
    )
    with serve(server, "leadflow") as serving:
        assert serving is None
    off = load_settings(data_dir=tmp_path, clickhouse_http=False)
    with serve(off, "leadflow") as serving:
        assert serving is None
