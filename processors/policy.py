"""The business rules of a workspace: what a policy says, as frozen dataclasses.

Marketing and sales ops change points, thresholds and routing far more often than code, so
every number the processors use lives in one policy file. :mod:`policy_yaml` reads the file
keeping line numbers, :mod:`policy_load` checks each section, fills its defaults and builds
the :class:`Policy` (``parse_policy``, ``load_default_policy``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from leadflow.processors.events import Kind

FIT_FIELDS = frozenset(
    {"title", "seniority", "company_size", "industry", "country", "email_domain"}
)
CONVERSION_LABELS = frozenset({"sql", "won"})
_WORD = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=4096)
def words(text: str) -> tuple[str, ...]:
    """Lower-cased words of free text (letters and digits; everything else separates).

    Cached: every score tests the lead's title and each rule's phrases again.

    Example:
        >>> words("VP, Sales & Marketing (EMEA)"), words("C-Level")
        (('vp', 'sales', 'marketing', 'emea'), ('c', 'level'))
    """
    return tuple(_WORD.findall(text.lower()))


def has_phrase(text_words: tuple[str, ...], phrase: str) -> bool:
    """Whether ``phrase``'s words occur in ``text_words`` consecutively (whole words only).

    Titles are free text: a substring test reads "Director" as a CTO (it contains "cto")
    and "Coordinator" as a COO. Whole words do not.

    Example:
        >>> has_phrase(words("Director of Data"), "cto")
        False
        >>> has_phrase(words("Head of Data"), "head of")
        True
    """
    want = words(phrase)
    n = len(want)
    if n == 0:
        return False
    return any(text_words[i : i + n] == want for i in range(len(text_words) - n + 1))


@dataclass(frozen=True, slots=True)
class Match:
    """A condition on one value. Every given part must hold (an empty Match holds always).

    ``contains_any`` is a case-insensitive substring test (paths, domains); ``words_any``
    a whole-word test for free text such as titles (``"bi"`` does not match "Mobile");
    ``equals_any`` a case-insensitive equality; ``min``/``max`` an inclusive numeric range;
    ``domain_list`` names a list under ``domains`` and matches a domain equal to an entry
    or ending in ``.entry`` (so ``edu`` matches ``mit.edu``).

    Example:
        >>> Match(contains_any=("vp", "head of")).test("VP Marketing", {})
        True
        >>> Match(min=200, max=999).test(150, {})
        False
    """

    contains_any: tuple[str, ...] = ()
    equals_any: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    domain_list: str | None = None
    words_any: tuple[str, ...] = ()

    def test(self, value: object, domains: Mapping[str, tuple[str, ...]]) -> bool:
        """Whether ``value`` satisfies the condition; ``None`` never matches."""
        if value is None or value == "":
            return False
        if self.min is not None or self.max is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                return False
            if self.min is not None and value < self.min:
                return False
            if self.max is not None and value > self.max:
                return False
        text = str(value).strip().lower()
        if self.contains_any and not any(s.lower() in text for s in self.contains_any):
            return False
        if self.words_any and not any(has_phrase(words(text), w) for w in self.words_any):
            return False
        if self.equals_any and text not in {s.lower() for s in self.equals_any}:
            return False
        if self.domain_list is not None:
            entries = domains.get(self.domain_list, ())
            if not any(text == e or text.endswith("." + e) for e in entries):
                return False
        return True


@dataclass(frozen=True, slots=True)
class FitRule:
    """Points for who the lead is (``field`` is one of :data:`FIT_FIELDS`)."""

    name: str
    field: str
    match: Match
    points: float


@dataclass(frozen=True, slots=True)
class EngagementRule:
    """Points for what the lead does: an event kind, optionally narrowed.

    Every rule that matches an event fires (a pricing view scores ``page_view`` and
    ``pricing_page``). ``cap`` bounds the rule's total decayed contribution; ``decays=False``
    keeps e.g. an unsubscribe's penalty at full strength forever.
    """

    name: str
    kind: Kind
    points: float
    path_contains: tuple[str, ...] = ()
    custom_name: str | None = None
    min_minutes: int | None = None
    cap: float | None = None
    decays: bool = True


@dataclass(frozen=True, slots=True)
class Scoring:
    """Fit and engagement rules, caps, MQL thresholds and the engagement half-life."""

    fit: tuple[FitRule, ...]
    engagement: tuple[EngagementRule, ...]
    fit_cap: float
    engagement_cap: float
    fit_threshold: float
    engagement_threshold: float
    half_life_days: float
    top_rules: int = 5


@dataclass(frozen=True, slots=True)
class StrongSignal:
    """A policy-defined reason to skip sales review: e.g. a demo request from an ICP fit."""

    name: str
    kind: Kind
    min_fit: float = 0.0
    min_engagement: float | None = None


@dataclass(frozen=True, slots=True)
class Labels:
    """What counts as a conversion for the model, and when silence becomes a negative."""

    conversion: str  # "sql" or "won"
    negative_horizon_days: float
    # Later feature snapshots an open window keeps (processors/labels.py): one per score or
    # decay check at least ``snapshot_every_days`` after the newest; 0 = the window's first
    # score only.
    later_snapshots: int = 0
    snapshot_every_days: float = 7.0


@dataclass(frozen=True, slots=True)
class Framework:
    """A qualification framework: its criteria and which answer keys fill which criterion."""

    name: str
    criteria: tuple[str, ...]
    fields: Mapping[str, str]  # answer key (form field / sales answer) -> criterion


@dataclass(frozen=True, slots=True)
class QualificationPolicy:
    """The selected framework plus all defined ones (selectable per workspace)."""

    framework: str
    frameworks: Mapping[str, Framework]

    @property
    def active(self) -> Framework:
        """The framework in use."""
        return self.frameworks[self.framework]


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment of a group; the group assigns the first segment whose matches all hold."""

    name: str
    matches: Mapping[str, Match]  # fit field -> condition


