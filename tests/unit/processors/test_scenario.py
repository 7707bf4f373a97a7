"""A realistic journey, step by step: every derived event is asserted in order.

Three anonymous pricing visits, a form submit (MQL), two email clicks (the second one after
the 24 h SLA), a demo request (SQL by strong signal), a recycle by sales, re-engagement
weeks later (MQL again) and a second demo request (SQL again, sql_count 2).
"""

from leadflow.processors.derived import (
    BecameMQL,
    BecameSQL,
    LeadScored,
    NurtureAction,
    OwnerAssigned,
    SlaBreached,
    Stage,
    StageChanged,
    TrainingExample,
    derived_id,
)
from leadflow.processors.events import Kind
from leadflow.processors.identity import derive_lead_id, identity_step
from leadflow.processors.lead import lead_step
from leadflow.processors.policy_load import load_default_policy

from ._factory import HOUR, ICP_FORM, T0, WS, ev

P = load_default_policy()
LEAD = derive_lead_id(WS, ICP_FORM["email"])


def at(hours: float) -> int:
    return T0 + int(hours * HOUR)


def eng(hours_now: float, hits: list[tuple[float, float]]) -> float:
    """Expected decayed engagement: (points, hours) hits, 14-day half-life, no cap reached."""
    return round(sum(p * 0.5 ** ((hours_now - h) / (14 * 24)) for p, h in hits), 2)


def feed(events):
    ident, lead, out = None, None, []
    for e in events:
        ident, routed = identity_step(ident, e)
        for r in routed:
            lead, derived = lead_step(lead, r, P, None)
            out.extend((r.event_id, d) for d in derived)
    return lead, out


