"""The sinks contract suite runs twice: on chdb directly and through the HTTP client.

``client`` is either the session's chdb client or a clickhouse-connect ``HttpClient``
talking to the same engine through :mod:`tests.integration.sinks.http_bridge`, so every
query, parameter binding and insert also goes through the code path used against a
ClickHouse server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.sinks.http_bridge import http_bridge


@pytest.fixture(scope="session")
def http_client(clickhouse_session: Any) -> Iterator[Any]:
    from clickhouse_connect import get_client

    with http_bridge(clickhouse_session) as url:
        client = get_client(dsn=url, compress=False)
        try:
            yield client
        finally:
            client.close()


@pytest.fixture(params=["chdb", "http"])
def client(request: pytest.FixtureRequest, clickhouse_session: Any) -> Any:
    if request.param == "chdb":
        return clickhouse_session
    return request.getfixturevalue("http_client")