@dataclass(frozen=True, slots=True)
class SegmentGroup:
    """A way to split leads, e.g. ``size`` (smb/mid/enterprise) or ``persona``."""

    name: str
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class Rep:
    """A sales rep in a pool; unavailable reps are skipped by round-robin."""

    id: str
    available: bool = True


@dataclass(frozen=True, slots=True)
class Pool:
    """Reps that share leads round-robin, and the team they belong to."""

    name: str
    team: str
    reps: tuple[Rep, ...]


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """First matching rule picks the pool (empty conditions match anything)."""

    name: str
    pool: str
    territories: tuple[str, ...] = ()
    industries: tuple[str, ...] = ()
    min_company_size: int | None = None
    max_company_size: int | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    """Territories by country, pools of reps and the rules that choose a pool."""

    territories: Mapping[str, tuple[str, ...]]  # territory -> ISO country codes
    pools: Mapping[str, Pool]
    rules: tuple[RoutingRule, ...]
    default_pool: str
    escalation_pool: str

    def territory_of(self, country: str | None) -> str | None:
        """The territory whose country list holds ``country`` (case-insensitive)."""
        if not country:
            return None
        code = country.strip().upper()
        for name, countries in self.territories.items():
            if code in countries:
                return name
        return None


@dataclass(frozen=True, slots=True)
class NurtureTrigger:
    """A behavioural trigger: e.g. three email opens without a click -> switch channel.

    Fires ``action`` when ``count_kind`` happened ``at_least`` times since the last
    ``reset_kind`` (or since the start), then re-arms after the next ``reset_kind``.
    """

    name: str
    count_kind: Kind
    at_least: int
    action: str
    reset_kind: Kind | None = None
    path_contains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """How the trainer runs, and the prior a workspace's model starts from.

    ``prior_intercept`` and ``prior_per_point`` define the PRIOR: the log-odds of a
    conversion as a line in the rule score (fit + engagement). A new workspace is scored
    by that prior alone; its own model learns a correction on top of it (never from
    another workspace's data). ``min_labels``: below this many examples of EITHER class the
    workspace's health says the model is still its prior.
    """

    snapshot_every: int = 100
    prior_intercept: float = -4.0
    prior_per_point: float = 0.03
    min_labels: int = 30


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything the processors need to decide; built by ``policy_load.parse_policy``."""

    version: int
    domains: Mapping[str, tuple[str, ...]]
    seniority: tuple[tuple[str, tuple[str, ...]], ...]  # level -> title keywords, in order
    scoring: Scoring
    strong_signals: tuple[StrongSignal, ...]
    sla_hours: float
    labels: Labels
    qualification: QualificationPolicy
    segments: tuple[SegmentGroup, ...]
    routing: Routing
    nurture: tuple[NurtureTrigger, ...]
    model: ModelPolicy = field(default_factory=ModelPolicy)
    source: str = field(default="<policy>", compare=False)
    departments: tuple[tuple[str, tuple[str, ...]], ...] = ()  # department -> title keywords

    def seniority_of(self, title: str | None) -> str | None:
        """The first seniority level with a keyword among the title's WORDS.

        Example:
            >>> p = Policy(1, {}, (("c_level", ("cto", "coo", "cxo")), ("director", ("director",))),
            ...            None, (), 1.0, None, None, (), None, ())  # type: ignore[arg-type]
            >>> p.seniority_of("Director of IT"), p.seniority_of("CxO")
            ('director', 'c_level')
            >>> p.seniority_of("Coordinator") is None
            True
        """
        return _first_level(self.seniority, title)

    def department_of(self, title: str | None) -> str | None:
        """The first department with a keyword among the title's words (``departments``)."""
        return _first_level(self.departments, title)


@lru_cache(maxsize=4096)
def _first_level(levels: tuple[tuple[str, tuple[str, ...]], ...], title: str | None) -> str | None:
    if not title:
        return None
    text = words(title)
    for level, keywords in levels:
        if any(has_phrase(text, k) for k in keywords):
            return level
    return None
