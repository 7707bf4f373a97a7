"""Rule scoring: fit (who they are) and engagement (what they do), kept apart.

Fit is a function of the current profile, so it never decays. Engagement is COMPUTED at
read time from the lead's stored rule hits: each hit's points decay by the hit's age in
event time, ``points * 0.5 ** (age / half_life)``, then each rule's total is capped, then
the sum is capped. Nothing ever rewrites a stored counter, so a replay of the log gives
the same numbers, and the result does not depend on the order in which hits arrived
(sums are ``math.fsum``'s, correctly rounded whatever the order).

A hit whose event lies after the read time (a late clock, a replay read) counts at full
strength: age is clipped at zero, which keeps the score monotone in time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from leadflow.processors.derived import Contact, RuleHit
from leadflow.processors.events import Event
from leadflow.processors.policy import EngagementRule, FitRule, Policy

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class EngagementHit:
    """One engagement rule that fired on one event, stored undecayed."""

    rule: str
    points: float
    occurred_at: int
    decays: bool = True


def email_domain(email: str | None) -> str | None:
    """The lower-cased domain of an email, if it has one.

    Example:
        >>> email_domain("Ada@Example.COM"), email_domain("nobody")
        ('example.com', None)
    """
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().lower() or None


def fit_value(contact: Contact, fit_field: str, domain: str | None = None) -> object:
    """The value a fit rule or segment tests, by field name.

    ``domain`` is the email's domain when the caller knows it: with PII encryption on,
    ``contact.email`` is sealed and the worker derives the domain at the edge. Without
    it the domain comes from ``contact.email`` (plaintext; a sealed one has none).

    Example:
        >>> fit_value(Contact(email="ada@acme.io"), "email_domain")
        'acme.io'
        >>> fit_value(Contact(email="enc:v1:0a0a0a0a:QUJD"), "email_domain", domain="acme.io")
        'acme.io'
    """
    if fit_field == "email_domain":
        return domain if domain is not None else email_domain(contact.email)
    return getattr(contact, fit_field)


def _fit_rule_fires(rule: FitRule, contact: Contact, policy: Policy, domain: str | None) -> bool:
    return rule.match.test(fit_value(contact, rule.field, domain), policy.domains)


def fit_score(
    contact: Contact, policy: Policy, *, domain: str | None = None
) -> tuple[float, tuple[RuleHit, ...]]:
    """Fit score (capped at ``scoring.caps.fit``) and the rules that fired.

    ``domain``: the email's domain when ``contact.email`` is sealed (see :func:`fit_value`).

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> p = load_default_policy()
        >>> c = Contact(email="ada@acme.io", title="VP Data", seniority="vp", company_size=5000)
        >>> fit_score(c, p)[0]
        65.0
        >>> fit_score(Contact(email="kid@cs.mit.edu"), p)[0]
        -40.0
    """
    hits = tuple(
        RuleHit(rule.name, rule.points)
        for rule in policy.scoring.fit
        if _fit_rule_fires(rule, contact, policy, domain)
    )
    total = math.fsum(h.points for h in hits)
    return min(total, policy.scoring.fit_cap), hits


def _rule_fires(rule: EngagementRule, event: Event) -> bool:
    if rule.kind is not event.kind:
        return False
    if rule.path_contains:
        where = (event.context.path or event.context.url or "").lower()
        if not any(p.lower() in where for p in rule.path_contains):
            return False
    if rule.custom_name is not None and event.payload.get("name") != rule.custom_name:
        return False
    if rule.min_minutes is not None:
        minutes = _minutes(event.payload.get("minutes_attended"))
        if minutes is None or minutes < rule.min_minutes:
            return False
    return True


def _minutes(value: object) -> float | None:
    # Webinar platforms send minutes as an int, a float or a numeric string; a rule that
    # needs minutes does not fire without them (the attendance rule itself needs none).
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def engagement_hits(event: Event, policy: Policy) -> tuple[EngagementHit, ...]:
    """Every engagement rule of the policy that fires on ``event`` (all of them count).

    Example:
        >>> from leadflow.processors.events import Context
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> from leadflow.processors.events import Kind
        >>> e = Event("e", Kind.VISIT, "ws", 0, 0, "a", "L", Context(path="/pricing"))
        >>> [h.rule for h in engagement_hits(e, load_default_policy())]
        ['page_view', 'pricing_page']
    """
    return tuple(
        EngagementHit(r.name, r.points, event.occurred_at, r.decays)
        for r in policy.scoring.engagement
        if _rule_fires(r, event)
    )


def decayed(hit: EngagementHit, at_ms: int, half_life_days: float) -> float:
    """A hit's points at ``at_ms``: halved every ``half_life_days`` of event time.

    Example:
        >>> decayed(EngagementHit("pricing", 10.0, 0), 14 * DAY_MS, 14.0)
        5.0
    """
    if not hit.decays:
        return hit.points
    age = max(0, at_ms - hit.occurred_at)
    return float(hit.points * 0.5 ** (age / (half_life_days * DAY_MS)))


def engagement_breakdown(
    hits: Iterable[EngagementHit],
    at_ms: int,
    half_life_days: float,
    *,
    rule_caps: Mapping[str, float | None] | None = None,
    cap: float | None = None,
) -> tuple[float, tuple[RuleHit, ...]]:
    """Engagement score at ``at_ms`` and each rule's capped, decayed contribution.

    Rule contributions are clamped to ``[-cap, cap]`` of the rule; the total to at most
    ``cap``. Contributions are sorted by magnitude (largest first), then by rule name.
    """
    # No sort: ``math.fsum`` rounds the exact sum once, so its result does not depend on
    # the order of the values, and the contributions get a total order below.
    per_rule: dict[str, list[float]] = defaultdict(list)
    for hit in hits:
        per_rule[hit.rule].append(decayed(hit, at_ms, half_life_days))
    caps = rule_caps or {}
    contributions: list[RuleHit] = []
    for rule, values in per_rule.items():
        total = math.fsum(values)
        rule_cap = caps.get(rule)
        if rule_cap is not None:
            total = max(-rule_cap, min(rule_cap, total))
        contributions.append(RuleHit(rule, total))
    contributions.sort(key=lambda r: (-abs(r.points), r.rule))
    score = math.fsum(sorted(r.points for r in contributions))
    if cap is not None:
        score = min(score, cap)
    return score, tuple(contributions)


def engagement_score(
    hits: Iterable[EngagementHit],
    at_ms: int,
    half_life_days: float,
    *,
    rule_caps: Mapping[str, float | None] | None = None,
    cap: float | None = None,
) -> float:
    """The decayed engagement score at ``at_ms`` (see :func:`engagement_breakdown`).

    Example:
        >>> hits = [EngagementHit("pricing", 10.0, 0), EngagementHit("pricing", 10.0, 0)]
        >>> engagement_score(hits, 14 * DAY_MS, 14.0)
        10.0
        >>> engagement_score(hits, 0, 14.0, rule_caps={"pricing": 15.0})
        15.0
    """
    return engagement_breakdown(hits, at_ms, half_life_days, rule_caps=rule_caps, cap=cap)[0]


def policy_engagement(
    hits: Iterable[EngagementHit], at_ms: int, policy: Policy
) -> tuple[float, tuple[RuleHit, ...]]:
    """:func:`engagement_breakdown` with the policy's caps and half-life."""
    s = policy.scoring
    return engagement_breakdown(
        hits,
        at_ms,
        s.half_life_days,
        rule_caps={r.name: r.cap for r in s.engagement},
        cap=s.engagement_cap,
    )


def top_rules(hits: Iterable[RuleHit], n: int) -> tuple[RuleHit, ...]:
    """The ``n`` largest contributions by magnitude (ties by rule name), rounded to 0.01.

    Example:
        >>> top_rules([RuleHit("a", 1.0), RuleHit("b", -5.0), RuleHit("c", 3.0)], 2)
        (RuleHit(rule='b', points=-5.0), RuleHit(rule='c', points=3.0))
    """
    ranked = sorted(hits, key=lambda r: (-abs(r.points), r.rule))
    return tuple(RuleHit(r.rule, round(r.points, 2)) for r in ranked[:n] if r.points != 0)


__all__ = [
    "DAY_MS",
    "EngagementHit",
    "decayed",
    "email_domain",
    "engagement_breakdown",
    "engagement_hits",
    "engagement_score",
    "fit_score",
    "fit_value",
    "policy_engagement",
    "top_rules",
]
