"""Scores that decay in the open: re-emit a lead's score as event time ages it.

Engagement decays with event time, but a score used to be emitted only when an event hit
a rule: at a cutoff, the score a rep saw was a median 15 days old and still showed that
day's heat. Now an open lead (lead, MQL, recycled) that was scored is due for a re-score
one day of event time later; when it is due, the rules and the model are evaluated at
that moment and a :class:`LeadScored` is emitted if the rules moved visibly (at least
:data:`MIN_POINTS` points; the model's score rides along, see :func:`rescore`). So there is at
most one re-score per lead per day, none for a lead whose score stands still, and none
once the lead has been quiet for :data:`QUIET_DAYS` (its engagement is gone by then).

A re-score that moved opens a label window when none is open (``labels``): the model
learns from the moments it is used at, cold leads included. Everything is a function of
the state and the event time it is given: a replay emits the same re-scores with the same
ids.
"""

from __future__ import annotations

from leadflow.processors.derived import LeadScored, Stage, derived_id
from leadflow.processors.evolve import evolve
from leadflow.processors.features import lead_features
from leadflow.processors.labels import open_window, takes_score
from leadflow.processors.lead_state import LeadState
from leadflow.processors.model import ScoreModel
from leadflow.processors.policy import Policy
from leadflow.processors.scoring import DAY_MS, policy_engagement, top_rules

MIN_POINTS = 1.0
QUIET_DAYS = 60
RESCORED_STAGES = frozenset({Stage.LEAD, Stage.MQL, Stage.RECYCLED})


def rescheduled(state: LeadState, at_ms: int) -> LeadState:
    """``state`` with its next re-score one day after ``at_ms`` (none when it is not live).

    Example:
        >>> rescheduled(LeadState("L", "ws", stage=Stage.LEAD), 0).rescore_due_at
        86400000
        >>> rescheduled(LeadState("L", "ws", stage=Stage.SQL), 0).rescore_due_at is None
        True
    """
    due = next_rescore(state, at_ms)
    return state if due == state.rescore_due_at else evolve(state, rescore_due_at=due)


def next_rescore(state: LeadState, at_ms: int) -> int | None:
    """When :func:`rescheduled` puts ``state``'s next re-score after one at ``at_ms``.

    Example:
        >>> next_rescore(LeadState("L", "ws", stage=Stage.LEAD), 0)
        86400000
    """
    last = state.summary.last_activity_at
    live = state.stage in RESCORED_STAGES and (last is None or at_ms - last < QUIET_DAYS * DAY_MS)
    return at_ms + DAY_MS if live else None


def moved(state: LeadState, engagement: float) -> bool:
    """Whether the rules moved visibly (:data:`MIN_POINTS`) from the score ``state`` holds.

    Fit does not decay: the rule score at the check is the held fit plus ``engagement``.

    Example:
        >>> moved(LeadState("L", "ws", engagement=5.0), 4.5), moved(LeadState("L", "ws"), 2.0)
        (False, True)
    """
    return abs((state.fit + engagement) - (state.fit + state.engagement)) >= MIN_POINTS


def rescore(
    state: LeadState, at_ms: int, policy: Policy, model: ScoreModel | None
) -> tuple[LeadState, LeadScored | None]:
    """Re-score a lead whose ``rescore_due_at`` is ``<= at_ms``; idempotent per due time.

    Returns the state (scores updated when emitted, next due time set) and the decayed
    :class:`LeadScored`, or ``None`` when nothing moved visibly or nothing was due.
    """
    due = state.rescore_due_at
    if due is None or due > at_ms:
        return state, None
    if state.stage not in RESCORED_STAGES:
        return evolve(state, rescore_due_at=None), None
    # Fit does not decay: the profile has not changed since the last score.
    fit, fit_hits = state.fit, state.fit_hits
    eng, eng_hits = policy_engagement(state.hits, at_ms, policy)
    # Whether a re-score exists is decided by the rules alone: which model the worker holds is
    # not yet a function of the log (docs/architecture.md, the model-switch marker), and a
    # record's existence and id must be. With the lead's age a model feature, the model's
    # score moves every day, so a crash (no model for the feed's first poll) changed which
    # re-scores existed. The model's score rides along when the rules move.
    if not moved(state, eng):
        # Nothing is emitted, but the lead is still shown with its score: an open label
        # window samples this moment too (labels.later_snapshots), so cooling leads are
        # taught as well. No window opens here (only at a score). Features are built only
        # when the window takes them: most daily checks move nothing, and building the
        # features (and the model's score) was most of a check's cost.
        if not state.labelled and takes_score(state, at_ms, policy):
            s = evolve(state, fit=fit, engagement=round(eng, 4))
            state = open_window(state, lead_features(s, at_ms, policy), at_ms, policy)
        return rescheduled(state, at_ms), None
    s = evolve(state, fit=fit, engagement=round(eng, 4))
    features = lead_features(s, at_ms, policy)
    model_score = round(model.predict(features), 4) if model is not None else state.model_score
    # The scores and the next re-score (``rescheduled``, once after the window) in one copy:
    # the label window neither reads nor changes them.
    s = evolve(
        s,
        fit_hits=fit_hits,
        engagement_hits=top_rules(eng_hits, policy.scoring.top_rules),
        model_score=model_score,
        model_version=model.version if model is not None else state.model_version,
        top_features=model.top_features(features) if model is not None else state.top_features,
        rescore_due_at=next_rescore(s, at_ms),
    )
    scored = LeadScored(
        score_id=derived_id(s.lead_id, "rescore", due),
        workspace_id=s.workspace_id,
        lead_id=s.lead_id,
        occurred_at=at_ms,
        fit_score=round(fit, 2),
        engagement_score=round(eng, 2),
        model_score=s.model_score,
        model_version=s.model_version,
        top_rules=top_rules((*fit_hits, *eng_hits), policy.scoring.top_rules),
        cause_event_id=f"decay:{due}",
        stage=s.stage or Stage.VISITOR,
        segments=s.segments,
    )
    return open_window(s, features, at_ms, policy), scored


__all__ = [
    "MIN_POINTS",
    "QUIET_DAYS",
    "RESCORED_STAGES",
    "moved",
    "next_rescore",
    "rescheduled",
    "rescore",
]
