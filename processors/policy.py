r"""The business rules of a workspace, parsed from YAML and validated with line numbers.

Marketing and sales ops change points, thresholds and routing far more often than code, so
every number the processors use lives in one policy file. A typo there must fail the worker
at start with a message that names the file, the line and the field, e.g.
``policy.yaml:17 scoring.engagement[3].points: must be a number``. That is why the parser
walks PyYAML's composed node tree (which keeps marks) instead of ``safe_load``'s plain dicts.

Example:
    >>> p = load_default_policy()
    >>> p.sla_hours, p.qualification.framework
    (24.0, 'bant')
    >>> parse_policy("version: 1\nsla_hours: soon\n", "p.yaml")
    Traceback (most recent call last):
    ...
    leadflow.processors.errors.PolicyError: p.yaml:2 sla_hours: must be a number
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TypeVar

import yaml

from leadflow.processors.errors import PolicyError
from leadflow.processors.events import Kind

FIT_FIELDS = frozenset(
    {"title", "seniority", "company_size", "industry", "country", "email_domain"}
)
CONVERSION_LABELS = frozenset({"sql", "won"})


@dataclass(frozen=True, slots=True)
class Match:
    """A condition on one value. Every given part must hold (an empty Match holds always).

    ``contains_any`` is a case-insensitive substring test (titles are free text);
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
    """How the trainer runs: how often it publishes a signed snapshot."""

    snapshot_every: int = 100


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything the processors need to decide; parsed by :func:`parse_policy`."""

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

    def seniority_of(self, title: str | None) -> str | None:
        """The first seniority level whose keyword occurs in ``title``."""
        if not title:
            return None
        text = title.lower()
        for level, words in self.seniority:
            if any(w.lower() in text for w in words):
                return level
        return None


# --- the node walker ------------------------------------------------------------------


class _N:
    """A YAML node plus its dotted path, so every error can say where it is."""

    __slots__ = ("node", "path", "source")

    def __init__(self, node: yaml.Node, path: str, source: str) -> None:
        self.node = node
        self.path = path
        self.source = source

    def fail(self, message: str) -> PolicyError:
        line = self.node.start_mark.line + 1
        return PolicyError(f"{self.source}:{line} {self.path or '<root>'}: {message}")

    def _child(self, node: yaml.Node, key: str) -> _N:
        path = f"{self.path}.{key}" if self.path else key
        return _N(node, path, self.source)

    def mapping(self, allowed: frozenset[str] | None = None) -> dict[str, _N]:
        if not isinstance(self.node, yaml.MappingNode):
            raise self.fail("must be a mapping")
        out: dict[str, _N] = {}
        for key_node, value_node in self.node.value:
            key = str(key_node.value)
            child = self._child(value_node, key)
            if allowed is not None and key not in allowed:
                raise _N(key_node, child.path, self.source).fail(
                    f"unknown field (allowed: {', '.join(sorted(allowed))})"
                )
            if key in out:
                raise _N(key_node, child.path, self.source).fail("duplicate field")
            out[key] = child
        return out

    def seq(self) -> list[_N]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.fail("must be a list")
        return [_N(n, f"{self.path}[{i}]", self.source) for i, n in enumerate(self.node.value)]

    def _scalar(self) -> tuple[str, str]:
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.fail("must be a single value")
        return self.node.tag.rsplit(":", 1)[-1], str(self.node.value)

    def text(self) -> str:
        tag, value = self._scalar()
        if tag == "null" or value == "":
            raise self.fail("must be a non-empty string")
        return value

    def num(self) -> float:
        tag, value = self._scalar()
        if tag not in {"int", "float"}:
            raise self.fail("must be a number")
        number = float(yaml.safe_load(value))
        if not math.isfinite(number):
            # .nan passes every "> 0" check and then turns each decayed score into NaN.
            raise self.fail("must be a finite number")
        return number

    def integer(self) -> int:
        tag, value = self._scalar()
        if tag != "int":
            raise self.fail("must be an integer")
        return int(value)

    def flag(self) -> bool:
        tag, value = self._scalar()
        if tag != "bool":
            raise self.fail("must be true or false")
        return value.lower() in {"true", "yes", "on"}

    def strs(self) -> tuple[str, ...]:
        return tuple(n.text() for n in self.seq())

    def kind(self) -> Kind:
        value = self.text()
        try:
            return Kind(value)
        except ValueError:
            raise self.fail(f"unknown event kind {value!r}") from None


T = TypeVar("T")


def _req(m: Mapping[str, _N], key: str, parent: _N) -> _N:
    if key not in m:
        raise parent.fail(f"missing required field {key!r}")
    return m[key]


def _opt(m: Mapping[str, _N], key: str, read: Callable[[_N], T], default: T) -> T:
    return read(m[key]) if key in m else default


def _positive(n: _N, value: float) -> float:
    if value <= 0:
        raise n.fail("must be greater than 0")
    return value


_MATCH_KEYS = frozenset({"contains_any", "equals_any", "min", "max", "domain_list"})


def _match(n: _N, domains: Mapping[str, tuple[str, ...]]) -> Match:
    m = n.mapping(_MATCH_KEYS)
    if not m:
        raise n.fail(f"needs at least one of {', '.join(sorted(_MATCH_KEYS))}")
    domain_list = _opt(m, "domain_list", _N.text, None)
    if domain_list is not None and domain_list not in domains:
        raise m["domain_list"].fail(f"no list {domain_list!r} under domains")
    low, high = _opt(m, "min", _N.num, None), _opt(m, "max", _N.num, None)
    if low is not None and high is not None and low > high:
        # An empty range never matches: the rule would silently never fire.
        raise m["max"].fail(f"must not be below min ({low:g})")
    return Match(
        contains_any=_opt(m, "contains_any", _N.strs, ()),
        equals_any=_opt(m, "equals_any", _N.strs, ()),
        min=low,
        max=high,
        domain_list=domain_list,
    )


def _unique_names(items: list[tuple[_N, str]], what: str) -> None:
    seen: set[str] = set()
    for n, name in items:
        if name in seen:
            raise n.fail(f"duplicate {what} name {name!r}")
        seen.add(name)


def _fit_rule(n: _N, domains: Mapping[str, tuple[str, ...]]) -> FitRule:
    m = n.mapping(frozenset({"name", "field", "match", "points"}))
    field_node = _req(m, "field", n)
    fit_field = field_node.text()
    if fit_field not in FIT_FIELDS:
        raise field_node.fail(f"must be one of {', '.join(sorted(FIT_FIELDS))}")
    return FitRule(
        name=_req(m, "name", n).text(),
        field=fit_field,
        match=_match(_req(m, "match", n), domains),
        points=_req(m, "points", n).num(),
    )


def _engagement_rule(n: _N) -> EngagementRule:
    keys = {"name", "kind", "points", "path_contains", "custom_name", "min_minutes", "cap"}
    m = n.mapping(frozenset(keys | {"decays"}))
    cap = _opt(m, "cap", _N.num, None)
    if cap is not None:
        _positive(m["cap"], cap)
    return EngagementRule(
        name=_req(m, "name", n).text(),
        kind=_req(m, "kind", n).kind(),
        points=_req(m, "points", n).num(),
        path_contains=_opt(m, "path_contains", _N.strs, ()),
        custom_name=_opt(m, "custom_name", _N.text, None),
        min_minutes=_opt(m, "min_minutes", _N.integer, None),
        cap=cap,
        decays=_opt(m, "decays", _N.flag, True),
    )


def _scoring(n: _N, domains: Mapping[str, tuple[str, ...]]) -> Scoring:
    m = n.mapping(
        frozenset({"fit", "engagement", "caps", "thresholds", "half_life_days", "top_rules"})
    )
    fit_nodes = _req(m, "fit", n).seq()
    fit = tuple(_fit_rule(x, domains) for x in fit_nodes)
    eng_nodes = _req(m, "engagement", n).seq()
    engagement = tuple(_engagement_rule(x) for x in eng_nodes)
    _unique_names(
        [(x, r.name) for x, r in zip(fit_nodes, fit, strict=True)]
        + [(x, r.name) for x, r in zip(eng_nodes, engagement, strict=True)],
        "rule",
    )
    caps_node = _req(m, "caps", n)
    caps = caps_node.mapping(frozenset({"fit", "engagement"}))
    th_node = _req(m, "thresholds", n)
    th = th_node.mapping(frozenset({"fit", "engagement"}))
    hl = _req(m, "half_life_days", n)
    top = _opt(m, "top_rules", _N.integer, 5)
    if top < 1:
        raise m["top_rules"].fail("must be at least 1")
    return Scoring(
        fit=fit,
        engagement=engagement,
        fit_cap=_positive(_req(caps, "fit", caps_node), _req(caps, "fit", caps_node).num()),
        engagement_cap=_positive(
            _req(caps, "engagement", caps_node), _req(caps, "engagement", caps_node).num()
        ),
        fit_threshold=_req(th, "fit", th_node).num(),
        engagement_threshold=_req(th, "engagement", th_node).num(),
        half_life_days=_positive(hl, hl.num()),
        top_rules=top,
    )


def _strong_signal(n: _N) -> StrongSignal:
    m = n.mapping(frozenset({"name", "kind", "min_fit", "min_engagement"}))
    return StrongSignal(
        name=_req(m, "name", n).text(),
        kind=_req(m, "kind", n).kind(),
        min_fit=_opt(m, "min_fit", _N.num, 0.0),
        min_engagement=_opt(m, "min_engagement", _N.num, None),
    )


def _labels(n: _N) -> Labels:
    m = n.mapping(frozenset({"conversion", "negative_horizon_days"}))
    conv_node = _req(m, "conversion", n)
    conversion = conv_node.text()
    if conversion not in CONVERSION_LABELS:
        raise conv_node.fail("must be 'sql' or 'won'")
    horizon = _req(m, "negative_horizon_days", n)
    return Labels(conversion=conversion, negative_horizon_days=_positive(horizon, horizon.num()))


def _qualification(n: _N) -> QualificationPolicy:
    m = n.mapping(frozenset({"framework", "frameworks"}))
    fw_root = _req(m, "frameworks", n)
    frameworks: dict[str, Framework] = {}
    for name, fw_node in fw_root.mapping().items():
        fm = fw_node.mapping(frozenset({"criteria", "fields"}))
        criteria = _req(fm, "criteria", fw_node).strs()
        if not criteria:
            raise fm["criteria"].fail("must name at least one criterion")
        fields: dict[str, str] = {}
        if "fields" in fm:
            for key, target in fm["fields"].mapping().items():
                criterion = target.text()
                if criterion not in criteria:
                    raise target.fail(f"{criterion!r} is not a criterion of {name}")
                fields[key] = criterion
        for c in criteria:  # an answer named like the criterion always counts
            fields.setdefault(c, c)
        frameworks[name] = Framework(name=name, criteria=criteria, fields=fields)
    fw_sel = _req(m, "framework", n)
    framework = fw_sel.text()
    if framework not in frameworks:
        raise fw_sel.fail(f"must be one of {', '.join(sorted(frameworks))}")
    return QualificationPolicy(framework=framework, frameworks=frameworks)


def _segments(n: _N, domains: Mapping[str, tuple[str, ...]]) -> tuple[SegmentGroup, ...]:
    groups: list[SegmentGroup] = []
    for gname, gnode in n.mapping().items():
        segs: list[Segment] = []
        seg_nodes = gnode.seq()
        for sn in seg_nodes:
            sm = sn.mapping()
            name = _req(sm, "name", sn).text()
            matches: dict[str, Match] = {}
            for key, mn in sm.items():
                if key == "name":
                    continue
                if key not in FIT_FIELDS:
                    raise mn.fail(f"must be one of {', '.join(sorted(FIT_FIELDS))} or name")
                matches[key] = _match(mn, domains)
            segs.append(Segment(name=name, matches=matches))
        _unique_names([(x, s.name) for x, s in zip(seg_nodes, segs, strict=True)], "segment")
        groups.append(SegmentGroup(name=gname, segments=tuple(segs)))
    return tuple(groups)


def _routing(n: _N) -> Routing:
    m = n.mapping(frozenset({"territories", "pools", "rules", "default_pool", "escalation_pool"}))
    territories = {
        name: tuple(c.upper() for c in node.strs())
        for name, node in _req(m, "territories", n).mapping().items()
    }
    pools: dict[str, Pool] = {}
    for pname, pnode in _req(m, "pools", n).mapping().items():
        pm = pnode.mapping(frozenset({"team", "reps"}))
        reps: list[Rep] = []
        for rn in _req(pm, "reps", pnode).seq():
            rm = rn.mapping(frozenset({"id", "available"}))
            available = _opt(rm, "available", _N.flag, True)
            reps.append(Rep(id=_req(rm, "id", rn).text(), available=available))
        if not reps:
            raise pm["reps"].fail("a pool needs at least one rep")
        pools[pname] = Pool(name=pname, team=_req(pm, "team", pnode).text(), reps=tuple(reps))

    def pool_ref(node: _N) -> str:
        name = node.text()
        if name not in pools:
            raise node.fail(f"no pool {name!r} under routing.pools")
        return name

    rules: list[RoutingRule] = []
    for rn in _req(m, "rules", n).seq():
        keys = {"name", "pool", "territories", "industries", "min_company_size", "max_company_size"}
        rm = rn.mapping(frozenset(keys))
        terr: tuple[str, ...] = _opt(rm, "territories", _N.strs, ())
        for i, t in enumerate(terr):
            if t not in territories:
                raise rm["territories"].seq()[i].fail(f"no territory {t!r}")
        rules.append(
            RoutingRule(
                name=_req(rm, "name", rn).text(),
                pool=pool_ref(_req(rm, "pool", rn)),
                territories=terr,
                industries=_opt(rm, "industries", _N.strs, ()),
                min_company_size=_opt(rm, "min_company_size", _N.integer, None),
                max_company_size=_opt(rm, "max_company_size", _N.integer, None),
            )
        )
    return Routing(
        territories=territories,
        pools=pools,
        rules=tuple(rules),
        default_pool=pool_ref(_req(m, "default_pool", n)),
        escalation_pool=pool_ref(_req(m, "escalation_pool", n)),
    )


def _nurture(n: _N) -> NurtureTrigger:
    m = n.mapping(
        frozenset({"name", "count_kind", "at_least", "reset_kind", "path_contains", "action"})
    )
    at_least = _req(m, "at_least", n)
    if at_least.integer() < 1:
        raise at_least.fail("must be at least 1")
    return NurtureTrigger(
        name=_req(m, "name", n).text(),
        count_kind=_req(m, "count_kind", n).kind(),
        at_least=at_least.integer(),
        action=_req(m, "action", n).text(),
        reset_kind=_opt(m, "reset_kind", _N.kind, None),
        path_contains=_opt(m, "path_contains", _N.strs, ()),
    )


def _model(n: _N) -> ModelPolicy:
    m = n.mapping(frozenset({"snapshot_every"}))
    every = _opt(m, "snapshot_every", _N.integer, 100)
    if every < 1:
        raise m["snapshot_every"].fail("must be at least 1")
    return ModelPolicy(snapshot_every=every)


_TOP = frozenset(
    {
        "version",
        "model",
        "domains",
        "seniority",
        "scoring",
        "strong_signals",
        "sla_hours",
        "labels",
        "qualification",
        "segments",
        "routing",
        "nurture",
    }
)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy document.

    Args:
        text: the YAML text.
        source: the file name used in error messages.

    Returns:
        The frozen :class:`Policy`.

    Raises:
        PolicyError: naming ``source:line field.path`` and what is wrong.
    """
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise PolicyError(f"{source}:{line} <root>: not valid YAML ({exc})") from None
    if root_node is None:
        raise PolicyError(f"{source}:1 <root>: the policy is empty")
    root = _N(root_node, "", source)
    m = root.mapping(_TOP)
    version_node = _req(m, "version", root)
    if version_node.integer() != 1:
        raise version_node.fail("only version 1 is supported")
    domains: dict[str, tuple[str, ...]] = {}
    if "domains" in m:
        for name, dn in m["domains"].mapping().items():
            domains[name] = tuple(d.lower().lstrip(".") for d in dn.strs())
    seniority: tuple[tuple[str, tuple[str, ...]], ...] = ()
    if "seniority" in m:
        seniority = tuple((lvl, node.strs()) for lvl, node in m["seniority"].mapping().items())
    sla = _req(m, "sla_hours", root)
    sla_hours = _positive(sla, sla.num())
    signals_nodes = m["strong_signals"].seq() if "strong_signals" in m else []
    signals = tuple(_strong_signal(x) for x in signals_nodes)
    _unique_names([(x, s.name) for x, s in zip(signals_nodes, signals, strict=True)], "signal")
    nurture_nodes = m["nurture"].seq() if "nurture" in m else []
    nurture = tuple(_nurture(x) for x in nurture_nodes)
    _unique_names([(x, t.name) for x, t in zip(nurture_nodes, nurture, strict=True)], "trigger")
    return Policy(
        version=1,
        domains=domains,
        seniority=seniority,
        scoring=_scoring(_req(m, "scoring", root), domains),
        strong_signals=signals,
        sla_hours=sla_hours,
        labels=_labels(_req(m, "labels", root)),
        qualification=_qualification(_req(m, "qualification", root)),
        segments=_segments(m["segments"], domains) if "segments" in m else (),
        routing=_routing(_req(m, "routing", root)),
        nurture=nurture,
        model=_model(m["model"]) if "model" in m else ModelPolicy(),
        source=source,
    )


def load_default_policy() -> Policy:
    """The policy shipped in the package (``leadflow/infra/policy/default.yaml``)."""
    text = resources.files("leadflow.infra").joinpath("policy/default.yaml").read_text("utf-8")
    return parse_policy(text, "default.yaml")
