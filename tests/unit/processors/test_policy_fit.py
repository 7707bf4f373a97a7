"""Suggested fit weights: recovered from a synthetic history, pulled to the current ones."""

from __future__ import annotations

import dataclasses
import math
import random
from importlib import resources

import pytest
from click.testing import CliRunner

from leadflow.cli.main import cli
from leadflow.processors.derived import Contact
from leadflow.processors.policy_fit import (
    FitError,
    LabelledLead,
    apply_points,
    suggest_fit_weights,
    yaml_diff,
)
from leadflow.processors.policy_load import load_default_policy, parse_policy
from leadflow.processors.scoring import fit_score

POLICY = load_default_policy()
TEXT = resources.files("leadflow.infra").joinpath("policy/default.yaml").read_text("utf-8")
# A market unlike the default policy's assumptions (points; the intercept is log-odds).
TRUE = {
    "senior_buyer": 10, "manager": 35, "data_title": -20, "size_mid_market": 40,
    "size_enterprise": -10, "size_too_small": 5, "icp_industry": 30, "served_country": 0,
    "free_mail_domain": 20, "competitor_domain": -100, "student_domain": -40,
    "student_title": -60,
}  # fmt: skip
TITLES = ("VP Marketing", "Marketing Manager", "Data Analyst", "Head of Data", "Student",
          "Software Engineer", "Office Manager")  # fmt: skip
INDUSTRIES = ("Software", "Retail", "Hospitality", "Construction")
COUNTRIES = ("US", "BR", "DE", "NG")
DOMAINS = ("acme.io", "gmail.com", "cs.mit.edu", "snowflake.com")


def history(n: int, truth: dict[str, float], seed: int = 7) -> list[LabelledLead]:
    rng = random.Random(seed)
    per_point = POLICY.model.prior_per_point
    leads = []
    for _ in range(n):
        title = rng.choice(TITLES)
        contact = Contact(
            title=title,
            seniority=POLICY.seniority_of(title),
            company_size=rng.choice((5, 60, 500, 5000)),
            industry=rng.choice(INDUSTRIES),
            country=rng.choice(COUNTRIES),
        )
        domain = rng.choices(DOMAINS, weights=(80, 15, 4, 1))[0]
        hits = fit_score(contact, POLICY, domain=domain)[1]
        z = -2.0 + per_point * sum(truth[h.rule] for h in hits)
        leads.append(LabelledLead(contact, domain, rng.random() < 1 / (1 + math.exp(-z))))
    return leads


def test_recovers_the_weights_of_a_synthetic_history() -> None:
    s = suggest_fit_weights(POLICY, history(40_000, TRUE), l2=1e-3)
    by_rule = {r.name: r for r in s.rules}
    for name, points in TRUE.items():
        r = by_rule[name]
        if r.hits < 1_000:
            continue  # rare rules (competitors, students' domains) are not identifiable
        assert r.suggested == pytest.approx(points, abs=5), (name, r)
    checked = sum(1 for r in s.rules if r.hits >= 1_000)
    assert checked >= 8
    assert s.auc_suggested is not None
    assert s.auc_current is not None
    assert s.cv_auc_suggested > s.cv_auc_current + 0.05  # type: ignore[operator]


def test_little_evidence_keeps_the_current_points() -> None:
    current = {r.name: r.points for r in POLICY.scoring.fit}
    s = suggest_fit_weights(POLICY, history(300, TRUE), l2=1e6)
    assert {r.name: r.suggested for r in s.rules} == pytest.approx(current, abs=1)
    # A rule that never fires keeps its points whatever the pull.
    no_competitor = [x for x in history(300, TRUE) if x.email_domain != "snowflake.com"]
    weak = suggest_fit_weights(POLICY, no_competitor, l2=1e-3)
    never = {r.name: r for r in weak.rules if r.hits == 0}
    assert set(never) == {"competitor_domain"}
    assert never["competitor_domain"].suggested == -100


def test_rules_whose_input_is_not_in_the_history_are_kept() -> None:
    s = suggest_fit_weights(POLICY, history(2_000, TRUE), unobservable=frozenset({"email_domain"}))
    kept = {r.name for r in s.rules if r.suggested is None}
    assert kept == {"free_mail_domain", "competitor_domain", "student_domain"}
    assert "free_mail_domain" not in s.points()


def test_one_class_is_an_error() -> None:
    leads = [LabelledLead(Contact(title="VP Sales"), None, False)] * 5
    with pytest.raises(FitError, match="both outcomes"):
        suggest_fit_weights(POLICY, leads)


def test_the_yaml_diff_applies_to_the_default_policy() -> None:
    s = suggest_fit_weights(POLICY, history(5_000, TRUE), l2=1e-3)
    fitted = parse_policy(apply_points(TEXT, s.points()), "fitted.yaml")
    assert {r.name: r.points for r in fitted.scoring.fit} == s.points()
    # Nothing but fit points changes.
    assert fitted.scoring.engagement == POLICY.scoring.engagement
    diff = yaml_diff(TEXT, s, "infra/policy/default.yaml")
    changed = [line for line in diff.splitlines() if line.startswith("+ ")]
    moved = [r for r in s.rules if r.suggested != r.current]
    assert len(changed) == len(moved)
    assert all("points:" in line for line in changed)


def test_cli_on_a_simulated_market_prints_the_diff_and_the_aucs() -> None:
    result = CliRunner().invoke(
        cli,
        ["policy", "suggest-weights", "--world", "harbor", "--people", "600", "--days", "120"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("--- a/infra/policy/default.yaml")
    assert "cross-validated (5 folds): current" in result.stderr
    both = CliRunner().invoke(cli, ["policy", "suggest-weights"])
    assert both.exit_code != 0
    assert "--workspace" in both.output


def test_a_fold_trained_on_one_outcome_is_left_out_of_the_cross_validated_aucs() -> None:
    # Both conversions fall in fold 0, whose training part then has none: it cannot be
    # fitted. Its leads used to count in the cross-validated AUCs with a score of 0.
    leads = [dataclasses.replace(x, converted=i in (0, 5)) for i, x in enumerate(history(50, TRUE))]
    s = suggest_fit_weights(POLICY, leads)
    assert s.cv_folds_skipped == 1
    # What is left (folds 1-4) holds no conversion: not measurable, not a made-up number.
    assert (s.cv_auc_current, s.cv_auc_suggested) == (None, None)
    assert suggest_fit_weights(POLICY, history(2_000, TRUE)).cv_folds_skipped == 0
