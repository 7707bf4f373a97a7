"""``leadflow identity-eval`` on a small simulation: merges join every split person."""

from __future__ import annotations

from click.testing import CliRunner

from leadflow.cli.main import cli
from leadflow.demo.identity_eval import evaluate


def test_form_first_people_are_split_before_merges_and_one_lead_after() -> None:
    figures = evaluate(people=250, days=45, seed=2, form_first=0.5, partitions=4)
    assert figures.merges_with_history["identify"] > 0
    assert figures.lead_ids > figures.live_leads
    assert figures.live_leads == figures.people_known  # one lead per person
    assert figures.split_people == 0
    assert figures.waits[0] == (0, 0, 0)  # no lateness, no added wait


def test_the_command_prints_the_counts() -> None:
    out = CliRunner().invoke(cli, ["identity-eval", "--people", "60", "--days", "20"])
    assert out.exit_code == 0, out.output
    assert "lead ids with events (before merges)" in out.output
    assert "live leads (after merges)" in out.output
