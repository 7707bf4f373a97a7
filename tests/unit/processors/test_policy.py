from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.processors.errors import PolicyError
from leadflow.processors.events import Kind
from leadflow.processors.policy_load import load_default_policy, parse_policy

DEFAULT = (Path(__file__).parents[3] / "infra" / "policy" / "default.yaml").read_text()


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_default_policy_loads_with_the_documented_rules() -> None:
    p = load_default_policy()
    assert p.sla_hours == 24
    assert p.scoring.half_life_days == 14
    assert p.labels.conversion == "sql"
    assert (p.labels.later_snapshots, p.labels.snapshot_every_days) == (0, 7.0)
    assert set(p.qualification.frameworks) == {"bant", "meddic", "champ", "gpctba"}
    assert p.qualification.active.criteria == ("budget", "authority", "need", "timeline")
    assert {r.kind for r in p.scoring.engagement} >= {
        Kind.VISIT,
        Kind.DEMO_REQUESTED,
        Kind.WEBINAR_ATTENDED,
        Kind.EMAIL_CLICKED,
    }
    assert any(r.points < 0 and r.field == "email_domain" for r in p.scoring.fit)
    assert p.routing.territory_of("de") == "emea"
    assert p.strong_signals[0].name == "demo_request_icp"


@pytest.mark.parametrize(
    ("old", "new", "needle", "expected"),
    [
        (
            "points: 10, cap: 30",
            "points: ten, cap: 30",
            "points: ten",
            "scoring.engagement[1].points: must be a number",
        ),
        (
            "kind: demo_requested, points: 40",
            "kind: demo_request, points: 40",
            "demo_request,",
            "scoring.engagement[11].kind: unknown event kind 'demo_request'",
        ),
        (
            "conversion: sql ",
            "conversion: lead ",
            "conversion: lead",
            "labels.conversion: must be 'sql' or 'won'",
        ),
        (
            "later_snapshots: 0",
            "later_snapshots: 7",
            "later_snapshots: 7",
            "labels.later_snapshots: must be 0 to 6",
        ),
        (
            "snapshot_every_days: 7",
            "snapshot_every_days: 0",
            "snapshot_every_days: 0",
            "labels.snapshot_every_days: must be greater than 0",
        ),
        (
            "default_pool: inbound_sdr",
            "default_pool: nobody",
            "default_pool: nobody",
            "routing.default_pool: no pool 'nobody' under routing.pools",
        ),
        (
            "half_life_days: 14",
            "half_life_days: 0",
            "half_life_days: 0",
            "scoring.half_life_days: must be greater than 0",
        ),
        (
            "framework: bant ",
            "framework: spin ",
            "framework: spin",
            "qualification.framework: must be one of bant, champ, gpctba, meddic",
        ),
        ("sla_hours: 24", "sla_hourz: 24", "sla_hourz", "sla_hourz: unknown field"),
        (
            "decision_maker: authority, use_case: need",
            "decision_maker: authority, use_case: needs",
            "use_case: needs",
            "qualification.frameworks.bant.fields.use_case: 'needs' is not a criterion",
        ),
    ],
)
def test_errors_name_file_line_and_field(old: str, new: str, needle: str, expected: str) -> None:
    assert old in DEFAULT
    text = DEFAULT.replace(old, new, 1)
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    message = str(info.value)
    assert message.startswith(f"policy.yaml:{_line_of(text, needle)} "), message
    assert expected in message


def test_missing_section_and_bad_yaml() -> None:
    with pytest.raises(PolicyError, match=r"^p.yaml:1 <root>: missing required field 'scoring'"):
        parse_policy("version: 1\nsla_hours: 24\n", "p.yaml")
    with pytest.raises(PolicyError, match=r"^p.yaml:2 <root>: not valid YAML"):
        parse_policy("version: 1\n  bad: [\n", "p.yaml")
    with pytest.raises(PolicyError, match="empty"):
        parse_policy("", "p.yaml")


def test_duplicate_rule_names_are_refused() -> None:
    text = DEFAULT.replace("name: manager,", "name: senior_buyer,", 1)
    with pytest.raises(PolicyError, match=r"scoring.fit\[1\]: duplicate rule name 'senior_buyer'"):
        parse_policy(text, "policy.yaml")


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_arbitrary_text_fails_only_with_policy_error(text: str) -> None:
    message = ""
    try:
        parse_policy(text, "fuzz.yaml")
    except PolicyError as exc:
        message = str(exc)
    assert message == "" or message.startswith("fuzz.yaml:")


def test_model_section_is_optional_and_validated() -> None:
    assert load_default_policy().model.snapshot_every == 25
    without = DEFAULT[: DEFAULT.index("\n# The online model")]
    assert parse_policy(without, "p.yaml").model.snapshot_every == 100  # the built-in default
    bad = DEFAULT.replace("snapshot_every: 25", "snapshot_every: 0")
    with pytest.raises(PolicyError, match=r"model.snapshot_every: must be at least 1"):
        parse_policy(bad, "p.yaml")


@pytest.mark.parametrize(
    ("title", "level"),
    [
        ("Director of Demand Generation", "director"),  # contains "cto"
        ("Vice President, Sales", "vp"),  # contains "president"
        ("HR Coordinator", "individual"),  # contains "coo"
        ("CxO", "c_level"),  # matched nothing
        ("Chief Marketing Officer", "c_level"),
        ("Co-Founder", "c_level"),
        ("Head of Revenue Operations", "director"),
        ("Software Engineer", "individual"),
    ],
)
def test_seniority_matches_whole_words_not_substrings(title: str, level: str) -> None:
    """Regression: "Director" was c_level via "cto", "Coordinator" via "coo"."""
    assert load_default_policy().seniority_of(title) == level


def test_title_rules_match_whole_words() -> None:
    from leadflow.processors.policy import Match

    bi = Match(words_any=("bi", "head of"))
    assert not bi.test("Mobile Developer", {})
    assert bi.test("BI Lead", {})
    assert bi.test("Head of Growth", {})
    assert parse_policy(DEFAULT.replace("contains_any: [/pricing]", "words_any: [pricing]"))


def test_departments_come_from_the_title_words() -> None:
    p = load_default_policy()
    assert p.department_of("Sales Operations Manager") == "revops"
    assert p.department_of("Director of Demand Generation") == "marketing"
    assert p.department_of("Payroll Specialist") == "hr"
    assert p.department_of(None) is None


def test_model_prior_is_read_and_checked() -> None:
    p = load_default_policy()
    assert (p.model.prior_intercept, p.model.prior_per_point, p.model.min_labels) == (
        -4.0,
        0.03,
        30,
    )
    with pytest.raises(PolicyError, match="min_labels"):
        parse_policy(DEFAULT.replace("min_labels: 30", "min_labels: 0"))
