"""The workspace model: prior, online learning, health, explanations and signed snapshots."""

import math
import random

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.processors.events import Kind
from leadflow.processors.features import lead_features
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import LeadState
from leadflow.processors.model import (
    ModelRegistry,
    PriorLogit,
    ScoreModel,
    SnapshotError,
    auc_exact,
    ece,
    prior_logit,
)
from leadflow.processors.policy import ModelPolicy
from leadflow.processors.policy_load import load_default_policy
from leadflow.processors.scoring import DAY_MS

from ._factory import ICP_FORM, ev

KEY = b"k" * 32
P = load_default_policy()


def example(rnd: random.Random) -> tuple[dict[str, float], bool]:
    label = rnd.random() < 0.4
    x = {
        "rules.fit": max(0.0, rnd.gauss(0.6 if label else 0.3, 0.1)),
        "rules.engagement": max(0.0, rnd.gauss(0.5 if label else 0.2, 0.15)),
    }
    return x, label


def trained(n: int = 300, seed: int = 7, workspace: str = "ws") -> ScoreModel:
    rnd = random.Random(seed)
    m = ScoreModel(P, workspace)
    for _ in range(n):
        m.learn(*example(rnd))
    return m


def test_an_untrained_model_is_the_prior_and_learns_prequentially() -> None:
    m = ScoreModel(P, "ws")
    x = {"rules.fit": 0.5, "rules.engagement": 0.2}
    prior = prior_logit(x, P.model)
    assert m.predict(x) == pytest.approx(1 / (1 + 2.718281828459045**-prior))
    p = m.learn(x, True)
    assert p == pytest.approx(m.window[0][0])  # scored by the untrained model, then learned
    assert m.n_learned == 1
    assert m.version == "linear@1"
    assert m.health().window_auc is None  # one class so far: not yet measurable
    assert trained().health().window_auc is not None


def test_auc_before_both_classes_is_not_yet_measurable_not_minus_zero() -> None:
    """Regression: the prequential AUC logged -0.0 before both classes were seen."""
    m = ScoreModel(P, "ws")
    for _ in range(5):
        m.learn({"rules.fit": 0.1}, False)
    health = m.health()
    assert health.window_auc is None
    assert health.as_log()["window_auc"] == "not yet measurable"


def test_learning_from_one_class_is_a_warning() -> None:
    """Regression: nothing said the model was learning from negatives only."""
    m = ScoreModel(P, "ws")
    for i in range(40):
        m.learn({"rules.fit": i / 40}, False)
    assert "one_class" in m.health().warnings
    assert "few_labels" in m.health().warnings
    balanced = trained(400)
    assert balanced.health().warnings == ()
    assert 0 < (balanced.health().window_positive_rate or 0) < 1


def test_one_hot_features_carry_weight() -> None:
    """Regression: a standard scaler scaled always-1 one-hots to 0, so they learned nothing."""
    m = ScoreModel(P, "ws")
    for _ in range(150):
        m.learn({"rules.fit": 0.3, "seniority=vp": 1.0}, True)
        m.learn({"rules.fit": 0.3, "seniority=individual": 1.0}, False)
    assert isinstance(m.estimator, PriorLogit)
    w = m.estimator.weights
    assert w["seniority=vp"] - w["seniority=individual"] > 1.0
    vp, ic = (
        {"rules.fit": 0.3, "seniority=vp": 1.0},
        {"rules.fit": 0.3, "seniority=individual": 1.0},
    )
    assert m.predict(vp) > m.predict(ic) + 0.2
    top = m.top_features({"rules.fit": 0.3, "seniority=vp": 1.0}, 3)
    assert "seniority=vp" in {r.rule for r in top}


def test_snapshot_round_trip_predicts_identically_and_names_its_workspace() -> None:
    m = trained(workspace="acme")
    data = m.snapshot(KEY, trained_through=1234)
    restored = ScoreModel.restore(data, KEY)
    x = {"rules.fit": 0.55, "rules.engagement": 0.4}
    assert restored.predict(x) == m.predict(x)
    assert restored.version == m.version
    assert restored.health() == m.health()
    header = ScoreModel.peek(data)
    assert (header.workspace_id, header.version, header.trained_through) == (
        "acme",
        m.version,
        1234,
    )


