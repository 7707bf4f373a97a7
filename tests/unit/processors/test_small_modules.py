import json

from hypothesis import given
from hypothesis import strategies as st

from leadflow.processors.derived import Contact
from leadflow.processors.events import Kind, scoped_key
from leadflow.processors.nurture import nurture_step
from leadflow.processors.policy_load import load_default_policy
from leadflow.processors.qualification import MAX_ANSWERS, merge_answers, qualify
from leadflow.processors.routing import RoutingState, assign, choose_pool
from leadflow.processors.segments import segments_of

from ._factory import ev

P = load_default_policy()


def test_round_robin_skips_unavailable_and_is_retry_safe() -> None:
    c = Contact(country="US", company_size=5000)
    r = RoutingState()
    owners = []
    for _ in range(4):
        a, r = assign(c, P, r)
        owners.append(a.owner_id)
    assert owners == ["rep-ava", "rep-ben", "rep-ava", "rep-ben"]  # rep-cruz is unavailable
    retry_state = RoutingState({"na_enterprise": 1})
    assert assign(c, P, retry_state)[0] == assign(c, P, retry_state)[0]
    assert assign(c, P, r, escalate=True)[0].pool == "sales_managers"


def test_routing_rules_by_industry_size_and_territory() -> None:
    assert choose_pool(Contact(industry="Banking", company_size=9000, country="US"), P)[0] == (
        "fsi_specialists"
    )
    assert choose_pool(Contact(company_size=500, country="JP"), P)[0] == "mid_market"
    assert choose_pool(Contact(company_size=5000, country="AU"), P) == ("inbound_sdr", "default")


def test_qualification_frameworks_and_completeness() -> None:
    answers = merge_answers(
        {},
        {
            "annual_budget": "120k",
            "decision_maker": "yes",
            "pain": "x",
            "purchase_timeframe": "Q2",
            "ignored": None,
        },
    )
    bant = qualify(answers, P.qualification.frameworks["bant"])
    assert bant.completeness == 1.0
    assert bant.answers["budget"] == "120k"
    meddic = qualify(answers, P.qualification.frameworks["meddic"])
    assert meddic.framework == "meddic"
    assert meddic.completeness == 1 / 6
    many = merge_answers({}, {f"k{i}": "v" for i in range(100)})
    assert len(many) == MAX_ANSWERS


def test_nurture_opens_without_click_fires_once_and_rearms_after_click() -> None:
    counters: dict[str, int] = {}
    fired = []
    kinds = [Kind.EMAIL_OPENED] * 4 + [Kind.EMAIL_CLICKED] + [Kind.EMAIL_OPENED] * 3
    for i, k in enumerate(kinds):
        counters, out = nurture_step(counters, ev(f"e{i}", k, i, lead="L"), P, "L")
        fired += [(a.trigger, a.cause_event_id) for a in out]
    assert fired == [("opens_without_click", "e2"), ("opens_without_click", "e7")]


def test_segments() -> None:
    assert segments_of(
        Contact(company_size=50, title="Data Engineer", seniority="individual"), P
    ) == ("size:smb", "persona:practitioner")
    assert segments_of(Contact(), P) == ()


@given(st.text(), st.text())
def test_a_scoped_key_is_the_compact_json_pair_it_always_was(workspace: str, ident: str) -> None:
    # Keys name state entries and partition records: the shared encoder must not move a byte.
    expected = json.dumps([workspace, ident], separators=(",", ":"), ensure_ascii=False)
    assert scoped_key(workspace, ident) == expected
    assert json.loads(scoped_key(workspace, ident)) == [workspace, ident]
