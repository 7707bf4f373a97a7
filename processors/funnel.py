"""The funnel stage machine: which stage changes are allowed, and the event for each.

Transitions are explicit: anything not in :data:`TRANSITIONS` raises
:class:`~leadflow.processors.errors.InvalidTransition`. Each transition's id is derived from
the lead, its sequence number, the two stages and the inbound event that caused it, so a
re-emission after a crash carries the same id, while a lead that becomes SQL a second time
(after recycling) gets a new one (different sequence and cause).
"""

from __future__ import annotations

from leadflow.processors.derived import Stage, StageChanged, derived_id
from leadflow.processors.errors import InvalidTransition

S = Stage

TRANSITIONS: dict[Stage | None, frozenset[Stage]] = {
    None: frozenset({S.VISITOR, S.LEAD}),
    S.VISITOR: frozenset({S.LEAD, S.DISQUALIFIED}),
    # A strong signal (e.g. an ICP demo request) may skip MQL.
    S.LEAD: frozenset({S.MQL, S.SQL, S.RECYCLED, S.DISQUALIFIED}),
    S.MQL: frozenset({S.SQL, S.RECYCLED, S.DISQUALIFIED}),
    S.SQL: frozenset({S.OPPORTUNITY, S.RECYCLED, S.DISQUALIFIED}),
    S.OPPORTUNITY: frozenset({S.CUSTOMER, S.RECYCLED, S.DISQUALIFIED}),
    S.CUSTOMER: frozenset(),
    # Back to nurture: the lead can qualify again, or sales can jump it to SQL.
    S.RECYCLED: frozenset({S.MQL, S.SQL, S.DISQUALIFIED}),
    # Reopening a disqualified lead is a recycle by sales.
    S.DISQUALIFIED: frozenset({S.RECYCLED}),
}


def can_transition(current: Stage | None, to: Stage) -> bool:
    """Whether the stage machine allows ``current -> to``.

    Example:
        >>> can_transition(Stage.MQL, Stage.SQL), can_transition(Stage.CUSTOMER, Stage.LEAD)
        (True, False)
    """
    return to in TRANSITIONS[current]


def transition(
    *,
    workspace_id: str,
    lead_id: str,
    sequence: int,
    current: Stage | None,
    to: Stage,
    occurred_at: int,
    reason: str,
    cause_event_id: str,
) -> StageChanged:
    """Validate ``current -> to`` and build its :class:`StageChanged`.

    Args:
        workspace_id: the tenant.
        lead_id: the lead.
        sequence: 1 for the lead's first transition, then 2, 3, ...
        current: the stage now (``None`` for a new lead).
        to: the target stage.
        occurred_at: event time of the cause.
        reason: why (e.g. ``sales_accepted`` or a rule name).
        cause_event_id: the inbound event that caused it.

    Returns:
        The transition with its deterministic ``transition_id``.

    Raises:
        InvalidTransition: the machine does not allow it.

    Example:
        >>> t = transition(workspace_id="ws", lead_id="L", sequence=3, current=Stage.MQL,
        ...                to=Stage.SQL, occurred_at=5, reason="accepted", cause_event_id="e9")
        >>> t.transition_id == derived_id("L", 3, "mql", "sql", "e9")
        True
        >>> transition(workspace_id="ws", lead_id="L", sequence=4, current=Stage.CUSTOMER,
        ...            to=Stage.MQL, occurred_at=6, reason="x", cause_event_id="e10")
        Traceback (most recent call last):
        ...
        leadflow.processors.errors.InvalidTransition: lead L: customer -> mql is not allowed ...
    """
    if sequence < 1:
        raise InvalidTransition(f"lead {lead_id}: sequence must start at 1, got {sequence}")
    if not can_transition(current, to):
        name = current.value if current is not None else "(new)"
        raise InvalidTransition(
            f"lead {lead_id}: {name} -> {to.value} is not allowed (cause {cause_event_id})"
        )
    return StageChanged(
        transition_id=derived_id(
            lead_id, sequence, current.value if current else None, to.value, cause_event_id
        ),
        workspace_id=workspace_id,
        lead_id=lead_id,
        from_stage=current,
        to_stage=to,
        occurred_at=occurred_at,
        reason=reason,
        cause_event_id=cause_event_id,
        sequence=sequence,
    )
