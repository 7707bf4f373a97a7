import random

import pytest

from leadflow.processors.events import Kind
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import LeadState
from leadflow.processors.model import ScoreModel, SnapshotError
from leadflow.processors.policy_load import load_default_policy

from ._factory import ICP_FORM, ev

KEY = b"k" * 32


def trained(n: int = 300, seed: int = 7) -> ScoreModel:
    rnd = random.Random(seed)
    m = ScoreModel()
    for _ in range(n):
        label = rnd.random() < 0.4
        fit = rnd.gauss(70 if label else 30, 10)
        m.learn({"fit": fit, "engagement": rnd.gauss(50 if label else 20, 15)}, label)
    return m


def test_prequential_auc_is_measured_before_learning() -> None:
    m = ScoreModel()
    x = {"fit": 1.0}
    p = m.learn(x, True)
    assert p == 0.5  # scored by the untrained model, then learned
    assert m.n_learned == 1
    assert m.version == "logreg@1"
    assert trained().auc > 0.85


def test_snapshot_round_trip_predicts_identically() -> None:
    m = trained()
    restored = ScoreModel.restore(m.snapshot(KEY), KEY)
    x = {"fit": 55.0, "engagement": 40.0}
    assert restored.predict(x) == m.predict(x)
    assert restored.version == m.version
    assert restored.auc == m.auc


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


def test_top_features_are_weight_times_scaled_value() -> None:
    m = trained()
    x = {"fit": 90.0, "engagement": 80.0}
    top = m.top_features(x, 2)
    scaled = m.pipeline["StandardScaler"].transform_one(x)
    weights = m.pipeline["LogisticRegression"].weights
    assert {r.rule: r.points for r in top} == {
        k: round(weights[k] * scaled[k], 4) for k in ("fit", "engagement")
    }
    assert all(r.points > 0 for r in top)


def test_drift_counter_moves_when_the_concept_flips() -> None:
    m = trained(1500)
    rnd = random.Random(3)
    for _ in range(1500):
        label = rnd.random() < 0.4
        m.learn(
            {
                "fit": rnd.gauss(30 if label else 70, 10),
                "engagement": rnd.gauss(20 if label else 50, 15),
            },
            label,
        )
    assert m.drift_count >= 1


def test_features_of_a_lead() -> None:
    p = load_default_policy()
    s, _ = lead_step(
        None, ev("v", Kind.VISIT, 0, lead="L", path="/pricing", channel="paid_search"), p, None
    )
    s, _ = lead_step(s, ev("f", Kind.FORM_SUBMITTED, 1, lead="L", **ICP_FORM), p, None)
    f = ScoreModel().features(s, s.watermark)
    assert isinstance(s, LeadState)
    assert f["channel=paid_search"] == 1.0
    assert f["stage=lead"] == 1.0
    assert f["seniority=vp"] == 1.0
    assert f["fit"] == s.fit
    assert 0.95 < f["n.pricing_page"] <= 1.0


def test_peek_version_reads_the_header_without_the_key() -> None:
    m = trained(30)
    data = m.snapshot(KEY)
    assert ScoreModel.peek_version(data) == "logreg@30"
    with pytest.raises(SnapshotError):
        ScoreModel.peek_version(b"nope")
    q = m.quality()
    assert q["model_version"] == "logreg@30"
    assert q["n_learned"] == 30
    assert 0.0 <= float(q["auc"]) <= 1.0


def test_model_takes_its_half_life_from_the_policy() -> None:
    p = load_default_policy()
    assert ScoreModel(p).half_life_days == p.scoring.half_life_days
    assert ScoreModel(p, half_life_days=3.0).half_life_days == 3.0
