"""Fit rule weights from labelled history: what ``leadflow policy suggest-weights`` computes.

The fit score is a sum of rule points; the model's prior reads it as log-odds
(``model.prior``: ``intercept + per_point * points``). So a rule's points are a logistic
regression coefficient in disguise: ``points = coefficient / per_point``. Given leads whose
outcome is known (converted or not) this module fits

    log-odds(converted) = b0 + sum_i w_i * hit_i          (hit_i = 1 when rule i fires)

by penalised maximum likelihood (Newton's method), with the penalty pulling each ``w_i``
towards the CURRENT rule's ``points * per_point``, not towards 0: a rule the history says
little about (fires rarely, or never) keeps its current points, one it says much about
moves to what the data shows. ``l2`` is the penalty's strength in log-odds units (1.0 is
the default: the data must outweigh roughly one lead per rule to move it). Rules whose
input the history does not hold (the email domain is not in ClickHouse) are left out of
the fit and keep their points.

The fitted weights are graded against the current ones by the ROC AUC of the fit score on
the same leads, in-sample and k-fold cross-validated (each lead scored by weights fitted
without it): only the cross-validated figure says whether the suggestion generalises.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from leadflow.processors.derived import Contact
from leadflow.processors.errors import LeadflowError
from leadflow.processors.model import auc_exact
from leadflow.processors.policy import FitRule, Policy
from leadflow.processors.scoring import fit_value


class FitError(LeadflowError):
    """The history cannot be fitted (no lead, or one class only)."""


@dataclass(frozen=True, slots=True)
class LabelledLead:
    """One lead whose outcome is known: who they are and whether they converted."""

    contact: Contact
    email_domain: str | None
    converted: bool


@dataclass(frozen=True, slots=True)
class RuleWeight:
    """One fit rule: its points now, the suggestion, and what the history holds of it.

    ``suggested`` is ``None`` for a rule left out of the fit (its input is not in the
    history); ``hits``/``conversions`` count the leads it fires on and those that converted.
    """

    name: str
    current: float
    suggested: float | None
    hits: int
    conversions: int


@dataclass(frozen=True, slots=True)
class Suggestion:
    """Suggested fit points and how they rank the history next to the current ones."""

    rules: tuple[RuleWeight, ...]
    leads: int
    conversions: int
    points_per_logodds: float
    auc_current: float | None
    auc_suggested: float | None
    cv_auc_current: float | None
    cv_auc_suggested: float | None
    # Folds whose training part held one outcome only: not fitted, their leads left out of
    # the cross-validated AUCs (they used to count with a score of 0).
    cv_folds_skipped: int = 0

    def points(self) -> dict[str, float]:
        """``{rule: suggested points}`` of the fitted rules."""
        return {r.name: r.suggested for r in self.rules if r.suggested is not None}


def _hits(policy: Policy, rules: Sequence[FitRule], leads: Sequence[LabelledLead]) -> np.ndarray:
    return np.array(
        [
            [
                1.0 if r.match.test(fit_value(x.contact, r.field, x.email_domain), policy.domains)
                else 0.0
                for r in rules
            ]
            for x in leads
        ],
        dtype=float,
    ).reshape(len(leads), len(rules))  # fmt: skip


def fit_logistic(
    x: np.ndarray, y: np.ndarray, prior: np.ndarray, l2: float, iterations: int = 50
) -> tuple[float, np.ndarray]:
    """Intercept and weights maximising the log-likelihood minus ``l2/2 * |w - prior|^2``.

    Newton's method on a convex objective (the penalty keeps the Hessian positive
    definite, also for a rule that always or never fires).

    Example:
        >>> x = np.array([[1.0]] * 4 + [[0.0]] * 4)   # 3 of 4 hits convert, 1 of 4 others
        >>> y = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
        >>> b0, w = fit_logistic(x, y, np.zeros(1), l2=1e-9)
        >>> round(b0, 3), round(float(w[0]), 3)    # log(1/3), log(3) - log(1/3)
        (-1.099, 2.197)
    """
    n, k = x.shape
    a = np.hstack([np.ones((n, 1)), x])
    theta = np.concatenate([[0.0], prior])
    penalty = np.diag([0.0, *([l2] * k)])
    target = np.concatenate([[0.0], prior])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a @ theta)))
        grad = a.T @ (p - y) + penalty @ (theta - target)
        hess = (a * (p * (1 - p))[:, None]).T @ a + penalty + 1e-9 * np.eye(k + 1)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return float(theta[0]), theta[1:]


def _auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    value = auc_exact([(float(s), bool(y)) for s, y in zip(scores, labels, strict=True)])
    return None if value is None else round(value, 4)


def suggest_fit_weights(
    policy: Policy,
    leads: Iterable[LabelledLead],
    *,
    l2: float = 1.0,
    unobservable: frozenset[str] = frozenset(),
    folds: int = 5,
) -> Suggestion:
    """Fit the policy's fit-rule points to ``leads`` (see the module doc).

    ``unobservable``: rule FIELDS the history does not hold (``email_domain`` from
    ClickHouse); their rules keep their points.

    Raises:
        FitError: no lead, or only one class.
    """
    history = list(leads)
    y = np.array([1.0 if x.converted else 0.0 for x in history])
    if not history or y.min() == y.max():
        raise FitError(
            f"{len(history)} labelled leads, {int(y.sum())} converted: both outcomes are needed"
        )
    rules = list(policy.scoring.fit)
    fitted = [r for r in rules if r.field not in unobservable]
    scale = policy.model.prior_per_point
    hits = _hits(policy, fitted, history)
    prior = np.array([r.points * scale for r in fitted])
    _, w = fit_logistic(hits, y, prior, l2)
    current = hits @ np.array([r.points for r in fitted])
    suggested = np.round(w / scale) + 0.0  # no -0
    cv_current = np.zeros(len(history))
    cv_suggested = np.zeros(len(history))
    scored = np.zeros(len(history), dtype=bool)
    fold = np.arange(len(history)) % max(2, folds)
    skipped = 0
    for f in range(max(2, folds)):
        train, test = fold != f, fold == f
        if y[train].min() == y[train].max():
            skipped += 1
            continue
        _, wf = fit_logistic(hits[train], y[train], prior, l2)
        cv_suggested[test] = hits[test] @ wf
        cv_current[test] = current[test]
        scored |= test
    weights = []
    for r in rules:
        if r in fitted:
            i = fitted.index(r)
            col = hits[:, i] > 0
            weights.append(
                RuleWeight(r.name, r.points, float(suggested[i]), int(col.sum()), int(y[col].sum()))
            )
        else:
            weights.append(RuleWeight(r.name, r.points, None, 0, 0))
    return Suggestion(
        rules=tuple(weights),
        leads=len(history),
        conversions=int(y.sum()),
        points_per_logodds=round(1 / scale, 2),
        auc_current=_auc(current, y),
        auc_suggested=_auc(hits @ suggested, y),
        cv_auc_current=_auc(cv_current[scored], y[scored]),
        cv_auc_suggested=_auc(cv_suggested[scored], y[scored]),
        cv_folds_skipped=skipped,
    )


_POINTS = re.compile(r"(points:\s*)(-?\d+(?:\.\d+)?)")


def _fmt(points: float) -> str:
    return str(int(points)) if float(points).is_integer() else f"{points:g}"


def apply_points(text: str, points: dict[str, float]) -> str:
    r"""The policy file's text with ``points`` set on those fit rules' lines.

    A rule is found by ``name: <rule>`` on a line of the ``fit:`` list (the flow style the
    default policy uses); every other line is kept byte for byte.

    Example:
        >>> apply_points("scoring:\n  fit:\n    - {name: a, points: 25}\n", {"a": 31.0})
        'scoring:\n  fit:\n    - {name: a, points: 31}\n'
    """
    out = []
    in_fit = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.endswith(":") and not stripped.startswith(("-", "#")):
            in_fit = stripped == "fit:"
        found = re.search(r"name:\s*([\w.-]+)", line) if in_fit else None
        if found and found.group(1) in points:
            line = _POINTS.sub(rf"\g<1>{_fmt(points[found.group(1)])}", line, count=1)
        out.append(line)
    return "".join(out)


def yaml_diff(text: str, suggestion: Suggestion, name: str = "default.yaml") -> str:
    r"""A unified diff of the policy file with the suggested fit points (:func:`apply_points`).

    Example:
        >>> text = "scoring:\n  fit:\n    - {name: a, field: seniority, points: 25}\n"
        >>> s = Suggestion((RuleWeight("a", 25, 31, 9, 3),), 9, 3, 33.3, None, None, None, None)
        >>> yaml_diff(text, s).splitlines()[-1]
        '+    - {name: a, field: seniority, points: 31}'
    """
    new = apply_points(text, suggestion.points())
    return "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{name}", f"b/{name}"
        )
    )


__all__ = [
    "FitError",
    "LabelledLead",
    "RuleWeight",
    "Suggestion",
    "apply_points",
    "fit_logistic",
    "suggest_fit_weights",
    "yaml_diff",
]
