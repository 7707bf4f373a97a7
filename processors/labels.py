"""Training examples: what one lead teaches the online model, and when (the labelling policy).

The model answers "will this open lead convert (``labels.conversion``) within the next
``labels.negative_horizon_days``?", at any moment a score is shown. A *window* opens at a
score of a known, open lead when none is open (visitors, i.e. replayed pre-identify
touches, open none) and keeps the features of that score (computed at the lead's
event-time watermark), or of a score of the same moment right after it (``SETTLE_MS``: the
form of a capture arrives a second after its identify). With ``labels.later_snapshots`` > 0,
while it is open the lead is sampled again: a score or a daily decay check (:mod:`rescore`,
also one that emits nothing) at least ``labels.snapshot_every_days`` after the newest
snapshot adds a later snapshot (``pending``, at most ``later_snapshots``). Every snapshot
ends with exactly one label:

- positive at a conversion within its horizon (all open snapshots at once);
- negative when sales says no (recycled, disqualified, a lost deal), all open snapshots;
- negative when ``labels.negative_horizon_days`` of event time pass from that snapshot
  without a conversion; the next pending snapshot then carries the window on.

Why several snapshots (session 4, docs/architecture.md): with one snapshot per window, a
lead taught mostly from its FIRST score (81 of 99 positives in a northwind run), where
every new lead looks engaged, while the score is read all through the lead's open life.
The snapshots make the examples look like the moments the score is used at; a long-lived
lead teaches at most 1 + ``later_snapshots`` examples per horizon, in proportion to its open life,
as it is counted among the open leads a rep looks at.

Windows never reopen inside a span already taught: a new one opens only from the last
label's time on (``episode_after``), so events that arrive late from inside that span (a
partition lagging the worker's watermark) open no second window. A conversion always
teaches its positive, also right after a negative (features as of the conversion,
:func:`features_as_of`). No example uses features from after its label time. Example ids
are deterministic (lead, label, cause, snapshot time), and the snapshots are lead state
(stored with it, in its changelog), so a replay re-emits the same examples.
"""

from __future__ import annotations

from leadflow.processors.derived import Stage, TrainingExample, derived_id
from leadflow.processors.events import Event
from leadflow.processors.evolve import evolve
from leadflow.processors.features import lead_features
from leadflow.processors.lead_state import LeadState, Snapshot
from leadflow.processors.policy import Policy
from leadflow.processors.scoring import DAY_MS, policy_engagement

# A snapshot is the lead at the END of the moment that was scored: a score this soon after
# the newest snapshot replaces its features. A tracker sends one page action as several
# calls: a lead-magnet capture is ``identify`` then ``Form Submitted`` (or the form first,
# then the login) within a second, and the identify's score opened the window without the
# form. Every first window was taught without its capture form (0 of 248 early examples on
# northwind 1 had one) while every young lead at a cutoff shows it, so the model learnt
# negative weights for a recent form, which the rule score rightly rewards
# (docs/architecture.md, session 6). The snapshot's time moves with it (its features are as
# of then, and a label is never taught from features newer than itself), so a run of scores
# each within SETTLE_MS of the last is taught as it stands at the run's end.
SETTLE_MS = 60_000
# ...but a moment lasts at most one visit: scores each within SETTLE_MS of the last (a page
# every half minute, a bot, a chatty integration) stop moving the snapshot this long after
# the score that took it, so a window's horizon is fixed within half an hour of its opening
# and its negative label comes. 30 minutes is the web-analytics session timeout (Segment,
# Google Analytics, Amplitude); no settle in either simulated world runs that long.
SETTLE_LIMIT_MS = 30 * 60_000


