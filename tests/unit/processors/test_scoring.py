import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.processors.derived import Contact
from leadflow.processors.policy_load import load_default_policy
from leadflow.processors.scoring import (
    DAY_MS,
    EngagementHit,
    decayed,
    engagement_breakdown,
    engagement_hits,
    engagement_score,
    fit_score,
)

P = load_default_policy()
RULES = ["pricing", "webinar", "email", "blog"]
CAPS = {"pricing": 30.0, "webinar": None, "email": 12.0, "blog": 5.0}

hit = st.builds(
    EngagementHit,
    rule=st.sampled_from(RULES),
    points=st.floats(0, 50, allow_nan=False),
    occurred_at=st.integers(0, 400 * DAY_MS),
    decays=st.booleans(),
)
half_life = st.floats(0.5, 60)


def test_half_life_halves_points() -> None:
    h = EngagementHit("pricing", 10.0, 0)
    assert decayed(h, 0, 7) == 10.0
    assert decayed(h, 7 * DAY_MS, 7) == 5.0
    assert decayed(h, 14 * DAY_MS, 7) == 2.5
    assert decayed(EngagementHit("unsub", -20.0, 0, decays=False), 900 * DAY_MS, 7) == -20.0


def test_last_weeks_pricing_outweighs_an_old_blog_binge() -> None:
    now = 200 * DAY_MS
    recent = [EngagementHit("pricing", 10.0, now - 7 * DAY_MS)]
    old = [EngagementHit("blog", 3.0, now - 180 * DAY_MS) for _ in range(10)]
    assert engagement_score(recent, now, 14) > engagement_score(old, now, 14)


def test_caps_and_negative_rules() -> None:
    hits = [EngagementHit("pricing", 10.0, 0)] * 5 + [EngagementHit("unsub", -20.0, 0, False)]
    score, parts = engagement_breakdown(hits, 0, 14, rule_caps={"pricing": 30.0}, cap=100)
    assert score == 10.0
    assert dict((p.rule, p.points) for p in parts) == {"pricing": 30.0, "unsub": -20.0}


def test_fit_negatives_for_free_mail_competitor_and_students() -> None:
    base = Contact(
        email="ada@acme.io",
        title="Director of Data",
        seniority="director",
        company_size=800,
        industry="software",
        country="DE",
    )
    good, rules = fit_score(base, P)
    assert good == 25 + 10 + 20 + 10 + 5
    assert {r.rule for r in rules} == {
        "senior_buyer",
        "data_title",
        "size_mid_market",
        "icp_industry",
        "served_country",
    }
    free, _ = fit_score(Contact(**{**_asdict(base), "email": "ada@gmail.com"}), P)
    rival, _ = fit_score(Contact(**{**_asdict(base), "email": "x@snowflake.com"}), P)
    student, _ = fit_score(Contact(email="kid@cs.stanford.edu", seniority="student"), P)
    assert free == good - 10
    assert rival == good - 100
    assert student == -70


def _asdict(c: Contact) -> dict:
    return {f: getattr(c, f) for f in Contact.__slots__}


@given(
    st.lists(hit, max_size=30),
    st.integers(0, 400 * DAY_MS),
    st.integers(0, 400 * DAY_MS),
    half_life,
)
def test_decay_is_monotone_non_increasing_in_time_for_positive_hits(hits, t1, t2, hl) -> None:
    early, late = sorted((t1, t2))
    a = engagement_score(hits, early, hl, rule_caps=CAPS, cap=100)
    b = engagement_score(hits, late, hl, rule_caps=CAPS, cap=100)
    assert b <= a + 1e-9


@given(st.lists(hit, max_size=30), hit, st.integers(0, 400 * DAY_MS), half_life)
def test_adding_a_positive_event_never_lowers_the_score(hits, extra, at, hl) -> None:
    before = engagement_score(hits, at, hl, rule_caps=CAPS, cap=100)
    after = engagement_score([*hits, extra], at, hl, rule_caps=CAPS, cap=100)
    assert after >= before - 1e-9


@given(
    st.lists(hit, max_size=30),
    st.randoms(use_true_random=False),
    st.integers(0, 400 * DAY_MS),
    half_life,
)
def test_order_of_events_does_not_matter(hits, rnd, at, hl) -> None:
    shuffled = list(hits)
    rnd.shuffle(shuffled)
    assert engagement_breakdown(hits, at, hl, rule_caps=CAPS, cap=100) == engagement_breakdown(
        shuffled, at, hl, rule_caps=CAPS, cap=100
    )


@pytest.mark.parametrize(
    ("minutes", "rules"),
    [
        (None, ["webinar_attended"]),  # many webinar tools send no minutes: still attendance
        (5, ["webinar_attended"]),
        (15, ["webinar_attended", "webinar_stayed"]),
        (22.5, ["webinar_attended", "webinar_stayed"]),
        ("40", ["webinar_attended", "webinar_stayed"]),
    ],
)
def test_webinar_attendance_scores_with_or_without_minutes(
    minutes: object, rules: list[str]
) -> None:
    """Regression: attendance scored nothing unless minutes_attended >= 15 was sent."""
    from leadflow.processors.events import Event, Kind
    from leadflow.processors.policy_load import load_default_policy

    payload = {} if minutes is None else {"minutes_attended": minutes}
    e = Event("w", Kind.WEBINAR_ATTENDED, "ws", 0, 0, None, "L", payload=payload)
    assert [h.rule for h in engagement_hits(e, load_default_policy())] == rules
