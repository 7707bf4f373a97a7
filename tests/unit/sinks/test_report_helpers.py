"""Pure helpers of the reports: z-test, dates, rendering."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest

from leadflow.cli.report import render
from leadflow.sinks.reports import Report, ReportError, epoch_ms, largest_drop_off, two_proportion_z


def test_z_test_by_hand() -> None:
    # p1 = 0.10, p2 = 0.20, pooled 0.15, se = sqrt(0.15*0.85*(2/100)) = 0.0504975
    z, p = two_proportion_z(10, 100, 20, 100)
    assert z == pytest.approx(0.10 / 0.0504975, rel=1e-5)
    assert p == pytest.approx(0.04767, abs=1e-4)
    assert two_proportion_z(0, 0, 1, 1) == (0.0, 1.0)


def test_epoch_ms_is_utc_midnight() -> None:
    assert epoch_ms(date(1970, 1, 2)) == 86_400_000


REPORT = Report(
    "funnel", ("stage", "count", "rate_from_previous"),
    [("visitor", 10, None), ("lead", 4, 0.4), ("mql", 1, 0.25)], ("a note",),
)  # fmt: skip


def test_largest_drop_off() -> None:
    assert largest_drop_off(REPORT) == "mql"


def test_render_formats() -> None:
    data = json.loads(render(REPORT, "json"))
    assert data["rows"][1] == {"stage": "lead", "count": 4, "rate_from_previous": 0.4}
    rows = list(csv.reader(io.StringIO(render(REPORT, "csv"))))
    assert rows[0] == ["stage", "count", "rate_from_previous"]
    assert rows[3] == ["mql", "1", "0.25"]
    text = render(REPORT, "table")
    assert "visitor" in text
    assert "a note" in text


def test_report_error_is_domain_error() -> None:
    from leadflow.processors.errors import LeadflowError

    assert issubclass(ReportError, LeadflowError)