@pytest.mark.parametrize("position", [0, 10, 40, -1])
def test_tampered_snapshot_is_refused(position: int) -> None:
    data = bytearray(trained(20).snapshot(KEY))
    data[position] ^= 0x01
    with pytest.raises(SnapshotError):
        ScoreModel.restore(bytes(data), KEY)


def test_wrong_key_and_garbage_are_refused() -> None:
    data = trained(20).snapshot(KEY)
    with pytest.raises(SnapshotError, match="does not verify"):
        ScoreModel.restore(data, b"other-key")
    with pytest.raises(SnapshotError, match="not a leadflow"):
        ScoreModel.restore(b"\x80\x04garbage", KEY)
    with pytest.raises(SnapshotError):
        ScoreModel.peek(b"nope")


def test_top_features_are_log_odds_contributions_with_the_prior() -> None:
    m = trained()
    x = {"rules.fit": 0.9, "rules.engagement": 0.8}
    top = m.top_features(x, 5)
    assert isinstance(m.estimator, PriorLogit)
    expected = {k: round(m.estimator.weights.get(k, 0.0) * v, 4) for k, v in x.items()}
    expected["prior"] = round(prior_logit(x, P.model) + m.estimator.bias, 4)
    assert {r.rule: r.points for r in top} == {k: v for k, v in expected.items() if v != 0}


def test_workspaces_learn_apart() -> None:
    registry = ModelRegistry(lambda _ws: P)
    rnd = random.Random(1)
    for _ in range(100):
        registry.learn("a", *example(rnd))
    assert registry.get("a").n_learned == 100
    assert registry.get("b").n_learned == 0
    x = {"rules.fit": 0.9, "rules.engagement": 0.8}
    assert registry.get("b").predict(x) == ScoreModel(P, "b").predict(x)  # still the prior


def test_features_of_a_lead() -> None:
    s, _ = lead_step(
        None, ev("v", Kind.VISIT, 0, lead="L", path="/pricing", channel="paid_search"), P, None
    )
    s, _ = lead_step(s, ev("f", Kind.FORM_SUBMITTED, 1, lead="L", **ICP_FORM), P, None)
    f = lead_features(s, s.watermark, P)
    assert isinstance(s, LeadState)
    assert f["channel=paid_search"] == 1.0
    assert f["stage=lead"] == 1.0
    assert f["seniority=vp"] == 1.0
    assert f["rules.fit"] == round(s.fit / 100, 4)
    assert 0.99 < f["recent.pricing_page"] <= 1.0
    assert f["email=business"] == 1.0
    # Lead age: log(1 + days since the first stage) / 5, growing with event time only.
    first = s.history[0].entered_at
    later = lead_features(s, first + 29 * DAY_MS, P)
    assert later["age"] == round(math.log1p(29) / 5, 4)
    assert f["age"] < later["age"]


