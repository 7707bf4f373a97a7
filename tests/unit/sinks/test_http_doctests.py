"""The examples in the HTTP interface's modules run (they document the protocol details)."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from leadflow.sinks import analysts, clickhouse_http, query_gate, query_runner


@pytest.mark.parametrize("module", [analysts, clickhouse_http, query_gate, query_runner])
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
