"""Ground truth of a simulation: the best ranking any lead-scoring model could achieve.

Every simulated lead has a TRUE propensity (the probability that sales accepts them) from
which the outcome was drawn. Ranking leads by that propensity is the best possible model,
so its ROC AUC against the observed outcomes is the ceiling the demo compares the online
model and the rule score with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from leadflow.demo.simulator.generator import LeadTruth
from leadflow.processors.errors import LeadflowError


class TruthError(LeadflowError):
    """AUC is undefined: the outcomes are all positive or all negative."""


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties count one half).

    Example:
        >>> auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
        0.75
        >>> auc([0.5, 0.5], [False, True])
        0.5
    """
    if len(scores) != len(labels):
        raise TruthError(f"{len(scores)} scores but {len(labels)} labels")
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise TruthError(f"AUC needs both outcomes ({positives} positive, {negatives} negative)")
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: pair[0])
    rank_sum = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2  # ranks i+1..j share their mean
        rank_sum += mid_rank * sum(1 for _, label in ranked[i:j] if label)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def best_possible_auc(truth: Mapping[str, LeadTruth]) -> float:
    """AUC of the true propensity against the observed conversion (accepted by sales).

    Raises:
        TruthError: no lead converted, or every lead did.
    """
    leads = list(truth.values())
    return auc([t.propensity for t in leads], [t.converted for t in leads])


def write_truth(path: Path, truth: Mapping[str, LeadTruth]) -> None:
    """Write ``{"best_possible_auc": ..., "leads": {lead_id: {...}}}`` as JSON."""
    try:
        ceiling: float | None = best_possible_auc(truth)
    except TruthError:
        ceiling = None
    document = {
        "best_possible_auc": ceiling,
        "leads": {lead_id: t.as_dict() for lead_id, t in sorted(truth.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")


def read_truth(path: Path) -> dict[str, LeadTruth]:
    """Read what :func:`write_truth` wrote (the demo reads it back after sending)."""
    document = json.loads(path.read_text())
    return {lead_id: LeadTruth(**fields) for lead_id, fields in document["leads"].items()}
