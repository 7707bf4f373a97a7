"""A tiny, hand-checkable world: two leads, one anonymous visitor, costs and a won deal.

Day numbers are days after T0 (2026-01-01 00:00 UTC). Lead L1's journey:

    d0  visit            organic_search   (anonymous a1)
    d2  ad_click         paid_search/brand (anonymous a1)
    d4  form_submitted   direct           (a1 + L1: links the device)  -> lead
    d6  email_clicked    email/nurture    (L1)                          -> mql
    d8  demo_requested   direct           (L1)                          -> sql
    d9                                                                  -> opportunity
    d12 deal won 1000                                                   -> customer

Lead L2: d1 visit paid_social/li (a2), d3 form (a2 + L2) -> lead, d5 -> mql,
d7 -> disqualified ("no budget"). Visitor a3: d2 visit, direct, never identified.
Costs on 2026-01-01: paid_search/brand 200 restated to 300, paid_social/li 100.
"""

from __future__ import annotations

from leadflow.processors.derived import LeadScored, RuleHit, Stage, StageChanged, derived_id
from leadflow.processors.events import Context, Event, Kind

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
W = "ws1"


def at(day: float) -> int:
    return T0 + int(day * DAY)


def ev(
    eid: str,
    kind: Kind,
    day: float,
    anon: str | None = None,
    lead: str | None = None,
    channel: str | None = None,
    campaign: str | None = None,
    payload: dict[str, object] | None = None,
    experiment: str | None = None,
    variant: str | None = None,
) -> Event:
    return Event(
        event_id=eid,
        kind=kind,
        workspace_id=W,
        occurred_at=at(day),
        received_at=at(day) + 1000,
        anonymous_id=anon,
        lead_id=lead,
        context=Context(
            channel=channel, utm_campaign=campaign, experiment=experiment, variant=variant
        ),
        payload=payload or {},
    )


def tr(
    lead: str, seq: int, frm: Stage | None, to: Stage, day: float, reason: str = ""
) -> StageChanged:
    return StageChanged(
        transition_id=derived_id(lead, seq, to),
        workspace_id=W,
        lead_id=lead,
        from_stage=frm,
        to_stage=to,
        occurred_at=at(day),
        reason=reason or f"to {to}",
        cause_event_id=f"cause-{lead}-{seq}",
        sequence=seq,
    )


def events() -> list[Event]:
    return [
        ev("e1", Kind.VISIT, 0, anon="a1", channel="organic_search", experiment="lp", variant="A"),
        ev("e2", Kind.AD_CLICK, 2, anon="a1", channel="paid_search", campaign="brand"),
        ev(
            "e3", Kind.FORM_SUBMITTED, 4, anon="a1", lead="L1", channel="direct",
            payload={"email": "x@acme.io", "company_size": 120, "industry": "software"},
        ),
        ev("e4", Kind.EMAIL_CLICKED, 6, lead="L1", channel="email", campaign="nurture"),
        ev("e5", Kind.DEMO_REQUESTED, 8, lead="L1", channel="direct"),
        ev(
            "e6", Kind.DEAL_WON, 12, lead="L1",
            payload={"deal_id": "D1", "amount": 1000.0, "currency": "USD"},
        ),
        ev("e7", Kind.VISIT, 1, anon="a2", channel="paid_social", campaign="li",
           experiment="lp", variant="B"),
        ev(
            "e8", Kind.FORM_SUBMITTED, 3, anon="a2", lead="L2", channel="paid_social",
            campaign="li", payload={"company_size": 5000, "industry": "retail"},
        ),
        ev("e9", Kind.VISIT, 2, anon="a3", channel="direct", experiment="lp", variant="B"),
        ev(
            "c1", Kind.CAMPAIGN_COST, 0,
            payload={"date": "2026-01-01", "channel": "paid_search", "campaign": "brand",
                     "amount": 200.0},
        ),
        ev(
            "c2", Kind.CAMPAIGN_COST, 1,
            payload={"date": "2026-01-01", "channel": "paid_search", "campaign": "brand",
                     "amount": 300.0},
        ),
        ev(
            "c3", Kind.CAMPAIGN_COST, 0,
            payload={"date": "2026-01-01", "channel": "paid_social", "campaign": "li",
                     "amount": 100.0},
        ),
    ]  # fmt: skip


def transitions() -> list[StageChanged]:
    return [
        tr("L1", 1, None, Stage.LEAD, 4),
        tr("L1", 2, Stage.LEAD, Stage.MQL, 6),
        tr("L1", 3, Stage.MQL, Stage.SQL, 8),
        tr("L1", 4, Stage.SQL, Stage.OPPORTUNITY, 9),
        tr("L1", 5, Stage.OPPORTUNITY, Stage.CUSTOMER, 12),
        tr("L2", 1, None, Stage.LEAD, 3),
        tr("L2", 2, Stage.LEAD, Stage.MQL, 5),
        tr("L2", 3, Stage.MQL, Stage.DISQUALIFIED, 7, reason="no budget"),
    ]


def scores() -> list[LeadScored]:
    """L1 scored three times; the current fit/engagement are d7's (45, 36), and the model
    score is d6's 0.6 because d7's update had no model score."""
    return [
        LeadScored(
            "s1", W, "L1", at(4), 30.0, 10.0, 0.2, "m1", (RuleHit("form", 10.0),), "e3",
            Stage.LEAD,
        ),
        LeadScored(
            "s2", W, "L1", at(6), 40.0, 35.0, 0.6, "m1", (RuleHit("email_click", 25.0),), "e4",
            Stage.MQL,
        ),
        LeadScored(
            "s3", W, "L1", at(7), 45.0, 36.0, None, None, (), "e4", Stage.MQL,
        ),
    ]  # fmt: skip


def everything() -> list[object]:
    return [*events(), *transitions(), *scores()]
