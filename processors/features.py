"""What the online model sees of a lead: features engineered for a linear model.

A linear online model can only weigh what it is given, so every feature is on a scale where
one weight makes sense, and none needs a scaler (a standard scaler learns a zero variance
for one-hots that are only ever sent as 1 and scales them to 0: the model was blind to
seniority, channel and stage). The groups:

- **who** (firmographics): one-hots ``seniority=``, ``department=`` (both from the title's
  words, see :meth:`Policy.seniority_of`), ``size=`` (employee band), ``industry=``,
  ``email=`` (business, free, student or competitor, from the policy's domain lists),
  ``territory=``; plus ``rules.fit`` (the fit score / 100).
- **what they do, per touch kind** (one per engagement rule of the policy: pricing, demo,
  webinar, content, email clicks, ...): ``freq.<rule>`` = log(1 + the rule's hits, each
  decayed by the policy half-life) and ``recent.<rule>`` = 0.5 ** (days since the newest
  hit / 7), 0 when never; plus ``rules.engagement`` (the engagement score / 100).
- **intent surge**: ``activity.3d`` and ``activity.30d`` (log of touches decayed with a
  3- and 30-day half-life) and ``surge`` = how far the last days run above the lead's own
  month (clipped at 0): a burst after a quiet month is a buying moment.
- **journey**: lifetime counts (log), ``demo_requested``, ``channel=`` (first touch),
  ``stage=``, ``recycled_before`` (sales said "not now" once) and ``age`` = log(1 + days
  since the lead's first stage) / 5: most buyers convert within weeks of capture, so the
  same activity means less in a lead open for months. It also tells the model a lead at its
  first score (where most positives are taught: every new lead looks engaged then) from
  one weeks into its life (where the score is read as often), docs/architecture.md.

Values are rounded to 4 places: the features are stored in training examples and must
not depend on float noise.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

from leadflow.processors.derived import Stage
from leadflow.processors.scoring import DAY_MS

if TYPE_CHECKING:
    from leadflow.processors.lead_state import LeadState
    from leadflow.processors.policy import Policy

RECENCY_HALF_LIFE_DAYS = 7.0
SURGE_FAST_DAYS = 3.0
SURGE_SLOW_DAYS = 30.0
# Upper bounds of the employee bands (the last band is open).
SIZE_BANDS: tuple[tuple[int, str], ...] = (
    (10, "1-10"),
    (50, "11-50"),
    (200, "51-200"),
    (1000, "201-1000"),
    (5000, "1001-5000"),
)
_EMAIL_LISTS = (("competitor", "competitor"), ("student", "student"), ("free_mail", "free"))


def size_band(employees: int | None) -> str | None:
    """The employee band of a company size.

    Example:
        >>> size_band(7), size_band(200), size_band(201), size_band(80_000), size_band(None)
        ('1-10', '51-200', '201-1000', '5001+', None)
    """
    if employees is None or employees <= 0:
        return None
    return next((name for top, name in SIZE_BANDS if employees <= top), "5001+")


def email_kind(domain: str | None, policy: Policy) -> str | None:
    """``competitor``, ``student``, ``free`` (policy domain lists) or ``business``.

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> p = load_default_policy()
        >>> email_kind("gmail.com", p), email_kind("acme.io", p), email_kind("cs.mit.edu", p)
        ('free', 'business', 'student')
    """
    if not domain:
        return None
    for list_name, kind in _EMAIL_LISTS:
        entries = policy.domains.get(list_name, ())
        if any(domain == e or domain.endswith("." + e) for e in entries):
            return kind
    return "business"


def _slug(text: str) -> str:
    return "_".join(text.strip().lower().split())


def _decayed_count(ages: list[int], half_life_days: float) -> float:
    scale = half_life_days * DAY_MS
    return math.fsum(0.5 ** (age / scale) for age in ages)


def lead_features(state: LeadState, at_ms: int, policy: Policy) -> dict[str, float]:
    """The model's features of a lead at event time ``at_ms`` (see the module doc).

    Sparse: a one-hot that does not apply is a missing key, which a linear model reads as 0.

    Example:
        >>> from leadflow.processors.derived import Contact
        >>> from leadflow.processors.lead_state import LeadState
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> from leadflow.processors.scoring import EngagementHit
        >>> who = Contact(title="Director of Marketing", seniority="director", company_size=800)
        >>> s = LeadState("L", "ws", contact=who, hits=(EngagementHit("pricing_page", 10.0, 0),))
        >>> f = lead_features(s, 7 * DAY_MS, load_default_policy())
        >>> f["seniority=director"], f["department=marketing"], f["size=201-1000"]
        (1.0, 1.0, 1.0)
        >>> f["recent.pricing_page"]
        0.5
    """
    out: dict[str, float] = {
        "rules.fit": state.fit / 100,
        "rules.engagement": state.engagement / 100,
    }
    c = state.contact
    for name, value in (
        ("seniority", c.seniority),
        ("department", policy.department_of(c.title)),
        ("size", size_band(c.company_size)),
        ("industry", _slug(c.industry) if c.industry else None),
        ("email", email_kind(state.email_domain, policy)),
        ("territory", policy.routing.territory_of(c.country) or ("other" if c.country else None)),
    ):
        if value:
            out[f"{name}={value}"] = 1.0
    if c.company_size is not None and c.company_size > 0:
        out["log_size"] = math.log10(c.company_size) / 4

    # Ages (>= 0: features as of at_ms never see a later event) per rule, and of the touches.
    by_rule: dict[str, list[int]] = defaultdict(list)
    touches: list[int] = []
    for hit in state.hits:
        age = at_ms - hit.occurred_at
        if age < 0:
            continue
        by_rule[hit.rule].append(age)
        if hit.points > 0:
            touches.append(age)
    h = policy.scoring.half_life_days
    for rule, ages in by_rule.items():
        out[f"freq.{rule}"] = math.log1p(_decayed_count(ages, h))
        out[f"recent.{rule}"] = 0.5 ** (min(ages) / DAY_MS / RECENCY_HALF_LIFE_DAYS)
    fast = _decayed_count(touches, SURGE_FAST_DAYS)
    slow = _decayed_count(touches, SURGE_SLOW_DAYS)
    out["activity.3d"] = math.log1p(fast)
    out["activity.30d"] = math.log1p(slow)
    # At a steady pace the 3-day sum is a tenth of the 30-day one; a surge runs above it.
    out["surge"] = max(0.0, math.log1p(fast) - math.log1p(slow * SURGE_FAST_DAYS / SURGE_SLOW_DAYS))

    s = state.summary
    if s.last_activity_at is not None:
        age_days = max(0, at_ms - s.last_activity_at) / DAY_MS
        out["recent.any"] = 0.5 ** (age_days / RECENCY_HALF_LIFE_DAYS)
    for name, count in (
        ("visits", s.visits),
        ("pricing_views", s.pricing_views),
        ("content_downloads", s.content_downloads),
        ("emails_opened", s.emails_opened),
        ("emails_clicked", s.emails_clicked),
        ("webinars_attended", s.webinars_attended),
    ):
        if count:
            out[f"n.{name}"] = math.log1p(count)
    if s.demo_requested:
        out["demo_requested"] = 1.0
    if state.first_touch is not None:
        out[f"channel={state.first_touch.channel}"] = 1.0
    if state.stage is not None:
        out[f"stage={state.stage.value}"] = 1.0
    if any(step.stage is Stage.RECYCLED for step in state.history):
        out["recycled_before"] = 1.0
    if state.history:  # the first step is always kept (lead_state's history cap)
        out["age"] = math.log1p(max(0, at_ms - state.history[0].entered_at) / DAY_MS) / 5
    if state.marketing is False:
        out["marketing_opt_out"] = 1.0
    return {k: round(v, 4) for k, v in sorted(out.items())}


__all__ = ["SIZE_BANDS", "email_kind", "lead_features", "size_band"]
