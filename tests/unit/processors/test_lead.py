import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.processors.codec import StateDecodeError
from leadflow.processors.deadlines import advance_time, next_deadline
from leadflow.processors.derived import BecameSQL, SlaBreached, Stage, TrainingExample
from leadflow.processors.errors import InvalidEvent, InvalidTransition
from leadflow.processors.events import Event, Kind
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import MAX_HITS, LeadState, decode_lead_state, encode_lead_state
from leadflow.processors.model import ScoreModel
from leadflow.processors.policy_load import load_default_policy

from ._factory import DAY, HOUR, ICP_FORM, T0, ev

P = load_default_policy()


def fold(events: list[Event], model: ScoreModel | None = None, state: LeadState | None = None):
    out = []
    for e in events:
        state, derived = lead_step(state, e, P, model)
        out.extend(derived)
    return state, out


def journey(lead: str = "L") -> list[Event]:
    return [
        ev("v1", Kind.VISIT, 0, lead=lead, path="/pricing", channel="paid_search"),
        ev("v2", Kind.VISIT, 5, lead=lead, path="/customers/acme", channel="direct"),
        ev("f1", Kind.FORM_SUBMITTED, 6, lead=lead, answers={"annual_budget": "50k"}, **ICP_FORM),
        ev("o1", Kind.EMAIL_OPENED, 10, lead=lead),
        ev("k1", Kind.EMAIL_CLICKED, 11, lead=lead),
        ev("w1", Kind.WEBINAR_ATTENDED, 30, lead=lead, minutes_attended=40),
    ]


def test_mql_when_both_thresholds_pass_and_sla_breach_at_due_time() -> None:
    state, _out = fold(journey())
    assert state.stage is Stage.MQL
    assert state.sla_due_at == state.mql_at + 24 * HOUR
    same, nothing = advance_time(state, state.sla_due_at - 1, P, rescore=False)
    assert nothing == []
    assert same == state
    breached, due = advance_time(state, state.sla_due_at + 5 * DAY, P, rescore=False)
    breach = due[0]
    assert isinstance(breach, SlaBreached)
    assert breach.due_at == state.sla_due_at
    assert breached.owner_id == "mgr-mo"
    assert breached.sla_breached
    once = advance_time(breached, state.sla_due_at + 6 * DAY, P, rescore=False)
    assert once[1] == []  # once per MQL


def test_high_engagement_without_fit_is_not_mql() -> None:
    form = {**ICP_FORM, "email": "kid@gmail.com", "title": "Student", "company_size": 5}
    events = [ev(f"p{i}", Kind.VISIT, i, lead="S", path="/pricing") for i in range(5)]
    state, _ = fold([*events, ev("f", Kind.FORM_SUBMITTED, 6, lead="S", **form)])
    assert state.engagement >= P.scoring.engagement_threshold
    assert state.fit < P.scoring.fit_threshold
    assert state.stage is Stage.LEAD


def test_accept_mql_gives_exactly_one_handoff_and_duplicates_change_nothing() -> None:
    state, _ = fold(journey())
    accept = ev(
        "a1",
        Kind.STAGE_CHANGED,
        31,
        lead="L",
        action="accept_mql",
        answers={"decision_maker": "yes"},
    )
    s1, out = lead_step(state, accept, P, None)
    sqls = [d for d in out if isinstance(d, BecameSQL)]
    assert len(sqls) == 1
    assert sqls[0].reason == "sales_accepted"
    assert s1.stage is Stage.SQL
    assert lead_step(s1, accept, P, None) == (s1, [])
    # a second accept (another id) is already reflected: a no-op, not a second hand-off
    s2, again = lead_step(s1, dataclasses.replace(accept, event_id="a2"), P, None)
    assert again == []
    assert (s2.stage, s2.sql_count) == (Stage.SQL, 1)


