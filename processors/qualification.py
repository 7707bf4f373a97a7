"""Qualification: answers captured from forms and sales, scored against a framework.

Raw answers are stored under their original keys (so switching BANT to MEDDIC re-reads
them); the framework's ``fields`` mapping turns keys into criteria. Completeness is the
share of the framework's criteria that have a non-empty answer.
"""

from __future__ import annotations

from collections.abc import Mapping

from leadflow.processors.derived import Qualification
from leadflow.processors.policy import Framework

MAX_ANSWERS = 32
MAX_ANSWER_CHARS = 200


def merge_answers(current: Mapping[str, str], new: Mapping[str, object]) -> dict[str, str]:
    """Merge new non-empty answers over the current ones (bounded in keys and length).

    Example:
        >>> merge_answers({"budget": "50k"}, {"budget": "", "go_live": "Q3"})
        {'budget': '50k', 'go_live': 'Q3'}
    """
    out = dict(current)
    for key, value in new.items():
        text = "" if value is None else str(value).strip()
        if not text:
            continue
        if key not in out and len(out) >= MAX_ANSWERS:
            continue
        out[str(key)] = text[:MAX_ANSWER_CHARS]
    return out


def qualify(answers: Mapping[str, str], framework: Framework) -> Qualification:
    """The framework's view of the raw answers.

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> fw = load_default_policy().qualification.active
        >>> q = qualify({"annual_budget": "100k", "use_case": "churn"}, fw)
        >>> q.answers, q.completeness
        ({'budget': '100k', 'need': 'churn'}, 0.5)
    """
    by_criterion: dict[str, str] = {}
    for key in sorted(answers):
        criterion = framework.fields.get(key)
        # An answer named like the criterion beats an alias that maps to it.
        if criterion is not None and (criterion not in by_criterion or key == criterion):
            by_criterion[criterion] = answers[key]
    ordered = {c: by_criterion[c] for c in framework.criteria if c in by_criterion}
    return Qualification(
        framework=framework.name,
        answers=ordered,
        completeness=len(ordered) / len(framework.criteria),
    )
