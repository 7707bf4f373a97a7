"""The data-driven attribution model: a first-order Markov chain and its removal effects.

Journeys are channel paths that either end in a conversion or do not. Consecutive repeats
of a channel are collapsed (``a, a, b`` is ``a -> b``): staying on a channel is not a
transition, and collapsing keeps the chain free of self-loops. From the paths we count
transitions ``start -> c1 -> ... -> conv | null`` and get transition probabilities; the
probability of conversion from ``start`` is the absorbing probability of ``conv``.

The removal effect of a channel is the share of conversion probability lost when that
channel is removed (every transition into it goes to ``null`` instead)::

    RE(c) = 1 - P(conv without c) / P(conv)

Credit: each conversion's weight 1 is split among the channels on *its own* path in
proportion to their removal effects, and a channel's part is split evenly over that
channel's touches on the path. So weights sum to 1 per conversion (like every other
model) and a channel is credited only for conversions it took part in.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from leadflow.processors.errors import LeadflowError

START = "(start)"
CONV = "(conversion)"
NULL = "(null)"


class MarkovError(LeadflowError):
    """The journeys cannot define a chain (no conversions at all)."""


@dataclass(frozen=True, slots=True)
class PathCount:
    """How many journeys followed ``path`` and how many of them converted."""

    path: tuple[str, ...]
    conversions: int
    non_conversions: int


def collapse(path: Sequence[str]) -> tuple[str, ...]:
    """Drop consecutive repeats.

    Example:
        >>> collapse(["a", "a", "b", "a"])
        ('a', 'b', 'a')
    """
    out: list[str] = []
    for channel in path:
        if not out or out[-1] != channel:
            out.append(channel)
    return tuple(out)


def transition_counts(paths: Iterable[PathCount]) -> dict[str, dict[str, int]]:
    """``{from: {to: journeys}}`` over ``start``, the channels, ``conv`` and ``null``."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for pc in paths:
        states = collapse(pc.path)
        if not states:
            continue
        for end, weight in ((CONV, pc.conversions), (NULL, pc.non_conversions)):
            if weight <= 0:
                continue
            chain = (START, *states, end)
            for a, b in itertools.pairwise(chain):
                counts[a][b] += weight
    return {a: dict(bs) for a, bs in counts.items()}


def conversion_probability(
    counts: Mapping[str, Mapping[str, int]], removed: str | None = None
) -> float:
    """P(reach ``conv`` from ``start``), with ``removed`` sending its inflow to ``null``.

    Solves ``p(s) = sum_t P(s -> t) p(t)`` with ``p(conv) = 1``, ``p(null) = 0`` by
    Gaussian elimination (the chain may loop: a -> b -> a).

    Example:
        >>> counts = transition_counts([PathCount(("a",), 1, 1)])
        >>> conversion_probability(counts)
        0.5
        >>> conversion_probability(counts, removed="a")
        0.0
    """
    states = sorted(s for s in counts if s != removed)
    index = {s: i for i, s in enumerate(states)}
    size = len(states)
    # Row i: p_i - sum_j P(i->j) p_j = P(i->conv)
    matrix = [[0.0] * (size + 1) for _ in range(size)]
    for s in states:
        i = index[s]
        matrix[i][i] = 1.0
        total = sum(counts[s].values())
        for t, n in counts[s].items():
            prob = n / total
            if t == CONV:
                matrix[i][size] += prob
            elif t in (NULL, removed):
                continue
            else:
                matrix[i][index[t]] -= prob
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(matrix[r][col]))
        matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
        lead = matrix[col][col]
        if lead == 0:
            continue
        matrix[col] = [v / lead for v in matrix[col]]
        for r in range(size):
            if r != col and matrix[r][col] != 0:
                factor = matrix[r][col]
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[col], strict=True)]
    return matrix[index[START]][size] if START in index else 0.0


def removal_effects(paths: Iterable[PathCount]) -> dict[str, float]:
    """``{channel: removal effect}`` (0..1) from journey counts.

    Raises:
        MarkovError: no journey converted, so there is nothing to attribute.

    Example (worked by hand in tests/unit/sinks/test_markov.py):
        >>> effects = removal_effects([PathCount(("a", "b"), 1, 0), PathCount(("a",), 0, 1),
        ...                            PathCount(("b",), 1, 0)])
        >>> {k: round(v, 6) for k, v in sorted(effects.items())}
        {'a': 0.5, 'b': 1.0}
    """
    counts = transition_counts(list(paths))
    base = conversion_probability(counts)
    if base <= 0:
        raise MarkovError("no journey converted: the Markov model has nothing to attribute")
    channels = sorted(s for s in counts if s not in (START, CONV, NULL))
    return {c: max(0.0, 1 - conversion_probability(counts, removed=c) / base) for c in channels}


def path_weights(channels: Sequence[str], effects: Mapping[str, float]) -> list[float]:
    """Weights of one converting path's touches (in order); they sum to 1.

    Example:
        >>> path_weights(["a", "b", "a"], {"a": 0.5, "b": 1.0})
        [0.16666666666666666, 0.6666666666666666, 0.16666666666666666]
    """
    present = set(channels)
    total = sum(effects.get(c, 0.0) for c in present)
    if total <= 0:  # no channel on the path is in the chain: fall back to linear
        return [1 / len(channels)] * len(channels)
    touches = {c: channels.count(c) for c in present}
    return [effects.get(c, 0.0) / total / touches[c] for c in channels]