def test_invalid_sales_actions_raise_and_leave_state_untouched() -> None:
    state, _ = fold(journey()[:2])
    state, _ = lead_step(
        state, ev("dq", Kind.STAGE_CHANGED, 6, lead="L", action="disqualify"), P, None
    )
    before = encode_lead_state(state)
    for action in ("accept_mql", "open_opportunity"):
        with pytest.raises(InvalidTransition):
            lead_step(state, ev("x", Kind.STAGE_CHANGED, 7, lead="L", action=action), P, None)
    with pytest.raises(InvalidTransition):
        lead_step(state, ev("w", Kind.DEAL_WON, 7, lead="L", amount=1.0), P, None)
    with pytest.raises(InvalidEvent):
        lead_step(state, ev("y", Kind.STAGE_CHANGED, 7, lead="L", action="promote"), P, None)
    with pytest.raises(InvalidEvent):
        lead_step(state, ev("z", Kind.VISIT, 7, anon="a"), P, None)
    assert encode_lead_state(state) == before


def test_sales_decisions_on_unqualified_leads_pass_through_sql_with_a_handoff() -> None:
    state, _ = fold(journey()[:3])  # a lead our rules have not qualified
    assert state.stage is Stage.LEAD
    opened, out = lead_step(
        state, ev("op", Kind.STAGE_CHANGED, 7, lead="L", action="open_opportunity"), P, None
    )
    steps = [(c.from_stage, c.to_stage) for c in out if hasattr(c, "to_stage")]
    assert steps == [(Stage.LEAD, Stage.SQL), (Stage.SQL, Stage.OPPORTUNITY)]
    assert [h.reason for h in out if isinstance(h, BecameSQL)] == ["sales_accepted"]
    won, out = lead_step(opened, ev("won", Kind.DEAL_WON, 9, lead="L", amount=5e4), P, None)
    assert won.stage is Stage.CUSTOMER
    assert lead_step(won, ev("won2", Kind.DEAL_WON, 99, lead="L", amount=1e4), P, None)[1] == []


def test_late_earlier_visit_becomes_first_touch() -> None:
    events = journey()
    late = ev("v0", Kind.VISIT, -48, lead="L", path="/blog", channel="organic_search")
    state, _ = fold([*events, late])
    assert state.first_touch is not None
    assert state.first_touch.event_id == "v0"
    assert state.first_touch.channel == "organic_search"
    assert state.last_touch is not None
    assert state.last_touch.event_id == "w1"
    assert state.summary.visits == 3


def test_late_profile_update_does_not_overwrite_a_newer_one() -> None:
    new = ev("i2", Kind.IDENTIFY, 10, lead="L", title="CTO", email="a@b.io")
    old = ev("i1", Kind.IDENTIFY, 5, lead="L", title="Analyst", phone="+1")
    state, _ = fold([new, old])
    assert state.contact.title == "CTO"
    assert state.contact.seniority == "c_level"
    assert state.contact.phone == "+1"  # a late event still fills gaps


def test_erasure_and_consent() -> None:
    state, _ = fold(journey())
    state, _ = lead_step(
        state, ev("c", Kind.CONSENT_CHANGED, 40, lead="L", tracking=False, marketing=False), P, None
    )
    assert not state.tracking
    assert state.marketing is False
    state, _ = lead_step(state, ev("er", Kind.ERASURE_REQUESTED, 41, lead="L"), P, None)
    assert state.contact.email is None
    assert state.contact.first_name is None
    assert state.contact.company_size == 3000
    assert state.answers == {}


def test_negative_label_after_the_horizon_and_positive_on_conversion() -> None:
    state, _ = fold(journey()[:3])
    assert state.stage in (Stage.LEAD, Stage.MQL)
    assert not state.labelled
    horizon = int(P.labels.negative_horizon_days * DAY)
    _, none_yet = advance_time(state, state.features_at + horizon - 1, P, rescore=False)
    assert not any(isinstance(d, TrainingExample) for d in none_yet)
    s2, out = advance_time(state, state.features_at + horizon, P, rescore=False)
    negatives = [d for d in out if isinstance(d, TrainingExample)]
    assert len(negatives) == 1
    assert negatives[0].label is False
    assert negatives[0].features == state.features
    assert s2.labelled
    assert advance_time(s2, state.features_at + 2 * horizon, P, rescore=False)[1] == []