def close_episode(
    state: LeadState, snapshot: LeadState, event: Event, policy: Policy, *, label: bool
) -> tuple[LeadState, LeadState, list[TrainingExample]]:
    """Teach the open window's examples at ``event``: a conversion, or a sales no.

    ``state`` is the lead as the step has it so far, ``snapshot`` the lead just before the
    event (what the examples may use); returns both updated and the examples.

    A positive is taught on every conversion, even when the episode already closed
    (a negative after a silence, then a comeback): the comeback is a new episode that
    ends right here. A negative (recycled, disqualified) is taught only for an OPEN
    episode, so a lead recycled twice without re-engaging teaches one negative.
    Features are the open snapshot's (the first score of the window), or, when
    there is none or it is newer than this event (a late CRM event), the lead as it
    stood at this event's time (:func:`features_as_of`): never features from after
    the label. Each later snapshot of the window (``pending``) taken by this event's
    time teaches the same label with its own features; one taken after it teaches nothing.
    """
    s, e, snap = state, event, snapshot
    at = e.occurred_at
    if snap.features_at is None or (not label and (snap.labelled or at < s.episode_after)):
        return state, snapshot, []  # never scored, or a negative for a span already taught
    if not snap.labelled and snap.features_at <= at:
        features, scored_at = dict(snap.features), snap.features_at
    else:
        features, scored_at = features_as_of(snap, at, policy), at
    examples = [
        TrainingExample(
            example_id=derived_id(s.lead_id, "example", label, e.event_id),
            workspace_id=s.workspace_id,
            lead_id=s.lead_id,
            scored_at=scored_at,
            labelled_at=at,
            label=label,
            features=features,
        )
    ]
    if not snap.labelled:
        examples.extend(
            TrainingExample(
                example_id=derived_id(s.lead_id, "example", label, e.event_id, p.at),
                workspace_id=s.workspace_id,
                lead_id=s.lead_id,
                scored_at=p.at,
                labelled_at=at,
                label=label,
                features=dict(p.features),
            )
            for p in snap.pending
            if p.at <= at
        )
    state = evolve(
        state,
        labelled=True,
        label_due_at=None,
        features={},
        pending=(),
        episode_after=max(s.episode_after, at),
        moment_at=None,
    )
    # Later steps of this event (a recycle after the SQL of the same event) see the
    # episode closed.
    snapshot = evolve(snap, labelled=True, label_due_at=None, pending=())
    return state, snapshot, examples


def open_window(
    state: LeadState, features: dict[str, float], at_ms: int, policy: Policy
) -> LeadState:
    """Open a label window at a score made at ``at_ms``, or add a later snapshot to the open one.

    No window opens for a lead that cannot be labelled, or before ``episode_after``. While a
    window is open, a score at least ``labels.snapshot_every_days`` after its newest snapshot
    adds one (``pending``, at most ``labels.later_snapshots``), and a score within
    :data:`SETTLE_MS` of the newest snapshot (the same moment) replaces it.

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> p = load_default_policy()
        >>> s = open_window(LeadState("L", "ws", stage=Stage.LEAD), {"x": 1.0}, 5, p)
        >>> s.features_at, s.labelled, open_window(s, {"x": 2.0}, 5 + DAY_MS, p).features
        (5, False, {'x': 1.0})
        >>> settled = open_window(s, {"x": 2.0}, 905, p)  # the form, 0.9 s after the identify
        >>> settled.features, settled.features_at
        ({'x': 2.0}, 905)
        >>> p3 = evolve(p, labels=evolve(p.labels, later_snapshots=3))
        >>> later = open_window(s, {"x": 3.0}, 5 + 7 * DAY_MS, p3)
        >>> later.features, [(q.at - 5) // DAY_MS for q in later.pending]
        ({'x': 1.0}, [7])
    """
    move = _window_move(state, at_ms, policy)
    if move is None:
        return state
    if move == "settle":
        return _settled(state, features, at_ms, policy)
    if move == "snapshot":
        return evolve(
            state, pending=(*state.pending, Snapshot(at_ms, dict(features))), moment_at=at_ms
        )
    horizon_ms = int(policy.labels.negative_horizon_days * DAY_MS)
    return evolve(
        state,
        features=dict(features),
        features_at=at_ms,
        labelled=False,
        label_due_at=at_ms + horizon_ms,
        pending=(),
        moment_at=at_ms,
    )


def takes_score(state: LeadState, at_ms: int, policy: Policy) -> bool:
    """Whether :func:`open_window` would change ``state`` for a score at ``at_ms``.

    Lets a caller skip building the features when the window would not take them (most
    daily decay checks of an open window, :mod:`rescore`).

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> p = load_default_policy()
        >>> s = open_window(LeadState("L", "ws", stage=Stage.LEAD), {"x": 1.0}, 5, p)
        >>> takes_score(s, 905, p), takes_score(s, 5 + DAY_MS, p)  # the same moment; a day on
        (True, False)
    """
    return _window_move(state, at_ms, policy) is not None


