"""What event time makes due for a lead: an MQL's review SLA and its episode's label horizon.

Deadlines fire on event time, never on the wall clock: the caller passes the watermark
(the newest ``occurred_at`` it has processed), so a replay fires the same deadlines with the
same stamps.
"""

from __future__ import annotations

from leadflow.processors.derived import OwnerAssigned, SlaBreached, Stage, derived_id
from leadflow.processors.evolve import evolve
from leadflow.processors.labels import horizon_negative, takes_score
from leadflow.processors.lead_state import Derived, LeadState
from leadflow.processors.model import ScoreModel
from leadflow.processors.policy import Policy
from leadflow.processors.rescore import RESCORED_STAGES, moved, next_rescore
from leadflow.processors.rescore import rescore as rescore_lead
from leadflow.processors.routing import RoutingState, assign
from leadflow.processors.scoring import policy_engagement


def next_deadline(state: LeadState) -> int | None:
    """The earliest event time at which :func:`advance_time` would emit something.

    The SLA due time of an unreviewed MQL, or when the open features snapshot turns into
    a negative label; ``None`` when nothing is pending. The agent keeps leads in a heap
    by this and calls ``advance_time`` once its watermark passes it.

    Example:
        >>> next_deadline(LeadState("L", "ws", stage=Stage.MQL, sla_due_at=5)), next_deadline(
        ...     LeadState("L", "ws"))
        (5, None)
    """
    if state.merged_into is not None:
        return None  # a redirect has no deadlines: its survivor carries them on
    due = [d for d in (_sla_or_label_due(state), _rescore_due(state)) if d is not None]
    return min(due) if due else None


def _sla_or_label_due(state: LeadState) -> int | None:
    """The earliest of an unreviewed MQL's SLA and the open snapshot's label horizon."""
    due: list[int] = []
    if state.stage is Stage.MQL and state.sla_due_at is not None and not state.sla_breached:
        due.append(state.sla_due_at)
    if not state.labelled and state.label_due_at is not None:
        due.append(state.label_due_at)
    return min(due) if due else None


def _rescore_due(state: LeadState) -> int | None:
    return state.rescore_due_at if state.stage in RESCORED_STAGES else None


def advance_time(
    state: LeadState,
    watermark_ms: int,
    policy: Policy,
    *,
    routing: RoutingState | None = None,
    model: ScoreModel | None = None,
    rescore: bool = True,
) -> tuple[LeadState, list[Derived]]:
    """Emit what became due by event time ``watermark_ms``; idempotent per deadline.

    With ``rescore`` a lead due for decay re-scores is re-scored at each due time up to
    ``watermark_ms`` with ``model`` (the workspace's; ``None``: rules only), see :mod:`rescore`.

    An MQL still unreviewed at its ``sla_due_at`` gives one :class:`SlaBreached`
    (stamped with the due time, not the watermark) and is escalated to the escalation
    pool (:class:`OwnerAssigned`, reason ``sla_escalation``). A features snapshot older
    than the negative horizon without a conversion gives one negative
    :class:`TrainingExample`.
    """
    out: list[Derived] = []
    s = state
    if (
        s.stage is Stage.MQL
        and s.sla_due_at is not None
        and not s.sla_breached
        and s.sla_due_at <= watermark_ms
        and s.mql_transition_id is not None
        and s.mql_at is not None
    ):
        breach = SlaBreached(
            breach_id=derived_id(s.lead_id, "sla", s.mql_transition_id),
            workspace_id=s.workspace_id,
            lead_id=s.lead_id,
            mql_transition_id=s.mql_transition_id,
            mql_at=s.mql_at,
            due_at=s.sla_due_at,
            owner_id=s.owner_id,
        )
        out.append(breach)
        a, _ = assign(s.contact, policy, routing or RoutingState(), escalate=True)
        out.append(
            OwnerAssigned(
                assignment_id=derived_id(s.lead_id, "owner", "sla_escalation", breach.breach_id),
                workspace_id=s.workspace_id,
                lead_id=s.lead_id,
                occurred_at=s.sla_due_at,
                owner_id=a.owner_id,
                team=a.team,
                pool=a.pool,
                rule=a.rule,
                cursor_after=a.cursor_after,
                previous_owner_id=s.owner_id,
                reason="sla_escalation",
                cause_event_id=breach.breach_id,
            )
        )
        s = evolve(s, sla_breached=True, owner_id=a.owner_id, team=a.team)
    # Each due re-score is evaluated at its own due time, day after day up to the watermark,
    # after the labels due by then (a re-score may add a snapshot to the open window, see
    # labels.open_window): what is emitted then depends on the lead and event time only, not
    # on how far the watermark jumped (other workspaces' traffic moves it too).
    while rescore and s.rescore_due_at is not None and s.rescore_due_at <= watermark_ms:
        due = s.rescore_due_at
        s, examples = horizon_negative(s, due, policy)
        out.extend(examples)
        s, scored = rescore_lead(s, due, policy, model)
        if scored is not None:
            out.append(scored)
    s, examples = horizon_negative(s, watermark_ms, policy)
    out.extend(examples)
    return s, out


def quiet_through(state: LeadState, at_ms: int, policy: Policy) -> LeadState:
    """``state`` past its quiet decay checks due by ``at_ms``, up to the first that is not.

    A *quiet* check is one :func:`rescore.rescore` would make without emitting anything or changing
    anything but ``rescore_due_at``: it is the lead's next deadline (no SLA or label due at or
    before it), the rules did not move (:func:`rescore.moved`) and the label window does not
    take the moment. Applying it changes nothing anyone sees, so the worker keeps it in
    memory instead of writing the state (``streams/stages/lead.py``). Stops at the first
    deadline that would emit or change more, which then fires in its turn; a lead that is a
    redirect or waits for a merge is left alone (its deadlines are deferred).

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> day = 86_400_000
        >>> s = LeadState("L", "ws", stage=Stage.LEAD, rescore_due_at=day)
        >>> quiet_through(s, 3 * day + 1, load_default_policy()).rescore_due_at // day
        4
    """
    if state.merged_into is not None or state.awaiting:
        return state
    # A quiet check changes nothing but ``rescore_due_at``, and nothing the loop reads
    # depends on it: the state is copied once, at the end, not once per quiet day.
    first = due = _rescore_due(state)
    other = _sla_or_label_due(state)
    while due is not None and due <= at_ms:
        if other is not None and other <= due:
            break
        if moved(state, policy_engagement(state.hits, due, policy)[0]):
            break
        if not state.labelled and takes_score(state, due, policy):
            break
        due = next_rescore(state, due)
    return state if due == first else evolve(state, rescore_due_at=due)