def test_model_scores_are_carried_when_a_model_is_given() -> None:
    model = ScoreModel()
    for i in range(40):
        model.learn({"fit": 80.0, "engagement": 50.0}, True)
        model.learn({"fit": float(i % 5), "engagement": 1.0}, False)
    state, _out = fold(journey(), model)
    assert state.model_version == model.version
    assert state.model_score is not None
    assert 0.0 <= state.model_score <= 1.0
    assert state.top_features


def test_state_round_trip_and_size() -> None:
    state, _ = fold(journey(), ScoreModel())
    data = encode_lead_state(state)
    assert decode_lead_state(data) == state
    assert len(data) < 2048, len(data)


def test_hits_are_bounded() -> None:
    events = [ev(f"v{i}", Kind.VISIT, i, lead="L", path="/docs") for i in range(MAX_HITS)]
    state, _ = fold(events)
    assert len(state.hits) == MAX_HITS  # 2 hits per docs visit, oldest dropped first
    assert min(h.occurred_at for h in state.hits) == T0 + (MAX_HITS // 2) * HOUR


# --- properties --------------------------------------------------------------------------


def _sequence() -> list[Event]:
    base = journey("L")
    return [
        *base,
        ev("a", Kind.STAGE_CHANGED, 31, lead="L", action="accept_mql"),
        ev("op", Kind.STAGE_CHANGED, 40, lead="L", action="open_opportunity"),
        ev("lost", Kind.DEAL_LOST, 60, lead="L", reason="price"),
        ev("v9", Kind.VISIT, 900, lead="L", path="/pricing"),
        ev("d9", Kind.DEMO_REQUESTED, 901, lead="L"),
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10), max_size=8))
def test_duplicates_anywhere_change_nothing(dups: list[int]) -> None:
    events = _sequence()
    with_dups = list(events)
    for i in sorted(dups, reverse=True):
        # re-deliver event i right after a later position (at-least-once redelivery)
        with_dups.insert(min(len(with_dups), i + 2), events[i])
    clean_state, clean_out = fold(events)
    dup_state, dup_out = fold(with_dups)
    assert dup_state == clean_state
    assert dup_out == clean_out
    assert sum(isinstance(d, BecameSQL) for d in dup_out) == 2


@settings(max_examples=60, deadline=None)
@given(st.permutations(list(range(6))))
def test_touch_facts_do_not_depend_on_arrival_order(order: list[int]) -> None:
    touches = [
        ev(f"t{i}", kind, i, lead="L", path=path, channel=f"ch{i}")
        for i, (kind, path) in enumerate(
            [
                (Kind.VISIT, "/pricing"),
                (Kind.VISIT, "/blog"),
                (Kind.AD_CLICK, None),
                (Kind.EMAIL_CLICKED, None),
                (Kind.CONTENT_DOWNLOADED, None),
                (Kind.VISIT, "/docs"),
            ]
        )
    ]
    in_order, _ = fold(touches)
    shuffled, _ = fold([touches[i] for i in order])
    for name in ("first_touch", "last_touch", "summary", "engagement", "watermark"):
        assert getattr(shuffled, name) == getattr(in_order, name), name
    assert sorted(shuffled.hits, key=repr) == sorted(in_order.hits, key=repr)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "accept_mql",
                "reject_mql",
                "open_opportunity",
                "recycle",
                "disqualify",
                "won",
                "lost",
                "demo",
                "pricing",
            ]
        ),
        max_size=15,
    )
)
def test_every_sql_transition_has_exactly_one_complete_handoff(actions: list[str]) -> None:
    state, _ = fold(journey())
    sql_changes, handoffs = [], []
    for i, a in enumerate(actions):
        t = 31 + i
        if a == "won":
            e = ev(f"x{i}", Kind.DEAL_WON, t, lead="L", amount=1000.0)
        elif a == "lost":
            e = ev(f"x{i}", Kind.DEAL_LOST, t, lead="L")
        elif a == "demo":
            e = ev(f"x{i}", Kind.DEMO_REQUESTED, t, lead="L")
        elif a == "pricing":
            e = ev(f"x{i}", Kind.VISIT, t, lead="L", path="/pricing")
        else:
            e = ev(f"x{i}", Kind.STAGE_CHANGED, t, lead="L", action=a)
        try:
            state, out = lead_step(state, e, P, None)
        except InvalidTransition:
            continue
        sql_changes += [d for d in out if getattr(d, "to_stage", None) is Stage.SQL]
        handoffs += [d for d in out if isinstance(d, BecameSQL)]
    assert [h.transition_id for h in handoffs] == [c.transition_id for c in sql_changes]
    assert len({h.transition_id for h in handoffs}) == len(handoffs)
    assert [h.sql_count for h in handoffs] == list(range(1, len(handoffs) + 1))
    for h in handoffs:
        assert h.contact.email
        assert h.owner_id
        assert h.first_touch
        assert h.last_touch
        assert h.stage_history[-1].stage is Stage.SQL
        assert h.top_rules
        assert h.qualification.framework == "bant"


