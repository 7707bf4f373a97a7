"""The labelling policy: one example per episode, no features from after the label."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.processors.deadlines import advance_time, next_deadline
from leadflow.processors.derived import Stage, TrainingExample
from leadflow.processors.errors import InvalidTransition
from leadflow.processors.events import Event, Kind
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import LeadState
from leadflow.processors.policy_load import load_default_policy

from ._factory import DAY, HOUR, ICP_FORM, T0, ev

P = load_default_policy()
HORIZON = int(P.labels.negative_horizon_days * DAY)
SMALL_FORM = {**ICP_FORM, "title": "Analyst", "company_size": 20, "email": "b@small.io"}


def run(events: list[Event], state: LeadState | None = None) -> tuple[LeadState, list]:
    """Fold events like the lead agent: each event, then the deadlines its time made due."""
    examples: list[TrainingExample] = []
    watermark = 0
    for e in events:
        state, out = lead_step(state, e, P, None)
        watermark = max(watermark, e.occurred_at)
        examples += [d for d in out if isinstance(d, TrainingExample)]
        due = next_deadline(state)
        if due is not None and due <= watermark:
            state, out = advance_time(state, watermark, P)
            examples += [d for d in out if isinstance(d, TrainingExample)]
    assert state is not None
    return state, examples


def silence(state: LeadState, days: float) -> tuple[LeadState, list[TrainingExample]]:
    state, out = advance_time(state, state.watermark + int(days * DAY), P)
    return state, [d for d in out if isinstance(d, TrainingExample)]


def test_replayed_pre_identify_touches_open_no_episode() -> None:
    # Sixty days of anonymous visits replayed at identification, while the worker's event
    # time is already there: before, each replayed touch taught its own negative.
    old = [ev(f"v{i}", Kind.VISIT, i * 24, lead="L", path="/pricing") for i in range(60)]
    state = None
    for e in old:
        state, _out = lead_step(state, e, P, None)
        assert state.stage is Stage.VISITOR
        assert next_deadline(state) is None
        state, due = advance_time(state, T0 + 60 * DAY, P)
        assert due == []
    state, _ = run([ev("i", Kind.IDENTIFY, 60 * 24, lead="L", email="a@b.io")], state)
    assert state.stage is not Stage.VISITOR
    assert state.features_at == T0 + 60 * DAY
    assert not state.labelled


def test_a_late_event_scores_at_the_lead_watermark_not_in_the_past() -> None:
    state, _ = run([ev("f", Kind.FORM_SUBMITTED, 100, lead="L", **SMALL_FORM)])
    state, out = run([ev("late", Kind.VISIT, 1, lead="L", path="/pricing")], state)
    assert out == []
    assert state.features_at == T0 + 100 * HOUR
    assert state.label_due_at == T0 + 100 * HOUR + HORIZON


def test_rejection_teaches_one_negative_and_recycling_starts_a_new_episode() -> None:
    events = [
        ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **ICP_FORM),
        *(ev(f"p{i}", Kind.VISIT, 1 + i, lead="L", path="/pricing") for i in range(4)),
    ]
    state, out = run(events)
    assert state.stage is Stage.MQL
    assert out == []
    before = dict(state.features)
    state, out = run([ev("rj", Kind.STAGE_CHANGED, 10, lead="L", action="reject_mql")], state)
    assert [(x.label, x.features, x.labelled_at) for x in out] == [(False, before, T0 + 10 * HOUR)]
    # A second "no" for the same episode teaches nothing more; silence teaches nothing.
    state, again = run([ev("dq", Kind.STAGE_CHANGED, 11, lead="L", action="disqualify")], state)
    assert again == []
    assert silence(state, 90)[1] == []


def test_a_recycled_lead_labels_its_new_episode_independently() -> None:
    first = [
        ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **ICP_FORM),
        *(ev(f"p{i}", Kind.VISIT, 1 + i, lead="L", path="/pricing") for i in range(4)),
        ev("rj", Kind.STAGE_CHANGED, 10, lead="L", action="reject_mql"),
    ]
    again = [
        *(ev(f"q{i}", Kind.VISIT, 500 + i, lead="L", path="/pricing") for i in range(4)),
        ev("ok", Kind.STAGE_CHANGED, 520, lead="L", action="accept_mql"),
    ]
    state, examples = run([*first, *again])
    assert [x.label for x in examples] == [False, True]
    negative, positive = examples
    assert positive.scored_at >= negative.labelled_at  # disjoint spans
    # Each window keeps the features of the score that opened it: the form (before the
    # pricing visits) for the first, the comeback's first pricing visit for the second.
    assert "freq.pricing_page" not in negative.features
    assert positive.features["freq.pricing_page"] > 0
    assert state.stage is Stage.SQL
    assert next_deadline(state) is None


def test_silence_teaches_one_negative_and_a_comeback_inside_its_span_opens_nothing() -> None:
    state, _ = run([ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **SMALL_FORM)])
    state, out = silence(state, 31)
    assert [x.label for x in out] == [False]
    assert out[0].labelled_at - out[0].scored_at == HORIZON
    # The decay re-scores of days 1-29 fall inside the span already taught: no window.
    assert state.label_due_at is None
    # Events from inside that span (a lagging partition) open none either.
    state, inside = run([ev("v", Kind.VISIT, 24 * 20, lead="L", path="/pricing")], state)
    assert inside == []
    assert state.label_due_at is None
    # After it, the lead is scored into a new window again.
    state, _ = run([ev("w", Kind.VISIT, 24 * 40, lead="L", path="/pricing")], state)
    assert state.label_due_at == T0 + 40 * DAY + HORIZON


def test_a_conversion_reported_late_uses_no_later_features() -> None:
    events = [
        ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **ICP_FORM),
        *(ev(f"p{i}", Kind.VISIT, 100 + i, lead="L", path="/pricing") for i in range(4)),
    ]
    state, _ = run(events)
    late = ev("ok", Kind.STAGE_CHANGED, 50, lead="L", action="accept_mql")
    state, out = run([late], state)
    (positive,) = out
    assert positive.label is True
    # The window opened at the form (hour 0), before the late conversion at hour 50.
    assert (positive.scored_at, positive.labelled_at) == (T0, T0 + 50 * HOUR)
    assert "freq.pricing_page" not in positive.features  # the visits came after hour 50


_ACTIONS = ("reject_mql", "accept_mql", "recycle", "disqualify", "open_opportunity")


@st.composite
def lead_histories(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 25))
    events = [ev("f", Kind.FORM_SUBMITTED, draw(st.floats(0, 24 * 200)), lead="L", **ICP_FORM)]
    for i in range(n):
        hours = draw(st.floats(0, 24 * 200))
        kind = draw(st.sampled_from(["visit", "email", "stage", "demo"]))
        if kind == "visit":
            path = draw(st.sampled_from(["/pricing", "/blog", "/docs"]))
            events.append(ev(f"e{i}", Kind.VISIT, hours, lead="L", path=path))
        elif kind == "email":
            events.append(ev(f"e{i}", Kind.EMAIL_CLICKED, hours, lead="L"))
        elif kind == "demo":
            events.append(ev(f"e{i}", Kind.DEMO_REQUESTED, hours, lead="L"))
        else:
            action = draw(st.sampled_from(_ACTIONS))
            events.append(ev(f"e{i}", Kind.STAGE_CHANGED, hours, lead="L", action=action))
    return events


def run_tolerant(
    events: list[Event], applied: list[Event] | None = None
) -> tuple[LeadState | None, list[TrainingExample]]:
    """Like :func:`run`, skipping sales actions the stage machine refuses (dead letters)."""
    state: LeadState | None = None
    examples: list[TrainingExample] = []
    watermark = 0
    for e in events:
        try:
            state, out = lead_step(state, e, P, None)
        except InvalidTransition:  # the worker sends it to the dead-letter topic
            continue
        if applied is not None:
            applied.append(e)
        watermark = max(watermark, e.occurred_at)
        state, due = advance_time(state, watermark, P)
        examples += [d for d in [*out, *due] if isinstance(d, TrainingExample)]
    return state, examples


@settings(max_examples=150, deadline=None)
@given(lead_histories(), st.booleans())
def test_labelling_invariants(events: list[Event], in_order: bool) -> None:
    if in_order:
        events = sorted(events, key=lambda e: e.occurred_at)
    applied: list[Event] = []
    state, examples = run_tolerant(events, applied)
    assert state is not None
    sql_transitions = state.sql_count
    positives = [x for x in examples if x.label]
    negatives = [x for x in examples if not x.label]
    # No example uses features from after its label time.
    assert all(x.scored_at <= x.labelled_at for x in examples)
    # One positive per conversion at most; negatives never overlap an earlier example's span.
    assert len(positives) <= sql_transitions
    spans = sorted((x.scored_at, x.labelled_at) for x in negatives)
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))
    # An episode teaches one example, so a lead teaches at most one per conversion, per
    # sales "no", and per horizon of its own event time.
    span = max(e.occurred_at for e in events) - min(e.occurred_at for e in events)
    nos = sum(e.kind is Kind.STAGE_CHANGED for e in events)
    assert len(negatives) <= nos + span // HORIZON + 1
    assert len({x.example_id for x in examples}) == len(examples)
    # Replay gives identical examples.
    assert run_tolerant(events)[1] == examples
    # Redelivered events (those that were applied) teach nothing new.
    replayed = state
    for e in applied:
        replayed, out = lead_step(replayed, e, P, None)
        assert out == []
