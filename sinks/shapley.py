"""Shapley-value attribution over channel sets, computed exactly for every journey at once.

The game (the counterfactual conversion-probability game of Google's data-driven attribution
and of fractribution, which approximates it with leave-one-out marginals): the value of a
set of channels ``T`` is the conversion rate of the journeys whose distinct channels are
exactly ``T``::

    v(T) = conversions(T) / (conversions(T) + non_conversions(T)),   v(T) = 0 if unseen

A converting journey with channel set ``S`` is credited by the Shapley values of the game
restricted to ``S`` (Shapley 1953)::

    phi_c(S) = sum over T in S without c of |T|! (|S| - |T| - 1)! / |S|! (v(T + c) - v(T))

which add up to ``v(S)`` (efficiency), so the journey's conversion is split by
``phi_c(S) / v(S)`` and every conversion is credited exactly once. A channel whose presence
lowers the conversion rate can get a negative share; the shares are not floored (flooring
would break efficiency).

Exactly, for all sets at once: with the Harsanyi dividends ``d = Moebius(v)``,
``phi_c(S) = sum over U in S containing c of d(U) / |U|``, a subset-sum (zeta) transform
per channel: ``O(P^2 2^P)`` for ``P`` players (16 players: ~20 ms). With more players than
:data:`MAX_PLAYERS`, the ``MAX_PLAYERS - 1`` channels in the most converting journeys keep
their identity and the rest play as one channel, :data:`OTHER` (the documented fallback).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_PLAYERS = 16
OTHER = "(other)"


@dataclass(frozen=True, slots=True)
class SetCount:
    """Journeys with one channel set: converted, not converted, and the conversions' value."""

    conversions: float
    non_conversions: float
    value: float = 0.0


@dataclass(frozen=True, slots=True)
class ShapleyCredit:
    """``credit``: ``{channel: (conversions, value)}``; ``pooled``: channels played as OTHER."""

    credit: dict[Any, tuple[float, float]]
    pooled: tuple[Any, ...]


def shapley_credit(
    learned: Mapping[frozenset[Any], SetCount],
    credited: Mapping[frozenset[Any], SetCount] | None = None,
    *,
    max_players: int = MAX_PLAYERS,
    other: Hashable = OTHER,
) -> ShapleyCredit:
    """Credit the converting journeys of ``credited`` with the game learnt from ``learned``.

    Args:
        learned: journeys per channel set, converting and not (the game's data).
        credited: the conversions to credit, per channel set (default: those of
            ``learned``). A report whose learning window is wider than its period passes
            the period's converting sets here.
        max_players: above this many channels, the fallback pools the least converting.
        other: the name of the pooled channel.

    Example (two channels, worked by hand in tests/unit/sinks/test_shapley.py):
        >>> sets = {frozenset("a"): SetCount(1, 3), frozenset("ab"): SetCount(3, 1, 30.0)}
        >>> sorted(shapley_credit(sets).credit.items())
        [('a', (3.0, 20.0)), ('b', (1.0, 10.0))]
    """
    credited = learned if credited is None else credited
    players, pooled = _players(learned, credited, max_players)
    rename = {c: (c if c in players else other) for s in (*learned, *credited) for c in s}
    order = sorted({rename[c] for c in rename}, key=repr)
    bit = {c: 1 << i for i, c in enumerate(order)}
    n = len(order)
    learned_m = _by_mask(learned, rename, bit)
    credited_m = _by_mask(credited, rename, bit)
    size = 1 << n
    conv = np.zeros(size)
    total = np.zeros(size)
    for mask, sc in learned_m.items():
        conv[mask] += sc.conversions
        total[mask] += sc.conversions + sc.non_conversions
    v = np.divide(conv, total, out=np.zeros(size), where=total > 0)
    phi = _restricted_shapley(v, n)
    credit = {c: [0.0, 0.0] for c in order}
    for mask, sc in credited_m.items():
        if sc.conversions <= 0 and sc.value == 0:
            continue
        members = [c for c in order if mask & bit[c]]
        if v[mask] > 0:
            shares = [float(phi[order.index(c), mask] / v[mask]) for c in members]
        else:  # a set never seen converting while learning: nothing to tell channels apart
            shares = [1.0 / len(members)] * len(members)
        for c, share in zip(members, shares, strict=True):
            credit[c][0] += sc.conversions * share
            credit[c][1] += sc.value * share
    return ShapleyCredit({c: (a, b) for c, (a, b) in credit.items()}, pooled)


def _players(
    learned: Mapping[frozenset[Any], SetCount],
    credited: Mapping[frozenset[Any], SetCount],
    max_players: int,
) -> tuple[set[Any], tuple[Any, ...]]:
    everyone = {c for s in (*learned, *credited) for c in s}
    if len(everyone) <= max_players:
        return everyone, ()
    converting: dict[Any, float] = defaultdict(float)
    for s, sc in learned.items():
        for c in s:
            converting[c] += sc.conversions
    ranked = sorted(everyone, key=lambda c: (-converting[c], repr(c)))
    keep = set(ranked[: max_players - 1])
    return keep, tuple(sorted(everyone - keep, key=repr))


def _by_mask(
    sets: Mapping[frozenset[Any], SetCount], rename: Mapping[Any, Any], bit: Mapping[Any, int]
) -> dict[int, SetCount]:
    out: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for s, sc in sets.items():
        mask = 0
        for c in {rename[x] for x in s}:
            mask |= bit[c]
        acc = out[mask]
        acc[0] += sc.conversions
        acc[1] += sc.non_conversions
        acc[2] += sc.value
    return {m: SetCount(a, b, c) for m, (a, b, c) in out.items()}


def _restricted_shapley(v: Any, n: int) -> Any:
    """``phi[j, S]``: Shapley value of player ``j`` in the game ``v`` restricted to ``S``.

    Moebius transform to the dividends, divide each by its coalition size, then for each
    player sum the dividends of the coalitions that contain it within ``S`` (zeta transform).
    """
    dividends = np.array(v, dtype=float)
    for i in range(n):
        pairs = dividends.reshape(-1, 2, 1 << i)  # [.., without bit i / with bit i, ..]
        pairs[:, 1, :] -= pairs[:, 0, :]
    masks = np.arange(1 << n)
    sizes = np.zeros(1 << n)
    for i in range(n):
        sizes += (masks >> i) & 1
    per_member = np.divide(dividends, sizes, out=np.zeros(1 << n), where=sizes > 0)
    phi = np.where(((masks[None, :] >> np.arange(n)[:, None]) & 1) == 1, per_member, 0.0)
    for i in range(n):
        per_player = phi.reshape(n, -1, 2, 1 << i)
        per_player[:, :, 1, :] += per_player[:, :, 0, :]
    return phi


def sets_of(
    paths: Iterable[tuple[Iterable[Any], float, float, float]],
) -> dict[frozenset[Any], SetCount]:
    """Journeys ``(channels, conversions, non_conversions, value)`` grouped by channel set.

    Example:
        >>> sets_of([(["a", "b", "a"], 1, 0, 5.0), (["b", "a"], 0, 2, 0.0)])
        {frozenset({'a', 'b'}): SetCount(conversions=1.0, non_conversions=2.0, value=5.0)}
    """
    out: dict[frozenset[Any], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for channels, conversions, non_conversions, value in paths:
        acc = out[frozenset(channels)]
        acc[0] += conversions
        acc[1] += non_conversions
        acc[2] += value
    return {s: SetCount(a, b, c) for s, (a, b, c) in out.items()}