def test_long_lived_lead_stays_compact_and_bad_bytes_are_refused() -> None:
    kinds = [Kind.VISIT, Kind.EMAIL_OPENED, Kind.EMAIL_CLICKED]
    paths = ["/pricing", "/blog/a", "/docs/x"]
    more = [
        ev(f"e{i}", kinds[i % 3], 40 + i, lead="L", path=paths[(i // 3) % 3]) for i in range(60)
    ]
    state, _ = fold([*journey(), *more])
    data = encode_lead_state(state)
    assert data[:1] == b"z"  # compressed above the threshold
    assert decode_lead_state(data) == state
    assert len(data) < 2048, len(data)
    with pytest.raises(StateDecodeError):
        decode_lead_state(b"not json")
    with pytest.raises(StateDecodeError):
        decode_lead_state(b"z\x00garbage")
    with pytest.raises(StateDecodeError, match="unknown state version"):
        decode_lead_state(b'[9,["L","w"]]')


def test_a_late_event_never_makes_time_in_stage_negative() -> None:
    form = ev("f", Kind.FORM_SUBMITTED, 10, lead="L", **ICP_FORM)
    late_pricing = [ev(f"p{i}", Kind.VISIT, i, lead="L", path="/pricing") for i in range(3)]
    state, _out = fold([form, *late_pricing])
    assert state.stage is Stage.MQL
    times = [step.entered_at for step in state.history]
    assert times == sorted(times)
    assert state.mql_at == T0 + 10 * HOUR  # stamped at the LEAD entry, not the late visit


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(8))))
def test_stage_changes_form_a_chain_whatever_the_arrival_order(order: list[int]) -> None:
    events = [
        *journey(),
        ev("d", Kind.DEMO_REQUESTED, 40, lead="L"),
        ev("v", Kind.VISIT, 41, lead="L", path="/pricing"),
    ]
    _, out = fold([events[i] for i in order])
    changes = [d for d in out if hasattr(d, "to_stage")]
    assert [c.sequence for c in changes] == list(range(1, len(changes) + 1))
    assert all(b.from_stage == a.to_stage for a, b in itertools.pairwise(changes))
    assert [c.occurred_at for c in changes] == sorted(c.occurred_at for c in changes)


def test_next_deadline_tracks_sla_then_label_horizon() -> None:
    state, _ = fold(journey())
    assert next_deadline(state) == state.sla_due_at
    accepted, _ = lead_step(
        state, ev("acc", Kind.STAGE_CHANGED, 31, lead="L", action="accept_mql"), P, None
    )
    assert next_deadline(accepted) is None  # SQL: SLA met and the label was taught
    # A known lead (an email) below the MQL thresholds: only the label horizon is due.
    lead_only, _ = fold([*journey()[:2], ev("i", Kind.IDENTIFY, 6, lead="L", email="a@b.io")])
    assert lead_only.stage is Stage.LEAD
    horizon = int(P.labels.negative_horizon_days * DAY)
    assert lead_only.label_due_at == lead_only.features_at + horizon
    assert next_deadline(lead_only) == lead_only.rescore_due_at  # a decay re-score comes first
    labelled, out = advance_time(lead_only, lead_only.label_due_at, P, rescore=False)
    assert [type(d) for d in out] == [TrainingExample]
    assert labelled.label_due_at is None
