"""A group call sets the lead's firmographics like identify traits (issue 13: B2B accounts)."""

from __future__ import annotations

from leadflow.processors.derived import LeadScored, Stage
from leadflow.processors.events import Event, Kind
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import LeadState
from leadflow.processors.policy_load import load_default_policy

from ._factory import ev

P = load_default_policy()


def fold(events: list[Event], state: LeadState | None = None) -> tuple[LeadState, list[object]]:
    out: list[object] = []
    for e in events:
        state, derived = lead_step(state, e, P, None)
        out.extend(derived)
    assert state is not None
    return state, out


def group(event_id: str, hours: float, **traits: object) -> Event:
    return ev(event_id, Kind.GROUP, hours, lead="L", group_id="acme", **traits)


def test_a_group_call_sets_the_company_fields_and_rescores_fit() -> None:
    identify = ev("i1", Kind.IDENTIFY, 1, lead="L", email="ada@acme.io", title="VP Data")
    before, _ = fold([identify])
    firm = group("g1", 2, company="Acme", company_size=3000, industry="software", country="US")
    after, derived = lead_step(before, firm, P, None)
    c = after.contact
    assert (c.company, c.company_size, c.industry, c.country) == ("Acme", 3000, "software", "US")
    assert (c.email, c.title) == ("ada@acme.io", "VP Data")  # the person's fields untouched
    # Firmographics feed fit: the lead is scored again, higher than without the account.
    scores = [d for d in derived if isinstance(d, LeadScored)]
    assert scores
    assert scores[-1].fit_score > before.fit


def test_group_and_identify_share_the_newer_wins_rule() -> None:
    newer = group("g1", 10, company="Acme", company_size=3000)
    older = ev("i1", Kind.IDENTIFY, 5, lead="L", company="Old Name", industry="retail")
    state, _ = fold([newer, older])
    assert state.contact.company == "Acme"  # a late identify only fills gaps
    assert state.contact.industry == "retail"
    later = ev("i2", Kind.IDENTIFY, 20, lead="L", company="Acme Group")
    state, _ = fold([later], state)
    assert state.contact.company == "Acme Group"


def test_a_group_call_alone_does_not_make_a_known_lead() -> None:
    # The account says nothing about who the person is: a visitor stays a visitor.
    state, _ = fold([group("g1", 1, company="Acme")])
    assert state.stage is Stage.VISITOR
    assert state.contact.company == "Acme"
