"""The labelling policy: each open window sampled weekly, no features from after the label."""

import dataclasses
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.processors import labels
from leadflow.processors.deadlines import advance_time, next_deadline
from leadflow.processors.derived import Stage, TrainingExample
from leadflow.processors.errors import InvalidTransition
from leadflow.processors.events import Event, Kind
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import LeadState, decode_lead_state, encode_lead_state
from leadflow.processors.policy import Policy
from leadflow.processors.policy_load import load_default_policy

from ._factory import DAY, HOUR, ICP_FORM, T0, ev

P = load_default_policy()
# The window sampled again (labels.later_snapshots): a snapshot about weekly, at most three.
MAX_PENDING = 3
SNAPSHOT_EVERY_DAYS = 7.0
P3 = dataclasses.replace(
    P,
    labels=dataclasses.replace(
        P.labels, later_snapshots=MAX_PENDING, snapshot_every_days=SNAPSHOT_EVERY_DAYS
    ),
)
HORIZON = int(P.labels.negative_horizon_days * DAY)
SMALL_FORM = {**ICP_FORM, "title": "Analyst", "company_size": 20, "email": "b@small.io"}


def run(
    events: list[Event], state: LeadState | None = None, policy: Policy = P
) -> tuple[LeadState, list]:
    """Fold events like the lead agent: each event, then the deadlines its time made due."""
    examples: list[TrainingExample] = []
    watermark = 0
    for e in events:
        state, out = lead_step(state, e, policy, None)
        watermark = max(watermark, e.occurred_at)
        examples += [d for d in out if isinstance(d, TrainingExample)]
        due = next_deadline(state)
        if due is not None and due <= watermark:
            state, out = advance_time(state, watermark, policy)
            examples += [d for d in out if isinstance(d, TrainingExample)]
    assert state is not None
    return state, examples


def silence(
    state: LeadState, days: float, policy: Policy = P
) -> tuple[LeadState, list[TrainingExample]]:
    state, out = advance_time(state, state.watermark + int(days * DAY), policy)
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


def test_silence_teaches_each_snapshot_once_and_a_comeback_inside_its_span_opens_nothing() -> None:
    state, _ = run([ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **SMALL_FORM)], policy=P3)
    state, out = silence(state, 31, P3)
    assert [x.label for x in out] == [False]
    assert out[0].labelled_at - out[0].scored_at == HORIZON
    # The decay re-scores of the first weeks (the form's points fading) took later
    # snapshots: the window goes on with the oldest of them, due at its own horizon.
    assert state.features_at is not None
    assert state.features_at > T0
    assert state.label_due_at == state.features_at + HORIZON
    state, rest = silence(state, 90, P3)
    assert all(not x.label and x.labelled_at - x.scored_at == HORIZON for x in rest)
    last = max(x.labelled_at for x in (*out, *rest))
    assert state.labelled
    assert state.label_due_at is None
    assert state.episode_after == last
    # Events from inside the span already taught (a lagging partition) open no window.
    inside = (last - T0) / HOUR - 24
    state, again = run([ev("v", Kind.VISIT, inside, lead="L", path="/pricing")], state, P3)
    assert again == []
    assert state.label_due_at is None
    # After it, the lead is scored into a new window again.
    after = (state.watermark - T0) / HOUR + 24 * 10
    state, _ = run([ev("w", Kind.VISIT, after, lead="L", path="/pricing")], state, P3)
    assert state.label_due_at == T0 + int(after * HOUR) + HORIZON


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


def visits(days: list[float], prefix: str = "v") -> list[Event]:
    return [ev(f"{prefix}{d}", Kind.VISIT, d * 24, lead="L", path="/blog") for d in days]


