"""``leadflow simulate --dry-run``: the summary and the ground truth file."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from leadflow.cli.main import cli


def test_dry_run_prints_the_summary_and_writes_truth(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    result = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--dry-run",
            "--people",
            "400",
            "--days",
            "60",
            "--seed",
            "3",
            "--truth",
            str(truth),
        ],
    )
    assert result.exit_code == 0, result.output
    for heading in ("Events per kind", "Acquisition by channel", "Funnel outcomes"):
        assert heading in result.output
    assert "paid_search" in result.output
    assert "per person" in result.output
    document = json.loads(truth.read_text())
    assert document["leads"]
    lead = next(iter(document["leads"].values()))
    assert {"propensity", "converted", "fit", "channel"} <= set(lead)


def test_http_needs_a_write_key() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--people", "5"])
    assert result.exit_code == 2
    assert "--write-key" in result.output


def test_bad_start_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--dry-run", "--start", "yesterday"])
    assert result.exit_code == 2
    assert "ISO-8601" in result.output
