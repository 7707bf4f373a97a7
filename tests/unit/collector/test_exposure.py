"""Issue 19 (LOW): /docs, /openapi.json and /metrics answered anyone. Now behind settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.unit.collector.test_http import Harness

PATHS = ("/docs", "/redoc", "/openapi.json", "/metrics")


def test_by_default_nothing_but_health_and_readiness_is_served(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert {p: h.get(p).status_code for p in PATHS} == dict.fromkeys(PATHS, 404)
    assert h.get("/health").status_code == 200


def test_docs_and_open_metrics_when_asked_for(tmp_path: Path) -> None:
    h = Harness(tmp_path, collector_expose_docs=True, collector_expose_metrics=True)
    assert {p: h.get(p).status_code for p in PATHS} == dict.fromkeys(PATHS, 200)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Bearer s3cret-scrape"}, 200),
    ],
)
def test_metrics_behind_a_token(tmp_path: Path, headers: dict[str, str], status: int) -> None:
    h = Harness(tmp_path, collector_metrics_token=SecretStr("s3cret-scrape"))
    answer = h.request("GET", "/metrics", headers=headers)
    assert answer.status_code == status
    if status == 200:
        assert "leadflow_collector_events_accepted_total" in answer.text
    assert h.get("/openapi.json").status_code == 404
