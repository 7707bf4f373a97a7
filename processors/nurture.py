"""Nurture: behavioural triggers from the policy (e.g. three opens without a click).

Per lead and trigger a counter counts matching events since the last reset event; the
trigger fires exactly when the counter reaches ``at_least`` and re-arms after a reset.
Counters move in arrival order (nurture reacts to what just happened; a late event counts
when it arrives).
"""

from __future__ import annotations

from collections.abc import Mapping

from leadflow.processors.derived import NurtureAction, derived_id
from leadflow.processors.events import Event
from leadflow.processors.policy import NurtureTrigger, Policy


def _counts(trigger: NurtureTrigger, event: Event) -> bool:
    if event.kind is not trigger.count_kind:
        return False
    if trigger.path_contains:
        where = (event.context.path or event.context.url or "").lower()
        return any(p.lower() in where for p in trigger.path_contains)
    return True


def nurture_step(
    counters: Mapping[str, int], event: Event, policy: Policy, lead_id: str
) -> tuple[dict[str, int], list[NurtureAction]]:
    """Advance the trigger counters with one event; return the actions that fired.

    Example:
        >>> from leadflow.processors.events import Kind
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> p, c, fired = load_default_policy(), {}, []
        >>> for i in range(3):
        ...     e = Event(f"o{i}", Kind.EMAIL_OPENED, "w", i, i, None, "L")
        ...     c, out = nurture_step(c, e, p, "L")
        ...     fired += out
        >>> [(a.trigger, a.action) for a in fired]
        [('opens_without_click', 'switch_channel')]
    """
    out = dict(counters)
    actions: list[NurtureAction] = []
    for trigger in policy.nurture:
        if trigger.reset_kind is not None and event.kind is trigger.reset_kind:
            out.pop(trigger.name, None)
            continue
        if not _counts(trigger, event):
            continue
        count = out.get(trigger.name, 0) + 1
        out[trigger.name] = count
        if count == trigger.at_least:
            actions.append(
                NurtureAction(
                    action_id=derived_id(lead_id, "nurture", trigger.name, event.event_id),
                    workspace_id=event.workspace_id,
                    lead_id=lead_id,
                    occurred_at=event.occurred_at,
                    trigger=trigger.name,
                    action=trigger.action,
                    cause_event_id=event.event_id,
                )
            )
    return out, actions
