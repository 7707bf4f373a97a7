"""AUC of the ground truth, and its JSON round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.demo.simulator.generator import SimConfig, Simulation
from leadflow.demo.simulator.truth import (
    TruthError,
    auc,
    best_possible_auc,
    read_truth,
    write_truth,
)


def brute_force_auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@given(
    st.lists(
        st.tuples(st.integers(0, 20).map(lambda i: i / 20), st.booleans()), min_size=2, max_size=60
    )
)
def test_auc_matches_pairwise_counting(pairs: list[tuple[float, bool]]) -> None:
    scores = [s for s, _ in pairs]
    labels = [y for _, y in pairs]
    if all(labels) or not any(labels):
        with pytest.raises(TruthError):
            auc(scores, labels)
        return
    assert auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels))


def test_truth_round_trips_through_json(tmp_path: Path) -> None:
    truth = Simulation(SimConfig(people=400, days=90, seed=8)).ground_truth()
    path = tmp_path / "truth.json"
    write_truth(path, truth)
    assert read_truth(path) == truth
    assert best_possible_auc(read_truth(path)) == best_possible_auc(truth)