def test_an_open_window_is_sampled_weekly_and_a_conversion_teaches_each_snapshot() -> None:
    # The score is read all through a lead's open life, so the window keeps a snapshot
    # about weekly (not only its first score, where every new lead looks engaged).
    events = [ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **SMALL_FORM), *visits([2, 8, 11, 16, 24])]
    state, out = run(events, policy=P3)
    assert out == []
    assert state.features_at == T0
    assert [(p.at - T0) / DAY for p in state.pending] == [8, 16, 24][:MAX_PENDING]
    state, out = run(
        [ev("ok", Kind.STAGE_CHANGED, 26 * 24, lead="L", action="accept_mql")], state, P3
    )
    assert [x.label for x in out] == [True] * (1 + len([8, 16, 24][:MAX_PENDING]))
    assert [(x.scored_at - T0) / DAY for x in out] == [0, 8, 16, 24][: 1 + MAX_PENDING]
    assert {x.labelled_at for x in out} == {T0 + 26 * DAY}
    assert len({x.example_id for x in out}) == len(out)
    # Each snapshot keeps the features of its own moment: more visits, an older lead.
    assert [x.features.get("n.visits", 0) for x in out] == sorted(
        x.features.get("n.visits", 0) for x in out
    )
    assert out[0].features.get("age", 0) < out[-1].features["age"]
    assert state.pending == ()
    assert state.labelled


def test_each_snapshot_turns_negative_at_its_own_horizon() -> None:
    events = [ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **SMALL_FORM), *visits([8, 16])]
    state, _ = run(events, policy=P3)
    state, out = silence(state, 90, P3)
    taught = [((x.scored_at - T0) / DAY, x.label) for x in out]
    # The visits' snapshots, then those of the decay re-scores as the visits fade.
    assert taught[:3] == [(0, False), (8, False), (16, False)]
    assert all(not label for _, label in taught)
    assert all(b - a >= SNAPSHOT_EVERY_DAYS for (a, _), (b, _) in itertools.pairwise(taught))
    assert all(x.labelled_at - x.scored_at == HORIZON for x in out)
    assert state.labelled
    assert state.pending == ()
    assert next_deadline(state) is None or next_deadline(state) > state.watermark


def test_a_sales_no_labels_every_open_snapshot_once() -> None:
    events = [ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **SMALL_FORM), *visits([8, 16])]
    state, _ = run(events, policy=P3)
    state, out = run(
        [ev("dq", Kind.STAGE_CHANGED, 20 * 24, lead="L", action="disqualify")], state, P3
    )
    assert [((x.scored_at - T0) / DAY, x.label) for x in out] == [
        (0, False),
        (8, False),
        (16, False),
    ]
    assert state.pending == ()
    assert silence(state, 90, P3)[1] == []


def test_how_far_event_time_jumps_does_not_change_what_is_taught() -> None:
    # Decay re-scores add snapshots; the labels due before each re-score fire first, so one
    # jump of 80 days teaches the same examples, and leaves the same bytes, as daily steps.
    events = [
        ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **ICP_FORM),
        *(ev(f"p{i}", Kind.VISIT, 24 * i, lead="L", path="/pricing") for i in range(0, 12, 3)),
    ]
    start, _ = run(events, policy=P3)
    jumped, at_once = advance_time(start, start.watermark + 80 * DAY, P3)
    stepped, daily = start, []
    for day in range(1, 81):
        stepped, out = advance_time(stepped, start.watermark + day * DAY, P3)
        daily += out
    examples = [x for x in at_once if isinstance(x, TrainingExample)]
    assert len(examples) > 1
    assert examples == [x for x in daily if isinstance(x, TrainingExample)]
    assert sorted(map(repr, at_once)) == sorted(map(repr, daily))
    assert encode_lead_state(jumped) == encode_lead_state(stepped)


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
    events: list[Event], applied: list[Event] | None = None, policy: Policy = P
) -> tuple[LeadState | None, list[TrainingExample]]:
    """Like :func:`run`, skipping sales actions the stage machine refuses (dead letters)."""
    state: LeadState | None = None
    examples: list[TrainingExample] = []
    watermark = 0
    for e in events:
        try:
            state, out = lead_step(state, e, policy, None)
        except InvalidTransition:  # the worker sends it to the dead-letter topic
            continue
        if applied is not None:
            applied.append(e)
        watermark = max(watermark, e.occurred_at)
        state, due = advance_time(state, watermark, policy)
        examples += [d for d in [*out, *due] if isinstance(d, TrainingExample)]
    return state, examples