def test_ece_and_auc_helpers() -> None:
    assert ece([(0.9, True)] * 9 + [(0.9, False)]) == pytest.approx(0.0)
    assert ece([(0.9, False)] * 10) == pytest.approx(0.9)
    assert auc_exact([(0.2, False), (0.8, True)]) == 1.0


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.booleans()), min_size=1, max_size=40)
)
def test_learning_is_deterministic_and_bounded(rows: list[tuple[float, float, bool]]) -> None:
    a, b = PriorLogit(ModelPolicy()), PriorLogit(ModelPolicy())
    for fit, eng, label in rows:
        x = {"rules.fit": fit, "rules.engagement": eng}
        a.learn(x, label)
        b.learn(x, label)
        assert 0.0 <= a.predict_proba(x) <= 1.0
    assert a.weights == b.weights
    assert a.bias == b.bias


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.booleans()), min_size=1, max_size=60),
    st.integers(0, 20),
    st.integers(1, 15),
)
@hypothesis.example(rows=[(0.0, 0.0, False), (0.0, 1.0, False)], after=0, window=2)
def test_served_weights_are_an_average_of_the_iterates(
    rows: list[tuple[float, float, bool]], after: int, window: int
) -> None:
    """Up to ``average_after`` examples the model serves its iterate; after, every served
    weight lies between the smallest and largest value its iterate took since (a mean of
    them, equal-weight and then exponential), and the scores use the served weights."""
    m = PriorLogit(ModelPolicy(), average_after=after, average_window=window)
    # A feature first seen after averaging began had the iterate 0.0 before it (a zero
    # input takes no step), so the iterates are compared with absent keys as 0.0.
    iterates: list[dict[str, float]] = []
    for n, (fit, eng, label) in enumerate(rows, start=1):
        x = {"rules.fit": fit, "rules.engagement": eng, "one": 1.0}
        m.learn(x, label)
        if n > after:
            iterates.append({"": m.bias, **m.weights})
        if n <= after:
            assert (m.served_bias, m.served) == (m.bias, m.weights)
        else:
            for k, served in (("", m.served_bias), *m.served.items()):
                values = [it.get(k, 0.0) for it in iterates]
                assert min(values) - 1e-12 <= served <= max(values) + 1e-12
        z = prior_logit(x, m.prior) + m.served_bias
        z += math.fsum(m.served.get(k, 0.0) * v for k, v in x.items())
        assert m.predict_proba(x) == pytest.approx(1 / (1 + math.exp(-z)))
        assert sum(points for _, points in m.contributions(x)) == pytest.approx(z)


def test_averaging_is_an_equal_weight_mean_then_exponential() -> None:
    m = PriorLogit(ModelPolicy(), average_after=2, average_window=3)
    x = {"one": 1.0}
    iterates: list[float] = []
    for label in (True, False, True, True, False, True, True):
        m.learn(x, label)
        iterates.append(m.weights["one"])
    # Examples 3 and 4: the mean of the iterates since example 2.
    mean = (iterates[2] + iterates[3]) / 2
    # 5, 6, 7: the mean spans 3 iterates, then each new one moves it by 1/3.
    expected = mean + (iterates[4] - mean) / 3
    expected += (iterates[5] - expected) / 3
    expected += (iterates[6] - expected) / 3
    assert m.served["one"] == pytest.approx(expected)


def test_the_averaged_kind_ranks_snapshots_and_explains_with_its_served_weights() -> None:
    rnd = random.Random(3)
    m = ScoreModel(P, "ws", kind="averaged")
    for _ in range(600):
        m.learn(*example(rnd))
    est = m.estimator
    assert isinstance(est, PriorLogit)
    assert est.average_after == 200
    assert m.version == "averaged@600"
    assert est.served != est.weights  # it serves the mean, not the last iterate
    test = [example(rnd) for _ in range(500)]
    assert (auc_exact([(m.predict(x), y) for x, y in test]) or 0) > 0.9
    back = ScoreModel.restore(m.snapshot(KEY), KEY)
    assert [back.predict(x) for x, _ in test] == [m.predict(x) for x, _ in test]
    x = test[0][0]
    total = sum(points for _, points in est.contributions(x))
    assert m.predict(x) == pytest.approx(1 / (1 + math.exp(-total)))


def test_a_snapshot_pickled_before_averaging_keeps_serving_its_iterate() -> None:
    m = ScoreModel(P, "ws")
    rnd = random.Random(1)
    for _ in range(50):
        m.learn(*example(rnd))
    est = m.estimator
    assert isinstance(est, PriorLogit)
    old = {k: v for k, v in est.__dict__.items() if k not in ("n", "served", "served_bias")}
    old.pop("average_after")
    old.pop("average_window")
    restored = PriorLogit.__new__(PriorLogit)
    restored.__setstate__(old)
    x, _ = example(rnd)
    z = prior_logit(x, P.model) + est.bias + sum(est.weights.get(k, 0.0) * v for k, v in x.items())
    assert restored.predict_proba(x) == pytest.approx(1 / (1 + math.exp(-z)))
    restored.learn(x, True)  # and it learns on (serving its iterate)
    assert restored.served == restored.weights
