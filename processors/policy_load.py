r"""Building a :class:`~leadflow.processors.policy.Policy` from its file.

Each section is read, checked and given its defaults; every error names ``file:line field``.

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

from collections.abc import Mapping
from importlib import resources

from leadflow.processors.errors import PolicyError
from leadflow.processors.policy import (
    CONVERSION_LABELS,
    FIT_FIELDS,
    EngagementRule,
    FitRule,
    Framework,
    Labels,
    Match,
    ModelPolicy,
    NurtureTrigger,
    Policy,
    Pool,
    QualificationPolicy,
    Rep,
    Routing,
    RoutingRule,
    Scoring,
    Segment,
    SegmentGroup,
    StrongSignal,
)
from leadflow.processors.policy_yaml import Node, optional, positive, required

_MATCH_KEYS = frozenset({"contains_any", "words_any", "equals_any", "min", "max", "domain_list"})


def _match(n: Node, domains: Mapping[str, tuple[str, ...]]) -> Match:
    m = n.mapping(_MATCH_KEYS)
    if not m:
        raise n.fail(f"needs at least one of {', '.join(sorted(_MATCH_KEYS))}")
    domain_list = optional(m, "domain_list", Node.text, None)
    if domain_list is not None and domain_list not in domains:
        raise m["domain_list"].fail(f"no list {domain_list!r} under domains")
    low, high = optional(m, "min", Node.num, None), optional(m, "max", Node.num, None)
    if low is not None and high is not None and low > high:
        # An empty range never matches: the rule would silently never fire.
        raise m["max"].fail(f"must not be below min ({low:g})")
    return Match(
        contains_any=optional(m, "contains_any", Node.strs, ()),
        words_any=optional(m, "words_any", Node.strs, ()),
        equals_any=optional(m, "equals_any", Node.strs, ()),
        min=low,
        max=high,
        domain_list=domain_list,
    )


def _unique_names(items: list[tuple[Node, str]], what: str) -> None:
    seen: set[str] = set()
    for n, name in items:
        if name in seen:
            raise n.fail(f"duplicate {what} name {name!r}")
        seen.add(name)


def _fit_rule(n: Node, domains: Mapping[str, tuple[str, ...]]) -> FitRule:
    m = n.mapping(frozenset({"name", "field", "match", "points"}))
    field_node = required(m, "field", n)
    fit_field = field_node.text()
    if fit_field not in FIT_FIELDS:
        raise field_node.fail(f"must be one of {', '.join(sorted(FIT_FIELDS))}")
    return FitRule(
        name=required(m, "name", n).text(),
        field=fit_field,
        match=_match(required(m, "match", n), domains),
        points=required(m, "points", n).num(),
    )


def _engagement_rule(n: Node) -> EngagementRule:
    keys = {"name", "kind", "points", "path_contains", "custom_name", "min_minutes", "cap"}
    m = n.mapping(frozenset(keys | {"decays"}))
    cap = optional(m, "cap", Node.num, None)
    if cap is not None:
        positive(m["cap"], cap)
    return EngagementRule(
        name=required(m, "name", n).text(),
        kind=required(m, "kind", n).kind(),
        points=required(m, "points", n).num(),
        path_contains=optional(m, "path_contains", Node.strs, ()),
        custom_name=optional(m, "custom_name", Node.text, None),
        min_minutes=optional(m, "min_minutes", Node.integer, None),
        cap=cap,
        decays=optional(m, "decays", Node.flag, True),
    )


def _scoring(n: Node, domains: Mapping[str, tuple[str, ...]]) -> Scoring:
    m = n.mapping(
        frozenset({"fit", "engagement", "caps", "thresholds", "half_life_days", "top_rules"})
    )
    fit_nodes = required(m, "fit", n).seq()
    fit = tuple(_fit_rule(x, domains) for x in fit_nodes)
    eng_nodes = required(m, "engagement", n).seq()
    engagement = tuple(_engagement_rule(x) for x in eng_nodes)
    _unique_names(
        [(x, r.name) for x, r in zip(fit_nodes, fit, strict=True)]
        + [(x, r.name) for x, r in zip(eng_nodes, engagement, strict=True)],
        "rule",
    )
    caps_node = required(m, "caps", n)
    caps = caps_node.mapping(frozenset({"fit", "engagement"}))
    th_node = required(m, "thresholds", n)
    th = th_node.mapping(frozenset({"fit", "engagement"}))
    hl = required(m, "half_life_days", n)
    top = optional(m, "top_rules", Node.integer, 5)
    if top < 1:
        raise m["top_rules"].fail("must be at least 1")
    return Scoring(
        fit=fit,
        engagement=engagement,
        fit_cap=positive(required(caps, "fit", caps_node), required(caps, "fit", caps_node).num()),
        engagement_cap=positive(
            required(caps, "engagement", caps_node), required(caps, "engagement", caps_node).num()
        ),
        fit_threshold=required(th, "fit", th_node).num(),
        engagement_threshold=required(th, "engagement", th_node).num(),
        half_life_days=positive(hl, hl.num()),
        top_rules=top,
    )


def _strong_signal(n: Node) -> StrongSignal:
    m = n.mapping(frozenset({"name", "kind", "min_fit", "min_engagement"}))
    return StrongSignal(
        name=required(m, "name", n).text(),
        kind=required(m, "kind", n).kind(),
        min_fit=optional(m, "min_fit", Node.num, 0.0),
        min_engagement=optional(m, "min_engagement", Node.num, None),
    )


# Each later snapshot is about 1 KB of lead state before compression (docs/architecture.md).
MAX_LATER_SNAPSHOTS = 6


def _labels(n: Node) -> Labels:
    m = n.mapping(
        frozenset({"conversion", "negative_horizon_days", "later_snapshots", "snapshot_every_days"})
    )
    conv_node = required(m, "conversion", n)
    conversion = conv_node.text()
    if conversion not in CONVERSION_LABELS:
        raise conv_node.fail("must be 'sql' or 'won'")
    horizon = required(m, "negative_horizon_days", n)
    later = optional(m, "later_snapshots", Node.integer, 0)
    if not 0 <= later <= MAX_LATER_SNAPSHOTS:
        raise m["later_snapshots"].fail(f"must be 0 to {MAX_LATER_SNAPSHOTS}")
    every = m.get("snapshot_every_days")
    return Labels(
        conversion=conversion,
        negative_horizon_days=positive(horizon, horizon.num()),
        later_snapshots=later,
        snapshot_every_days=7.0 if every is None else positive(every, every.num()),
    )


def _qualification(n: Node) -> QualificationPolicy:
    m = n.mapping(frozenset({"framework", "frameworks"}))
    fw_root = required(m, "frameworks", n)
    frameworks: dict[str, Framework] = {}
    for name, fw_node in fw_root.mapping().items():
        fm = fw_node.mapping(frozenset({"criteria", "fields"}))
        criteria = required(fm, "criteria", fw_node).strs()
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
    fw_sel = required(m, "framework", n)
    framework = fw_sel.text()
    if framework not in frameworks:
        raise fw_sel.fail(f"must be one of {', '.join(sorted(frameworks))}")
    return QualificationPolicy(framework=framework, frameworks=frameworks)


def _segments(n: Node, domains: Mapping[str, tuple[str, ...]]) -> tuple[SegmentGroup, ...]:
    groups: list[SegmentGroup] = []
    for gname, gnode in n.mapping().items():
        segs: list[Segment] = []
        seg_nodes = gnode.seq()
        for sn in seg_nodes:
            sm = sn.mapping()
            name = required(sm, "name", sn).text()
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


def _routing(n: Node) -> Routing:
    m = n.mapping(frozenset({"territories", "pools", "rules", "default_pool", "escalation_pool"}))
    territories = {
        name: tuple(c.upper() for c in node.strs())
        for name, node in required(m, "territories", n).mapping().items()
    }
    pools: dict[str, Pool] = {}
    for pname, pnode in required(m, "pools", n).mapping().items():
        pm = pnode.mapping(frozenset({"team", "reps"}))
        reps: list[Rep] = []
        for rn in required(pm, "reps", pnode).seq():
            rm = rn.mapping(frozenset({"id", "available"}))
            available = optional(rm, "available", Node.flag, True)
            reps.append(Rep(id=required(rm, "id", rn).text(), available=available))
        if not reps:
            raise pm["reps"].fail("a pool needs at least one rep")
        pools[pname] = Pool(name=pname, team=required(pm, "team", pnode).text(), reps=tuple(reps))

    def pool_ref(node: Node) -> str:
        name = node.text()
        if name not in pools:
            raise node.fail(f"no pool {name!r} under routing.pools")
        return name

    rules: list[RoutingRule] = []
    for rn in required(m, "rules", n).seq():
        keys = {"name", "pool", "territories", "industries", "min_company_size", "max_company_size"}
        rm = rn.mapping(frozenset(keys))
        terr: tuple[str, ...] = optional(rm, "territories", Node.strs, ())
        for i, t in enumerate(terr):
            if t not in territories:
                raise rm["territories"].seq()[i].fail(f"no territory {t!r}")
        rules.append(
            RoutingRule(
                name=required(rm, "name", rn).text(),
                pool=pool_ref(required(rm, "pool", rn)),
                territories=terr,
                industries=optional(rm, "industries", Node.strs, ()),
                min_company_size=optional(rm, "min_company_size", Node.integer, None),
                max_company_size=optional(rm, "max_company_size", Node.integer, None),
            )
        )
    return Routing(
        territories=territories,
        pools=pools,
        rules=tuple(rules),
        default_pool=pool_ref(required(m, "default_pool", n)),
        escalation_pool=pool_ref(required(m, "escalation_pool", n)),
    )


def _nurture(n: Node) -> NurtureTrigger:
    m = n.mapping(
        frozenset({"name", "count_kind", "at_least", "reset_kind", "path_contains", "action"})
    )
    at_least = required(m, "at_least", n)
    if at_least.integer() < 1:
        raise at_least.fail("must be at least 1")
    return NurtureTrigger(
        name=required(m, "name", n).text(),
        count_kind=required(m, "count_kind", n).kind(),
        at_least=at_least.integer(),
        action=required(m, "action", n).text(),
        reset_kind=optional(m, "reset_kind", Node.kind, None),
        path_contains=optional(m, "path_contains", Node.strs, ()),
    )


def _model(n: Node) -> ModelPolicy:
    m = n.mapping(frozenset({"snapshot_every", "prior", "min_labels"}))
    every = optional(m, "snapshot_every", Node.integer, 100)
    if every < 1:
        raise m["snapshot_every"].fail("must be at least 1")
    d = ModelPolicy()
    intercept, per_point = d.prior_intercept, d.prior_per_point
    if "prior" in m:
        p = m["prior"].mapping(frozenset({"intercept", "per_point"}))
        intercept = optional(p, "intercept", Node.num, intercept)
        per_point = optional(p, "per_point", Node.num, per_point)
    min_labels = optional(m, "min_labels", Node.integer, d.min_labels)
    if min_labels < 1:
        raise m["min_labels"].fail("must be at least 1")
    return ModelPolicy(
        snapshot_every=every,
        prior_intercept=intercept,
        prior_per_point=per_point,
        min_labels=min_labels,
    )


_TOP = frozenset(
    {
        "version",
        "model",
        "domains",
        "seniority",
        "departments",
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
    root = Node.document(text, source)
    if root is None:
        raise PolicyError(f"{source}:1 <root>: the policy is empty")
    m = root.mapping(_TOP)
    version_node = required(m, "version", root)
    if version_node.integer() != 1:
        raise version_node.fail("only version 1 is supported")
    domains: dict[str, tuple[str, ...]] = {}
    if "domains" in m:
        for name, dn in m["domains"].mapping().items():
            domains[name] = tuple(d.lower().lstrip(".") for d in dn.strs())
    seniority: tuple[tuple[str, tuple[str, ...]], ...] = ()
    if "seniority" in m:
        seniority = tuple((lvl, node.strs()) for lvl, node in m["seniority"].mapping().items())
    departments: tuple[tuple[str, tuple[str, ...]], ...] = ()
    if "departments" in m:
        departments = tuple((d, node.strs()) for d, node in m["departments"].mapping().items())
    sla = required(m, "sla_hours", root)
    sla_hours = positive(sla, sla.num())
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
        scoring=_scoring(required(m, "scoring", root), domains),
        strong_signals=signals,
        sla_hours=sla_hours,
        labels=_labels(required(m, "labels", root)),
        qualification=_qualification(required(m, "qualification", root)),
        segments=_segments(m["segments"], domains) if "segments" in m else (),
        routing=_routing(required(m, "routing", root)),
        nurture=nurture,
        model=_model(m["model"]) if "model" in m else ModelPolicy(),
        source=source,
        departments=departments,
    )


def load_default_policy() -> Policy:
    """The policy shipped in the package (``leadflow/infra/policy/default.yaml``)."""
    text = resources.files("leadflow.infra").joinpath("policy/default.yaml").read_text("utf-8")
    return parse_policy(text, "default.yaml")
