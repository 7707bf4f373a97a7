"""Shapley attribution: hand-worked games, and the fast transform against the textbook formula."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.sinks.shapley import OTHER, SetCount, sets_of, shapley_credit


def test_two_channels_by_hand() -> None:
    # {a}: 1 of 4 convert (v = 1/4); {a, b}: 3 of 4, worth 30 (v = 3/4); {b} unseen (v = 0).
    # On {a, b}: phi_a = 1/2 (v(a) - 0) + 1/2 (v(ab) - v(b)) = 1/2; phi_b = 1/2 (0) +
    # 1/2 (v(ab) - v(a)) = 1/4; shares 2/3 and 1/3. On {a}: a takes all.
    sets = {frozenset("a"): SetCount(1, 3), frozenset("ab"): SetCount(3, 1, 30.0)}
    result = shapley_credit(sets)
    assert result.credit == {
        "a": (pytest.approx(1 + 2), pytest.approx(20.0)),
        "b": (pytest.approx(1), pytest.approx(10.0)),
    }
    assert result.pooled == ()


def test_negative_marginal_contributions_are_kept() -> None:
    # {a} converts 9 of 10, {a, b} 1 of 10: b's presence lowers the rate. On {a, b}:
    # phi_a = 1/2 (0.9) + 1/2 (0.1 - 0) = 0.5, phi_b = 1/2 (0) + 1/2 (0.1 - 0.9) = -0.4;
    # shares 5 and -4 of the one conversion of {a, b} (they still add up to 1).
    sets = {frozenset("a"): SetCount(9, 1), frozenset("ab"): SetCount(1, 9)}
    credit = shapley_credit(sets).credit
    assert credit["a"][0] == pytest.approx(9 + 5)
    assert credit["b"][0] == pytest.approx(-4)


def test_the_period_is_credited_with_the_game_of_the_learning_window() -> None:
    learned = {frozenset("a"): SetCount(1, 3), frozenset("ab"): SetCount(3, 1, 30.0)}
    period = {frozenset("ab"): SetCount(1, 0, 6.0)}
    assert shapley_credit(learned, period).credit == {
        "a": (pytest.approx(2 / 3), pytest.approx(4.0)),
        "b": (pytest.approx(1 / 3), pytest.approx(2.0)),
    }


def test_more_players_than_the_limit_pool_the_least_converting() -> None:
    sets = sets_of(
        [(["a", "b"], 5, 1, 0.0), (["a", "c"], 3, 3, 0.0), (["d"], 1, 9, 0.0), (["c"], 0, 2, 0.0)]
    )
    result = shapley_credit(sets, max_players=3)
    # Converting journeys: a 8, b 5, c 3, d 1 -> a and b stay, c and d play as OTHER.
    assert result.pooled == ("c", "d")
    assert set(result.credit) == {"a", "b", OTHER}
    assert sum(c for c, _ in result.credit.values()) == pytest.approx(9)


def _textbook(sets: dict[frozenset[str], SetCount]) -> dict[str, float]:
    """Shapley by permutations of each converting set's channels (no transforms)."""
    rate = {s: c.conversions / (c.conversions + c.non_conversions) for s, c in sets.items()}
    out: dict[str, float] = {}
    for s, counts in sets.items():
        if not counts.conversions:
            continue
        orders = list(itertools.permutations(sorted(s)))
        for channel in s:
            phi = 0.0
            for order in orders:
                before = frozenset(order[: order.index(channel)])
                phi += rate.get(before | {channel}, 0.0) - rate.get(before, 0.0)
            share = phi / len(orders) / rate[s]
            out[channel] = out.get(channel, 0.0) + counts.conversions * share
    return out


journeys = st.lists(
    st.tuples(
        st.frozensets(st.sampled_from("abcde"), min_size=1, max_size=5),
        st.integers(0, 4),
        st.integers(0, 4),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(journeys)
def test_the_transform_equals_the_textbook_formula(
    raw: list[tuple[frozenset[str], int, int]],
) -> None:
    sets = sets_of((s, c, n, 0.0) for s, c, n in raw if c + n)
    if not any(c.conversions for c in sets.values()):
        return
    fast = {k: c for k, (c, _) in shapley_credit(sets).credit.items() if c or k in _textbook(sets)}
    slow = _textbook(sets)
    assert set(slow) <= set(fast)
    for channel, value in slow.items():
        assert fast[channel] == pytest.approx(value, rel=1e-9, abs=1e-9)
    assert math.isclose(sum(fast.values()), sum(c.conversions for c in sets.values()), rel_tol=1e-9)
