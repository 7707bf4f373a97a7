"""The Markov removal-effect model on chains solved by hand."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.sinks import markov
from leadflow.sinks.markov import (
    Effects,
    MarkovError,
    PathCount,
    chain_of,
    collapse,
    credit,
    path_weights,
    removal_effects,
    states,
)


def test_three_journeys_by_hand() -> None:
    # a->b converts, a alone does not, b alone converts.
    # P(start->a)=2/3, P(start->b)=1/3, P(a->b)=P(a->null)=1/2, P(b->conv)=1.
    # P(conv) = 2/3*1/2 + 1/3 = 2/3. Without a: 1/3 -> RE(a) = 1/2. Without b: 0 -> RE(b) = 1.
    paths = [PathCount(("a", "b"), 1, 0), PathCount(("a",), 0, 1), PathCount(("b",), 1, 0)]
    effects = removal_effects(chain_of(paths))
    assert effects.probability == pytest.approx(2 / 3)
    assert effects.conversion == pytest.approx({"a": 0.5, "b": 1.0})
    # Two conversions shared 0.5 : 1.
    assert credit(effects) == {"a": (pytest.approx(2 / 3), 0.0), "b": (pytest.approx(4 / 3), 0.0)}
    # Path a->b: a gets 0.5/1.5, b gets 1/1.5 (the per-path split of markov_path).
    assert path_weights(["a", "b"], {"a": 0.5, "b": 1.0}) == pytest.approx([1 / 3, 2 / 3])


def test_loops_are_solved_exactly() -> None:
    # d -> e -> d -> conv, d -> null (twice), o -> ps -> d ... (the scenario of the
    # integration tests): P(d) = 1/3 P(e) + 1/3 and P(e) = P(d), so P(d) = 1/2.
    paths = [
        PathCount(("o", "ps", "d", "e", "d"), 1, 0),
        PathCount(("s", "s"), 0, 1),
        PathCount(("d",), 0, 1),
    ]
    effects = removal_effects(chain_of(paths))
    assert effects.conversion == pytest.approx(
        {"o": 0.5, "ps": 0.5, "d": 1.0, "e": 1 / 3, "s": 0.0}
    )
    weights = path_weights(["o", "ps", "d", "e", "d"], effects.conversion)
    assert weights == pytest.approx([3 / 14, 3 / 14, 3 / 14, 1 / 7, 3 / 14])


def test_value_removal_effects_follow_the_last_state() -> None:
    # (a) converts worth 100, (b) converts worth 0, (a, b) does not convert.
    # P(b) = 1/2, P(a) = 1/2 + 1/2 P(b) = 3/4, P(start) = 2/3 * 3/4 + 1/3 * 1/2 = 2/3.
    # Value per journey leaving: a 100/2 = 50, b 0: V(a) = 50, V(start) = 100/3.
    # Without a: P = 1/6 -> RE 3/4; V = 0 -> VRE 1. Without b: P(a) = 1/2, P = 1/3 -> RE 1/2;
    # V unchanged -> VRE 0.
    paths = [PathCount(("a",), 1, 0, 100.0), PathCount(("b",), 1, 0), PathCount(("a", "b"), 0, 1)]
    effects = removal_effects(chain_of(paths))
    assert effects.conversion == pytest.approx({"a": 0.75, "b": 0.5})
    assert effects.value == pytest.approx({"a": 1.0, "b": 0.0})
    shares = credit(effects)
    assert shares["a"] == (pytest.approx(1.2), pytest.approx(100.0))
    assert shares["b"] == (pytest.approx(0.8), pytest.approx(0.0))


def test_second_order_remembers_where_a_journey_came_from() -> None:
    # a, b converts; c, b does not. First order: b's outcome is 1/2 whoever came before, so
    # removing c also halves the conversions: RE a = c = 1/2, b = 1 -> a 1/4, b 1/2, c 1/4.
    # Second order: the states (a, b) and (c, b) differ; only (a, b) converts, so removing
    # c changes nothing: RE a = 1, b = 1, c = 0 -> a 1/2, b 1/2, c 0.
    paths = [PathCount(("a", "b"), 1, 0), PathCount(("c", "b"), 0, 1)]
    first = credit(removal_effects(chain_of(paths, 1)))
    assert {k: v[0] for k, v in first.items()} == pytest.approx({"a": 0.25, "b": 0.5, "c": 0.25})
    second = credit(removal_effects(chain_of(paths, 2)))
    assert {k: v[0] for k, v in second.items()} == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})


def test_states_follow_channelattribution() -> None:
    # Windows over the raw path (repeats kept), equal neighbours merged, short paths whole.
    assert states(["a", "a", "b"], 1) == (("a",), ("b",))
    assert states(["a", "a", "b"], 2) == (("a", "a"), ("a", "b"))
    assert states(["a", "a", "a", "b"], 2) == (("a", "a"), ("a", "b"))
    assert states(["a", "b"], 3) == (("a", "b"),)
    assert states(["a", "b", "c", "d", "e"], 4) == (("a", "b", "c", "d"), ("b", "c", "d", "e"))
    assert states([], 2) == ()
    with pytest.raises(MarkovError):
        states(["a"], 5)


def test_the_iterative_solve_gives_the_direct_solution(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    channels = "abcdefgh"
    paths = [
        PathCount(tuple(rng.choice(channels) for _ in range(rng.randint(1, 9))),
                  rng.randint(0, 3), rng.randint(0, 5), rng.random() * 100)
        for _ in range(400)
    ]  # fmt: skip
    chain = chain_of(paths, 3)
    assert len(chain.leaving) > 300
    direct = removal_effects(chain)
    monkeypatch.setattr(markov, "DIRECT_STATES", 0)
    iterative = removal_effects(chain)
    assert iterative.conversion == pytest.approx(direct.conversion, rel=1e-10, abs=1e-12)
    assert iterative.value == pytest.approx(direct.value, rel=1e-10, abs=1e-12)


def test_no_conversion_is_an_error() -> None:
    with pytest.raises(MarkovError):
        removal_effects(chain_of([PathCount(("a",), 0, 3)]))


def test_credit_takes_other_totals() -> None:
    effects = Effects({"a": 0.5, "b": 1.5}, {"a": 1.0, "b": 0.0}, 0.5, 3.0, 9.0)
    assert credit(effects, 10.0, 4.0) == {"a": (2.5, 4.0), "b": (7.5, 0.0)}


def test_collapse_keeps_order() -> None:
    assert collapse(["a", "a", "b", "b", "a"]) == ("a", "b", "a")
    assert collapse([]) == ()


channels = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=8)


@given(
    st.lists(st.tuples(channels, st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=8),
    channels,
    st.sampled_from(markov.ORDERS),
)
def test_effects_are_shares_and_credit_adds_up(
    raw: list[tuple[list[str], int, int]], path: list[str], order: int
) -> None:
    paths = [PathCount(tuple(p), c, n, float(c)) for p, c, n in raw] + [
        PathCount(tuple(path), 1, 0)
    ]
    effects = removal_effects(chain_of(paths, order))
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in effects.conversion.values())
    total = sum(c for _, c, _ in raw) + 1
    assert sum(c for c, _ in credit(effects).values()) == pytest.approx(total)
    assert sum(path_weights(path, effects.conversion)) == pytest.approx(1.0)