def test_journey_to_sql_recycle_and_sql_again() -> None:
    events = [
        ev(
            "v1",
            Kind.VISIT,
            0,
            anon="a1",
            path="/pricing",
            channel="paid_search",
            campaign="spring",
        ),
        ev("v2", Kind.VISIT, 24, anon="a1", path="/pricing", channel="direct"),
        ev("v3", Kind.VISIT, 48, anon="a1", path="/pricing", channel="direct"),
        ev(
            "f1",
            Kind.FORM_SUBMITTED,
            49,
            anon="a1",
            channel="direct",
            answers={"annual_budget": "100k", "use_case": "churn"},
            **ICP_FORM,
        ),
        ev("c1", Kind.EMAIL_CLICKED, 72, lead=LEAD, campaign="nurture-1"),
        ev("c2", Kind.EMAIL_CLICKED, 96, lead=LEAD, campaign="nurture-2"),
        ev(
            "d1",
            Kind.DEMO_REQUESTED,
            100,
            anon="a1",
            channel="direct",
            answers={"purchase_timeframe": "Q3"},
        ),
        ev("r1", Kind.STAGE_CHANGED, 200, lead=LEAD, action="recycle", reason="no budget yet"),
        ev("v4", Kind.VISIT, 600, anon="a1", path="/pricing", channel="direct"),
        ev("c3", Kind.EMAIL_CLICKED, 601, lead=LEAD),
        ev("d2", Kind.DEMO_REQUESTED, 602, anon="a1", channel="direct"),
    ]
    state, out = feed(events)
    it = iter(out)

    def nxt(cause: str, kind: type):
        got_cause, d = next(it)
        assert (got_cause, type(d)) == (cause, kind), (got_cause, d)
        return d

    # anonymous visits are replayed onto the lead when the form arrives
    s = nxt("v1", StageChanged)
    assert (s.from_stage, s.to_stage, s.sequence, s.occurred_at) == (None, Stage.VISITOR, 1, at(0))
    assert s.transition_id == derived_id(LEAD, 1, None, "visitor", "v1")
    assert nxt("v1", LeadScored).engagement_score == 11.0  # page_view 1 + pricing_page 10
    assert nxt("v2", LeadScored).engagement_score == eng(24, [(11, 0), (11, 24)])
    assert nxt("v3", LeadScored).fit_score == 0.0
    n = nxt("v3", NurtureAction)
    assert (n.trigger, n.action) == ("pricing_without_demo", "send_case_study")

    s = nxt("f1", StageChanged)
    assert (s.from_stage, s.to_stage, s.reason) == (Stage.VISITOR, Stage.LEAD, "identified")
    scored = nxt("f1", LeadScored)
    assert scored.fit_score == 80.0
    assert scored.engagement_score == eng(49, [(11, 0), (11, 24), (11, 48), (10, 49)])
    assert scored.engagement_score >= 30
    mql = nxt("f1", StageChanged)
    assert (mql.from_stage, mql.to_stage, mql.sequence) == (Stage.LEAD, Stage.MQL, 3)
    owner = nxt("f1", OwnerAssigned)
    assert (owner.owner_id, owner.team, owner.reason) == ("rep-ava", "enterprise-na", "mql")
    became = nxt("f1", BecameMQL)
    assert became.transition_id == mql.transition_id
    assert became.sla_due_at == at(49 + 24)
    assert became.segments == ("size:enterprise", "persona:executive", "vertical:tech")

    assert nxt("c1", LeadScored).stage is Stage.MQL
    # c2 comes after the SLA: the breach is stamped at the due time, then escalated
    breach = nxt("c2", SlaBreached)
    assert (breach.due_at, breach.mql_at, breach.owner_id) == (at(73), at(49), "rep-ava")
    assert breach.mql_transition_id == mql.transition_id
    esc = nxt("c2", OwnerAssigned)
    assert (esc.owner_id, esc.previous_owner_id, esc.reason, esc.occurred_at) == (
        "mgr-mo",
        "rep-ava",
        "sla_escalation",
        at(73),
    )
    nxt("c2", LeadScored)

    nxt("d1", LeadScored)
    sql1 = nxt("d1", StageChanged)
    assert (sql1.from_stage, sql1.to_stage, sql1.reason) == (
        Stage.MQL,
        Stage.SQL,
        "demo_request_icp",
    )
    handoff = nxt("d1", BecameSQL)
    assert handoff.transition_id == sql1.transition_id
    assert handoff.sql_count == 1
    assert handoff.owner_id == "mgr-mo"
    assert handoff.team == "management"
    assert handoff.first_touch is not None
    assert handoff.first_touch.event_id == "v1"
    assert (handoff.first_touch.channel, handoff.first_touch.campaign) == ("paid_search", "spring")
    assert handoff.last_touch is not None
    assert handoff.last_touch.event_id == "d1"
    assert handoff.engagement.pricing_views == 3
    assert handoff.engagement.emails_clicked == 2
    assert handoff.engagement.demo_requested
    assert handoff.qualification.answers == {"budget": "100k", "need": "churn", "timeline": "Q3"}
    assert handoff.qualification.completeness == 0.75
    assert handoff.contact.email == "ada@acme.io"
    assert handoff.contact.company_size == 3000
    assert [st.stage for st in handoff.stage_history] == [
        Stage.VISITOR,
        Stage.LEAD,
        Stage.MQL,
        Stage.SQL,
    ]
    assert [(r.rule, r.points) for r in handoff.top_rules[:2]] == [
        ("demo_request", 40.0),
        ("size_enterprise", 30.0),
    ]
    example = nxt("d1", TrainingExample)
    assert example.label is True
    # The label window opened at the lead's first score as a known lead (the form).
    assert example.scored_at == at(49)
    assert example.features["stage=lead"] == 1.0
    assert "demo_requested" not in example.features

    rec = nxt("r1", StageChanged)
    assert (rec.from_stage, rec.to_stage, rec.reason) == (
        Stage.SQL,
        Stage.RECYCLED,
        "no budget yet",
    )

    # weeks later: re-engagement requalifies the recycled lead, then a new demo request
    again = nxt("v4", LeadScored)
    assert again.stage is Stage.RECYCLED
    assert again.engagement_score >= P.scoring.engagement_threshold
    s = nxt("v4", StageChanged)
    assert (s.from_stage, s.to_stage, s.reason) == (Stage.RECYCLED, Stage.MQL, "thresholds_met")
    assert nxt("v4", BecameMQL).owner_id == "mgr-mo"  # owned lead: not reassigned
    assert nxt("c3", LeadScored).stage is Stage.MQL
    nxt("d2", LeadScored)
    sql2 = nxt("d2", StageChanged)
    assert (sql2.from_stage, sql2.to_stage) == (Stage.MQL, Stage.SQL)
    assert sql2.transition_id != sql1.transition_id
    handoff2 = nxt("d2", BecameSQL)
    assert handoff2.sql_count == 2
    assert handoff2.transition_id == sql2.transition_id
    assert len(handoff2.stage_history) == 7
    nxt("d2", TrainingExample)
    assert next(it, None) is None
    assert state is not None
    assert state.sql_count == 2
    assert state.stage is Stage.SQL
