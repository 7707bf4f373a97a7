"""The model kinds ``leadflow model-eval`` compares: each learns, scores and snapshots."""

import random

import pytest

from leadflow.processors.errors import LeadflowError
from leadflow.processors.model import DEFAULT_KIND, MODEL_KINDS, ScoreModel
from leadflow.processors.policy_load import load_default_policy

KEY = b"k" * 32
P = load_default_policy()


def leads(n: int, seed: int) -> list[tuple[dict[str, float], bool]]:
    """Converting leads are fit AND engaged; either alone is not enough."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        fit, eng = rnd.uniform(0, 1), rnd.uniform(0, 1)
        label = fit > 0.5 and eng > 0.5
        out.append(({"rules.fit": fit, "rules.engagement": eng, "freq.pricing": eng * 2}, label))
    return out


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_every_kind_learns_to_rank_and_survives_a_snapshot(kind: str) -> None:
    m = ScoreModel(P, "ws", kind=kind)
    for x, y in leads(600, 1):
        m.learn(x, y)
    test = leads(200, 2)
    hot = [m.predict(x) for x, y in test if y]
    cold = [m.predict(x) for x, y in test if not y]
    pairs = [(h, c) for h in hot for c in cold]
    assert sum(h > c for h, c in pairs) / len(pairs) > 0.8
    restored = ScoreModel.restore(m.snapshot(KEY), KEY)
    assert restored.version == f"{kind}@600"
    assert restored.predict(test[0][0]) == m.predict(test[0][0])


def test_the_linear_kinds_explain_their_score_the_forest_does_not() -> None:
    x, _ = leads(1, 3)[0]
    for kind in sorted(MODEL_KINDS):
        m = ScoreModel(P, "ws", kind=kind)
        for features, label in leads(200, 4):
            m.learn(features, label)
        assert bool(m.top_features(x)) == (kind in ("linear", "averaged")), kind


def test_unknown_kind_is_refused_and_default_is_known() -> None:
    assert DEFAULT_KIND in MODEL_KINDS
    with pytest.raises(LeadflowError):
        ScoreModel(kind="deep-net")
