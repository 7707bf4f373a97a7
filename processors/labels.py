"""Training examples: what one lead teaches the online model, and when (the labelling policy).

The model answers "will this open lead convert (``labels.conversion``) within the next
``labels.negative_horizon_days``?", at any moment a score is shown, so a lead teaches ONE
example per *window*: a window opens at a score of a known, open lead when none is open
(visitors, i.e. replayed pre-identify touches, open none), keeps the features of that
score (computed at the lead's event-time watermark), and ends with exactly one label:

- positive at a conversion within the window, with the window's snapshot;
- negative when sales says no (recycled, disqualified, a lost deal), with the snapshot;
- negative when ``labels.negative_horizon_days`` of event time pass without a conversion.

The next score after that (an event, or a decay re-score: :mod:`rescore`) opens the next
window, so an open lead is sampled about once per horizon over its whole open life, hot
and cold moments alike: the examples are distributed like the moments the score is used
at (a rep looking at the open leads on some day). Until this release the snapshot was
the LAST score before the outcome, so a conversion always taught its hottest moment and
the model never saw a lead that converts a month later (at fixed cutoffs: model AUC 0.713
vs rules 0.718, see docs/architecture.md).

Why not one example per score or per day: near-duplicates weighted by activity, correlated
examples, one pending snapshot each in state. Windows never overlap in event time: a new
one opens only from the previous label's time on (``episode_after``), so events that
arrive late from inside a span already taught (a partition lagging the worker's
watermark) open no second negative. A conversion always teaches its positive, also right
after a negative (features as of the conversion, :func:`features_as_of`). No example uses
features from after its label time. Example ids are deterministic (lead, label, cause),
so a replay re-emits the same examples.
"""

from __future__ import annotations

import dataclasses

from leadflow.processors.derived import Stage, TrainingExample, derived_id
from leadflow.processors.events import Event
from leadflow.processors.features import lead_features
from leadflow.processors.lead_state import LeadState
from leadflow.processors.policy import Policy
from leadflow.processors.scoring import DAY_MS, policy_engagement


def close_episode(
    state: LeadState, snapshot: LeadState, event: Event, policy: Policy, *, label: bool
) -> tuple[LeadState, LeadState, TrainingExample | None]:
    """Teach the episode's one example at ``event``: a conversion, or a sales no.

    ``state`` is the lead as the step has it so far, ``snapshot`` the lead just before the
    event (what the example may use); returns both updated and the example, if any.

    A positive is taught on every conversion, even when the episode already closed
    (a negative after a silence, then a comeback): the comeback is a new episode that
    ends right here. A negative (recycled, disqualified) is taught only for an OPEN
    episode, so a lead recycled twice without re-engaging teaches one negative.
    Features are the open snapshot's (the last score before this event), or, when
    there is none or it is newer than this event (a late CRM event), the lead as it
    stood at this event's time (:func:`features_as_of`): never features from after
    the label.
    """
    s, e, snap = state, event, snapshot
    at = e.occurred_at
    if snap.features_at is None or (not label and (snap.labelled or at < s.episode_after)):
        return state, snapshot, None  # never scored, or a negative for a span already taught
    if not snap.labelled and snap.features_at <= at:
        features, scored_at = dict(snap.features), snap.features_at
    else:
        features, scored_at = features_as_of(snap, at, policy), at
    example = TrainingExample(
        example_id=derived_id(s.lead_id, "example", label, e.event_id),
        workspace_id=s.workspace_id,
        lead_id=s.lead_id,
        scored_at=scored_at,
        labelled_at=at,
        label=label,
        features=features,
    )
    state = dataclasses.replace(
        state,
        labelled=True,
        label_due_at=None,
        features={},
        episode_after=max(s.episode_after, at),
    )
    # Later steps of this event (a recycle after the SQL of the same event) see the
    # episode closed.
    snapshot = dataclasses.replace(snap, labelled=True, label_due_at=None)
    return state, snapshot, example


def open_window(
    state: LeadState, features: dict[str, float], at_ms: int, policy: Policy
) -> LeadState:
    """Open a label window at a score made at ``at_ms``, unless one is open or none may open.

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> p = load_default_policy()
        >>> s = open_window(LeadState("L", "ws", stage=Stage.LEAD), {"x": 1.0}, 5, p)
        >>> s.features_at, s.labelled, open_window(s, {"x": 2.0}, 9, p).features
        (5, False, {'x': 1.0})
    """
    if not state.labelled or not label_open(state, policy) or at_ms < state.episode_after:
        return state
    horizon_ms = int(policy.labels.negative_horizon_days * DAY_MS)
    return dataclasses.replace(
        state,
        features=dict(features),
        features_at=at_ms,
        labelled=False,
        label_due_at=at_ms + horizon_ms,
    )


def features_as_of(state: LeadState, at_ms: int, policy: Policy) -> dict[str, float]:
    """The lead's features at ``at_ms`` from hits up to then (a label must not see later ones).

    Used when no open snapshot predates the label: engagement is recomputed from the hits
    that happened by ``at_ms``. Lifetime counters (visits, pricing views) cannot be rewound
    and may include a few later touches when the labelling event arrived late.
    """
    hits = tuple(h for h in state.hits if h.occurred_at <= at_ms)
    engagement, _ = policy_engagement(hits, at_ms, policy)
    as_of = dataclasses.replace(state, hits=hits, engagement=round(engagement, 4))
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
) -> tuple[LeadState, TrainingExample | None]:
    """The negative label of an open snapshot whose horizon ``watermark_ms`` has passed.

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> s = LeadState("L", "ws", stage=Stage.LEAD, features={"fit": 1.0}, features_at=0,
        ...               labelled=False)
        >>> horizon_negative(s, 0, load_default_policy())[1] is None
        True
    """
    s = state
    example = None
    horizon_ms = int(policy.labels.negative_horizon_days * DAY_MS)
    if (
        not s.labelled
        and s.features_at is not None
        and s.features_at + horizon_ms <= watermark_ms
        and label_open(s, policy)
    ):
        example = TrainingExample(
            example_id=derived_id(s.lead_id, "example", False, s.features_at),
            workspace_id=s.workspace_id,
            lead_id=s.lead_id,
            scored_at=s.features_at,
            labelled_at=s.features_at + horizon_ms,
            label=False,
            features=dict(s.features),
        )
        s = dataclasses.replace(
            s,
            labelled=True,
            label_due_at=None,
            features={},
            episode_after=max(s.episode_after, s.features_at + horizon_ms),
        )
    return s, example
