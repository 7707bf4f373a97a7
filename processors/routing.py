"""Routing: which pool (territory, company size, industry rules) and which rep in it.

Within a pool reps take turns (round-robin) from a cursor. The cursor is explicit state
(:class:`RoutingState`) passed in and handed back, never a global: a retried step with
the same cursor gives the same owner. Unavailable reps are skipped. An owned lead is never
reassigned, except by escalation after an SLA breach (``escalate=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from leadflow.processors.derived import Contact
from leadflow.processors.policy import Policy, Pool, RoutingRule


@dataclass(frozen=True, slots=True)
class RoutingState:
    """Round-robin cursors: pool name -> index of the next rep to try."""

    cursors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Assignment:
    """The routing decision."""

    owner_id: str | None
    team: str
    pool: str
    rule: str
    cursor_after: int


def _rule_matches(rule: RoutingRule, contact: Contact, territory: str | None) -> bool:
    if rule.territories and territory not in rule.territories:
        return False
    if rule.industries:
        industry = (contact.industry or "").strip().lower()
        if industry not in {i.lower() for i in rule.industries}:
            return False
    size = contact.company_size
    if rule.min_company_size is not None and (size is None or size < rule.min_company_size):
        return False
    return not (
        rule.max_company_size is not None and (size is None or size > rule.max_company_size)
    )


def choose_pool(contact: Contact, policy: Policy) -> tuple[str, str]:
    """The pool and the name of the rule that chose it (first match, else the default).

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> choose_pool(Contact(country="DE", company_size=3000), load_default_policy())
        ('emea_enterprise', 'emea_enterprise')
        >>> choose_pool(Contact(country="BR"), load_default_policy())
        ('inbound_sdr', 'default')
    """
    territory = policy.routing.territory_of(contact.country)
    for rule in policy.routing.rules:
        if _rule_matches(rule, contact, territory):
            return rule.pool, rule.name
    return policy.routing.default_pool, "default"


def next_rep(pool: Pool, cursor: int) -> tuple[str | None, int]:
    """The first available rep at or after ``cursor`` (wrapping) and the cursor after it.

    With no available rep: ``(None, cursor)`` (the lead stays unowned in the team queue).

    Example:
        >>> from leadflow.processors.policy import Pool, Rep
        >>> p = Pool("p", "t", (Rep("a"), Rep("b", available=False), Rep("c")))
        >>> next_rep(p, 0), next_rep(p, 1), next_rep(p, 2)
        (('a', 1), ('c', 3), ('c', 3))
    """
    n = len(pool.reps)
    for step in range(n):
        index = (cursor + step) % n
        if pool.reps[index].available:
            return pool.reps[index].id, cursor + step + 1
    return None, cursor


def assign(
    contact: Contact,
    policy: Policy,
    routing: RoutingState,
    *,
    escalate: bool = False,
) -> tuple[Assignment, RoutingState]:
    """Pick an owner and advance that pool's cursor.

    Args:
        contact: the lead's firmographics.
        policy: rules and pools.
        routing: the current cursors.
        escalate: route to ``routing.escalation_pool`` (after an SLA breach).

    Returns:
        The assignment and the routing state with the pool's cursor advanced.
    """
    if escalate:
        pool_name, rule = policy.routing.escalation_pool, "sla_escalation"
    else:
        pool_name, rule = choose_pool(contact, policy)
    pool = policy.routing.pools[pool_name]
    owner, cursor = next_rep(pool, routing.cursors.get(pool_name, 0))
    # Keep cursors small: only the position within the pool matters.
    cursor %= len(pool.reps)
    new = RoutingState(cursors={**routing.cursors, pool_name: cursor})
    return Assignment(owner, pool.team, pool_name, rule, cursor), new
