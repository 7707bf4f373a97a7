"""Segments: policy-defined splits (size, persona, vertical) kept on each lead.

Each group assigns at most one segment, the first whose conditions all hold; the result is
``group:segment`` strings in policy order, carried on every derived event so messaging and
analytics can split by them.
"""

from __future__ import annotations

from leadflow.processors.derived import Contact
from leadflow.processors.policy import Policy
from leadflow.processors.scoring import fit_value


def segments_of(contact: Contact, policy: Policy, *, domain: str | None = None) -> tuple[str, ...]:
    """The lead's segments, one per group at most.

    ``domain``: the email's domain when ``contact.email`` is sealed (see ``fit_value``).

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> segments_of(Contact(company_size=5000, seniority="vp"), load_default_policy())
        ('size:enterprise', 'persona:executive')
    """
    out: list[str] = []
    for group in policy.segments:
        for seg in group.segments:
            if all(
                m.test(fit_value(contact, f, domain), policy.domains)
                for f, m in seg.matches.items()
            ):
                out.append(f"{group.name}:{seg.name}")
                break
    return tuple(out)