@settings(max_examples=150, deadline=None)
@given(lead_histories(), st.booleans(), st.sampled_from([P, P3]))
def test_labelling_invariants(events: list[Event], in_order: bool, policy: Policy) -> None:
    if in_order:
        events = sorted(events, key=lambda e: e.occurred_at)
    applied: list[Event] = []
    state, examples = run_tolerant(events, applied, policy)
    later = policy.labels.later_snapshots
    assert state is not None
    sql_transitions = state.sql_count
    positives = [x for x in examples if x.label]
    negatives = [x for x in examples if not x.label]
    # No example uses features from after its label time.
    assert all(x.scored_at <= x.labelled_at for x in examples)
    # A conversion teaches its window's snapshot and each later one (at most ``later``).
    assert len(positives) <= sql_transitions * (1 + later)
    # Each snapshot teaches one label: no two horizon negatives share their features' time.
    silent = [x.scored_at for x in negatives if x.labelled_at - x.scored_at == HORIZON]
    assert len(set(silent)) == len(silent)
    # A window opens at most once per conversion, per sales "no" and per horizon of the
    # lead's own event time, and takes a later snapshot at most every snapshot_every_days.
    span = max(e.occurred_at for e in events) - min(e.occurred_at for e in events)
    nos = sum(e.kind is Kind.STAGE_CHANGED for e in events)
    windows = nos + span // HORIZON + 1
    assert len(negatives) <= windows + (span // int(SNAPSHOT_EVERY_DAYS * DAY) if later else 0)
    # The state's later snapshots: only in an open window, capped, spaced, oldest first.
    assert len(state.pending) <= later
    assert not (state.labelled and state.pending)
    ats = [state.features_at, *(p.at for p in state.pending)] if state.pending else []
    assert all(b - a >= SNAPSHOT_EVERY_DAYS * DAY for a, b in itertools.pairwise(ats))
    # The stored bytes round-trip, and a replay stores the same bytes.
    data = encode_lead_state(state)
    assert decode_lead_state(data) == state
    again, replay = run_tolerant(events, None, policy)
    assert again is not None
    assert encode_lead_state(again) == data
    assert len({x.example_id for x in examples}) == len(examples)
    # Replay gives identical examples.
    assert replay == examples
    # Redelivered events (those that were applied) teach nothing new.
    replayed = state
    for e in applied:
        replayed, out = lead_step(replayed, e, policy, None)
        assert out == []


def test_a_decay_check_that_emits_nothing_still_samples_an_open_window() -> None:
    # A lead whose score stands still is still shown with it: the window samples it weekly.
    s = LeadState(
        "L",
        "ws-1",
        stage=Stage.LEAD,
        features={"rules.fit": 0.4},
        features_at=T0,
        labelled=False,
        label_due_at=T0 + HORIZON,
        rescore_due_at=T0 + DAY,
    )
    s, out = advance_time(s, T0 + 8 * DAY, P3)
    assert out == []  # nothing moved: no re-score emitted
    assert [(p.at - T0) / DAY for p in s.pending] == [7]
    assert s.pending[0].features["rules.fit"] == 0.0  # the lead as it is at that check
    # At the default (no later snapshots) the same check leaves the state's window alone.
    s0, _ = advance_time(dataclasses.replace(s, pending=()), T0 + 8 * DAY, P)
    assert s0.pending == ()
    # A closed window is not opened by a check that emits nothing.
    closed = dataclasses.replace(s, labelled=True, label_due_at=None, features={}, pending=())
    closed, _ = advance_time(
        dataclasses.replace(closed, rescore_due_at=T0 + 9 * DAY), T0 + 30 * DAY, P3
    )
    assert closed.labelled
    assert closed.pending == ()


SECOND = 1 / 3600  # in the ``ev`` helper's hours


def test_the_capture_form_a_moment_after_the_identify_is_in_the_window() -> None:
    # A tracker sends a lead-magnet capture as identify, then Form Submitted within a
    # second. The identify's score opened the window, so no first window ever held its
    # capture form, while every young lead read at a cutoff shows it (session 6): the model
    # learnt to discount a recent form. The window now keeps the lead at the moment's end.
    identify = ev("i", Kind.IDENTIFY, 0, lead="L", email="ada@acme.io", title="VP Data")
    form = ev("f", Kind.FORM_SUBMITTED, 0.6 * SECOND, lead="L", **SMALL_FORM)
    state, _ = run([identify])
    assert "freq.form_submit" not in state.features
    state, _ = run([form], state)
    assert state.features["recent.form_submit"] == 1.0
    assert state.features_at == form.occurred_at
    assert state.label_due_at == form.occurred_at + HORIZON
    # A score after the moment (here 2 minutes on) leaves the window's snapshot alone.
    settled = dict(state.features)
    state, _ = run([ev("v", Kind.VISIT, 2 / 60, lead="L", path="/pricing")], state)
    assert state.features == settled
    assert state.features_at == form.occurred_at


def test_a_conversion_in_the_same_moment_is_taught_from_the_lead_just_before_it() -> None:
    events = [
        ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **SMALL_FORM),
        ev("p", Kind.VISIT, 5 * SECOND, lead="L", path="/pricing"),
        ev("ok", Kind.STAGE_CHANGED, 10 * SECOND, lead="L", action="accept_mql"),
    ]
    _state, out = run(events)
    (positive,) = out
    assert positive.label is True
    assert "freq.pricing_page" in positive.features  # the moment's visit settled in
    assert positive.scored_at == T0 + 5_000 <= positive.labelled_at == T0 + 10_000


