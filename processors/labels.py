"""Training examples: what one lead teaches the online model, and when (the labelling policy).

The model answers "will this lead convert (``labels.conversion``) within the horizon of its
current score?", so a lead teaches ONE
example per *episode*: the span from its first score as a known lead (visitors, i.e.
replayed pre-identify touches, open none) to its outcome. The episode keeps one open
snapshot, the features of its LAST score (computed at the lead's event-time watermark),
and ends with exactly one label:

- positive at a conversion, with the open snapshot (the last score BEFORE the converting
  event: the demo request that makes a lead SQL never grades itself);
- negative when sales says no (recycled, disqualified, a lost deal), with the open snapshot;
- negative when ``labels.negative_horizon_days`` of event time pass after the last score
  without a conversion.

Why one per episode: every score of an active lead is a near-duplicate of the previous one
(the same lead, a few hits apart), so one example per score or per day weights busy leads
by their activity, correlates the stream the online model learns from, and needs many
pending snapshots in state; the last score before the outcome is the moment the model is
used for (ranking open leads), and it is the same moment for both classes. Episodes never
overlap in event time: a new one opens only from the previous label's time on
(``episode_after``), so events that arrive late from inside a span already taught (a
partition lagging the worker's watermark) open no second negative. A recycled lead that
re-engages starts a new episode, labelled on its own. A conversion always teaches its
positive, also right after a negative (the comeback is an episode of its own). No example
uses features from after its label time: when the open snapshot is newer than a late
labelling event, the features are recomputed as of the event's time
(:func:`features_as_of`). Example ids are deterministic (lead, label, cause), so a replay
re-emits the same examples.
"""

from __future__ import annotations

import dataclasses

from leadflow.processors.derived import Stage, TrainingExample, derived_id
from leadflow.processors.events import Event
from leadflow.processors.lead_state import LeadState
from leadflow.processors.model import lead_features
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


def features_as_of(state: LeadState, at_ms: int, policy: Policy) -> dict[str, float]:
    """The lead's features at ``at_ms`` from hits up to then (a label must not see later ones).

    Used when no open snapshot predates the label: engagement is recomputed from the hits
    that happened by ``at_ms``. Lifetime counters (visits, pricing views) cannot be rewound
    and may include a few later touches when the labelling event arrived late.
    """
    hits = tuple(h for h in state.hits if h.occurred_at <= at_ms)
    engagement, _ = policy_engagement(hits, at_ms, policy)
    as_of = dataclasses.replace(state, hits=hits, engagement=round(engagement, 4))
    return lead_features(as_of, at_ms, policy.scoring.half_life_days)


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
