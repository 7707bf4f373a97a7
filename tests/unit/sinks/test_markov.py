"""The Markov removal-effect model on examples solved by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.sinks.markov import (
    MarkovError,
    PathCount,
    collapse,
    conversion_probability,
    path_weights,
    removal_effects,
    transition_counts,
)


def test_three_journeys_by_hand() -> None:
    # a->b converts, a alone does not, b alone converts.
    # P(start->a)=2/3, P(start->b)=1/3, P(a->b)=P(a->null)=1/2, P(b->conv)=1.
    # P(conv) = 2/3*1/2 + 1/3 = 2/3. Without a: 1/3 -> RE(a) = 1/2. Without b: 0 -> RE(b) = 1.
    paths = [PathCount(("a", "b"), 1, 0), PathCount(("a",), 0, 1), PathCount(("b",), 1, 0)]
    counts = transition_counts(paths)
    assert conversion_probability(counts) == pytest.approx(2 / 3)
    assert conversion_probability(counts, removed="a") == pytest.approx(1 / 3)
    assert removal_effects(paths) == pytest.approx({"a": 0.5, "b": 1.0})
    # Path a->b: a gets 0.5/1.5, b gets 1/1.5.
    assert path_weights(["a", "b"], {"a": 0.5, "b": 1.0}) == pytest.approx([1 / 3, 2 / 3])


def test_loops_are_solved_exactly() -> None:
    # d -> e -> d -> conv, d -> null (twice), o -> ps -> d ... (the scenario of the
    # integration tests): P(d) = 1/3 P(e) + 1/3 and P(e) = P(d), so P(d) = 1/2.
    paths = [
        PathCount(("o", "ps", "d", "e", "d"), 1, 0),
        PathCount(("s", "s"), 0, 1),
        PathCount(("d",), 0, 1),
    ]
    effects = removal_effects(paths)
    assert effects == pytest.approx({"o": 0.5, "ps": 0.5, "d": 1.0, "e": 1 / 3, "s": 0.0})
    weights = path_weights(["o", "ps", "d", "e", "d"], effects)
    assert weights == pytest.approx([3 / 14, 3 / 14, 3 / 14, 1 / 7, 3 / 14])


def test_no_conversion_is_an_error() -> None:
    with pytest.raises(MarkovError):
        removal_effects([PathCount(("a",), 0, 3)])


def test_collapse_keeps_order() -> None:
    assert collapse(["a", "a", "b", "b", "a"]) == ("a", "b", "a")
    assert collapse([]) == ()


channels = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=8)


@given(
    st.lists(st.tuples(channels, st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=8),
    channels,
)
def test_weights_sum_to_one_per_conversion(
    raw: list[tuple[list[str], int, int]], path: list[str]
) -> None:
    paths = [PathCount(tuple(p), c, n) for p, c, n in raw] + [PathCount(tuple(path), 1, 0)]
    effects = removal_effects(paths)
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in effects.values())
    assert sum(path_weights(path, effects)) == pytest.approx(1.0)
