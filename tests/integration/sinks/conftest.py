"""The sinks contract suite runs twice: on chdb directly and through the HTTP interface.

``client`` is either the session's chdb client or a stock clickhouse-connect client
(``get_client(host=..., port=...)``) talking to the real ClickHouse HTTP interface that the
engine's owner serves (:mod:`leadflow.sinks.clickhouse_http`), over the same engine. That
interface is read-only, as in production, where only the projector writes: so in the
``http`` variant the suite's writes (migrations, inserts) go to the owner's client, and
every read (queries, reports, views) goes through HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from pydantic import SecretStr

from leadflow.sinks.clickhouse_http import Serving, serve
from leadflow.streams.local_kafka import free_port
from leadflow.streams.settings import Settings


def http_settings(base: Settings, data_dir: Any, **overrides: Any) -> Settings:
    """``base`` serving its engine on a free port, announcing it under ``data_dir``."""
    return base.model_copy(
        update={
            "clickhouse_dsn": SecretStr(base.clickhouse_url),
            "data_dir": data_dir,
            "clickhouse_http_port": free_port(),
            **overrides,
        }
    )


@pytest.fixture
def serve_engine(
    base_settings: Settings, clickhouse_session: Any, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., AbstractContextManager[Serving]]:
    """Serve the session's engine for ``database`` with setting overrides (a context)."""

    @contextmanager
    def start(database: str = "leadflow", **overrides: Any) -> Iterator[Serving]:
        settings = http_settings(base_settings, tmp_path_factory.mktemp("served"), **overrides)
        with serve(settings, database) as serving:
            assert serving is not None
            yield serving

    return start


class OwnerWrites:
    """A stock HTTP client for reads; writes go to the engine's owner (the projector's role)."""

    def __init__(self, reader: Any, owner: Any) -> None:
        object.__setattr__(self, "_reader", reader)
        object.__setattr__(self, "_owner", owner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._reader, name, value)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        """DDL and other commands: the owner's."""
        return self._owner.command(*args, **kwargs)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        """Inserts: the owner's."""
        return self._owner.insert(*args, **kwargs)


@pytest.fixture(scope="session")
def http_client(
    base_settings: Settings, clickhouse_session: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    from clickhouse_connect import get_client

    settings = http_settings(base_settings, tmp_path_factory.mktemp("contract-http"))
    with serve(settings, "leadflow") as serving:
        assert serving is not None
        reader = get_client(host="127.0.0.1", port=settings.clickhouse_http_port)
        try:
            yield OwnerWrites(reader, clickhouse_session)
        finally:
            reader.close()


@pytest.fixture(params=["chdb", "http"])
def client(request: pytest.FixtureRequest, clickhouse_session: Any) -> Any:
    if request.param == "chdb":
        return clickhouse_session
    return request.getfixturevalue("http_client")