def _window_move(state: LeadState, at_ms: int, policy: Policy) -> str | None:
    """What a score at ``at_ms`` does to the window: settle, snapshot, open, or nothing."""
    if not label_open(state, policy):
        return None
    if not state.labelled and state.features_at is not None:
        newest, began = _moment(state, state.features_at)
        if newest <= at_ms <= min(newest + SETTLE_MS, began + SETTLE_LIMIT_MS):
            return "settle"
        every_ms = int(policy.labels.snapshot_every_days * DAY_MS)
        if len(state.pending) >= policy.labels.later_snapshots or at_ms < newest + every_ms:
            return None
        return "snapshot"
    if at_ms < state.episode_after:
        return None
    return "open"


def _moment(state: LeadState, features_at: int) -> tuple[int, int]:
    """The newest snapshot's time and when the moment it settles over began."""
    newest = state.pending[-1].at if state.pending else features_at
    return newest, newest if state.moment_at is None else state.moment_at


def _settled(state: LeadState, features: dict[str, float], at_ms: int, policy: Policy) -> LeadState:
    """The newest snapshot replaced by a score of the same moment (see ``SETTLE_MS``)."""
    assert state.features_at is not None  # only an open window settles
    _, began = _moment(state, state.features_at)
    if state.pending:
        return evolve(
            state,
            pending=(*state.pending[:-1], Snapshot(at_ms, dict(features))),
            moment_at=began,
        )
    horizon_ms = int(policy.labels.negative_horizon_days * DAY_MS)
    return evolve(
        state,
        features=dict(features),
        features_at=at_ms,
        label_due_at=at_ms + horizon_ms,
        moment_at=began,
    )


def features_as_of(state: LeadState, at_ms: int, policy: Policy) -> dict[str, float]:
    """The lead's features at ``at_ms`` from hits up to then (a label must not see later ones).

    Used when no open snapshot predates the label: engagement is recomputed from the hits
    that happened by ``at_ms``. Lifetime counters (visits, pricing views) cannot be rewound
    and may include a few later touches when the labelling event arrived late.
    """
    hits = tuple(h for h in state.hits if h.occurred_at <= at_ms)
    engagement, _ = policy_engagement(hits, at_ms, policy)
    as_of = evolve(state, hits=hits, engagement=round(engagement, 4))
    return lead_features(as_of, at_ms, policy)


def label_open(state: LeadState, policy: Policy) -> bool:
    """Whether the lead is in an episode that can still be labelled (a known, open lead)."""
    converted: tuple[Stage, ...] = (Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER)
    if policy.labels.conversion == "won":
        converted = (Stage.CUSTOMER,)
    # Visitors (replayed pre-identify touches) are not leads yet: no episode, no label.
    closed = (*converted, Stage.DISQUALIFIED, Stage.VISITOR, None)
    return state.stage not in closed


def horizon_negative(
    state: LeadState, watermark_ms: int, policy: Policy
) -> tuple[LeadState, list[TrainingExample]]:
    """The negative labels of the open snapshots whose horizon ``watermark_ms`` has passed.

    The window's snapshot is labelled first; the oldest later snapshot (``pending``) then
    becomes the window's, due at its own horizon, and so on.

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> s = LeadState("L", "ws", stage=Stage.LEAD, features={"fit": 1.0}, features_at=0,
        ...               labelled=False)
        >>> horizon_negative(s, 0, load_default_policy())[1]
        []
    """
    s = state
    examples: list[TrainingExample] = []
    horizon_ms = int(policy.labels.negative_horizon_days * DAY_MS)
    while (
        not s.labelled
        and s.features_at is not None
        and s.features_at + horizon_ms <= watermark_ms
        and label_open(s, policy)
    ):
        examples.append(
            TrainingExample(
                example_id=derived_id(s.lead_id, "example", False, s.features_at),
                workspace_id=s.workspace_id,
                lead_id=s.lead_id,
                scored_at=s.features_at,
                labelled_at=s.features_at + horizon_ms,
                label=False,
                features=dict(s.features),
            )
        )
        after = max(s.episode_after, s.features_at + horizon_ms)
        if s.pending:
            nxt = s.pending[0]
            s = evolve(
                s,
                features=dict(nxt.features),
                features_at=nxt.at,
                label_due_at=nxt.at + horizon_ms,
                pending=s.pending[1:],
                episode_after=after,
            )
        else:
            s = evolve(
                s,
                labelled=True,
                label_due_at=None,
                features={},
                episode_after=after,
                moment_at=None,
            )
    return s, examples