def test_a_later_snapshot_settles_over_its_moment_too() -> None:
    events = [
        ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **SMALL_FORM),
        *visits([8]),
        ev("p", Kind.VISIT, 8 * 24 + 30 * SECOND, lead="L", path="/pricing"),
    ]
    state, _ = run(events, policy=P3)
    assert state.features_at == T0
    assert "freq.pricing_page" not in state.features
    (later,) = state.pending
    assert later.at == T0 + 8 * DAY + 30_000
    assert "freq.pricing_page" in later.features


def test_a_run_of_scores_settles_the_window_for_at_most_half_an_hour() -> None:
    # A page every 40 s for two hours (a bot, a chatty integration): each score is within
    # SETTLE_MS of the last, so before the bound the snapshot, and the window's horizon,
    # moved to every new score and its negative label never came while the run lasted.
    form = ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **SMALL_FORM)
    run_of_pages = [
        ev(f"v{i}", Kind.VISIT, i * 40 * SECOND, lead="L", path="/docs") for i in range(1, 180)
    ]
    state, _ = run([form, *run_of_pages])
    assert state.features_at is not None
    half_hour = 30 * 60_000
    assert half_hour == labels.SETTLE_LIMIT_MS
    # The snapshot is the last page of the run's first half hour, not of its two hours.
    assert T0 + half_hour - 40_000 < state.features_at <= T0 + half_hour
    assert state.label_due_at == state.features_at + HORIZON
    # The bound holds for a later snapshot's moment as well: from its own first score.
    week = [
        ev(f"w{i}", Kind.VISIT, 8 * 24 + i * 40 * SECOND, lead="L", path="/docs")
        for i in range(180)
    ]
    later_state, _ = run([form, *week], policy=P3)
    (later,) = later_state.pending
    assert T0 + 8 * DAY + half_hour - 40_000 < later.at <= T0 + 8 * DAY + half_hour
    # A labelled lead keeps no moment (the stored state stays as small as before).
    done, _ = silence(state, 31)
    assert done.labelled
    assert done.moment_at is None
