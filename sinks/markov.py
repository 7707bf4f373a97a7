"""Markov-chain attribution: the absorbing chain of journeys, solved exactly; removal effects.

Journeys are channel paths that end in a conversion or not (null). The chain, as
ChannelAttribution builds it (Altomare & Loris; Anderl et al. 2016):

- the states of order ``k`` are the windows of ``k`` consecutive channels of a path (repeats
  kept), and a path shorter than ``k`` is one state; consecutive equal states are one state
  (for ``k = 1``: ``a, a, b`` is ``a -> b``);
- each journey walks ``start -> s1 -> ... -> sn`` and then to ``conversion`` or ``null``;
  transition probabilities are the journey counts divided by the journeys leaving a state.

The conversion probability is the probability of absorption in ``conversion`` from ``start``:
the solution ``x`` of ``(I - Q) x = b`` over the transient states, with ``Q`` the transient part
and ``b(s) = P(s -> conversion)``, read at ``start``. No simulation: ChannelAttribution
estimates the same quantity by simulating 10^5+ journeys.

Removing a channel ``c`` sends every transition into a state that contains ``c`` to null::

    RE(c) = 1 - P(conversion without c) / P(conversion)

The *value* removal effect is the same with ``b_v(s) = (conversion value of the journeys
whose last state is s) / (journeys leaving s)``: the expected value of a conversion given its
last state, as ChannelAttribution samples it. Credit (:func:`credit`)::

    conversions(c) = total conversions x RE(c) / sum(RE)
    value(c)       = total value       x VRE(c) / sum(VRE)

:func:`path_weights` keeps the model this module had before: each conversion split over its
own path's channels in proportion to their removal effects (report model ``markov_path``).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg

from leadflow.processors.errors import LeadflowError

S = TypeVar("S", bound=Hashable)
C = TypeVar("C", bound=Hashable)

ORDERS = (1, 2, 3, 4)
# Up to this many transient states a sparse LU solves each system; above it the LU's fill-in
# on order-3/4 chains (every window has many successors) costs seconds, and BiCGSTAB reaches
# the same digits in milliseconds (measured on a 4,097-state chain: 1.2-2.4 s vs 0.03 s).
DIRECT_STATES = 1000
# BiCGSTAB stops at this relative residual; the residual is then checked and the LU used
# instead if it is not met, so every answer is the linear system's solution to ~1e-12.
ITERATIVE_RTOL = 1e-13
CHECK_RTOL = 1e-10


class MarkovError(LeadflowError):
    """The journeys cannot define a chain (no conversions, or a bad order)."""


@dataclass(frozen=True, slots=True)
class PathCount:
    """How many journeys followed ``path``, how many converted, and their conversion value."""

    path: tuple[str, ...]
    conversions: int
    non_conversions: int
    value: float = 0.0


def collapse(path: Sequence[C]) -> tuple[C, ...]:
    """Drop consecutive repeats.

    Example:
        >>> collapse(["a", "a", "b", "a"])
        ('a', 'b', 'a')
    """
    out: list[C] = []
    for item in path:
        if not out or out[-1] != item:
            out.append(item)
    return tuple(out)


def states(path: Sequence[C], order: int = 1) -> tuple[tuple[C, ...], ...]:
    """The chain states a path walks through at ``order`` (windows, equal neighbours merged).

    Example:
        >>> states(["a", "a", "b"], 2)
        (('a', 'a'), ('a', 'b'))
        >>> states(["a", "a", "a", "b"], 2)
        (('a', 'a'), ('a', 'b'))
        >>> states(["a"], 2)
        (('a',),)
    """
    if order not in ORDERS:
        raise MarkovError(f"order must be one of {ORDERS}, not {order}")
    if len(path) <= order:
        windows = [tuple(path)] if path else []
    else:
        windows = [tuple(path[i : i + order]) for i in range(len(path) - order + 1)]
    return collapse(windows)


@dataclass(slots=True)
class Chain:
    """Journey counts of an absorbing chain; ``None`` is the start state.

    Attributes:
        leaving: journeys leaving each state (start included).
        moves: journeys per transition between non-absorbing states.
        conversions: journeys that converted right after each state.
        value: the conversion value of those journeys.
    """

    leaving: dict[Any, float] = field(default_factory=lambda: defaultdict(float))
    moves: dict[tuple[Any, Any], float] = field(default_factory=lambda: defaultdict(float))
    conversions: dict[Any, float] = field(default_factory=lambda: defaultdict(float))
    value: dict[Any, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, source: Any, target: Any, converted: bool, count: float, value: float) -> None:
        """Count ``count`` journeys moving ``source -> target``; ``target=None`` is the end.

        At the end, ``converted`` tells conversion from null and ``value`` is the value of
        the converted journeys.
        """
        self.leaving[source] += count
        if target is not None:
            self.moves[(source, target)] += count
        elif converted:
            self.conversions[source] += count
            self.value[source] += value

    @property
    def total_conversions(self) -> float:
        """Journeys that converted."""
        return sum(self.conversions.values())

    @property
    def total_value(self) -> float:
        """Their conversion value."""
        return sum(self.value.values())


def chain_of(paths: Iterable[PathCount], order: int = 1) -> Chain:
    """The chain of ``paths`` at ``order`` (the reference the SQL counting is tested against).

    Example:
        >>> chain = chain_of([PathCount(("a", "b"), 1, 2)])
        >>> dict(chain.leaving)
        {None: 3.0, ('a',): 3.0, ('b',): 3.0}
    """
    chain = Chain()
    for pc in paths:
        walk = states(pc.path, order)
        journeys = pc.conversions + pc.non_conversions
        if not walk or journeys <= 0:
            continue
        for a, b in itertools.pairwise((None, *walk)):
            chain.add(a, b, False, journeys, 0.0)
        if pc.conversions:
            chain.add(walk[-1], None, True, pc.conversions, pc.value)
        if pc.non_conversions:
            chain.add(walk[-1], None, False, pc.non_conversions, 0.0)
    return chain


@dataclass(frozen=True, slots=True)
class Effects:
    """Removal effects of one chain, with the totals the credit is scaled to."""

    conversion: dict[Any, float]
    value: dict[Any, float]
    probability: float
    total_conversions: float
    total_value: float


def removal_effects(chain: Chain, channels_of: Callable[[Any], Iterable[Any]] = tuple) -> Effects:
    """Removal effects (0..1) of every channel in the chain, by conversions and by value.

    Args:
        chain: the journey counts.
        channels_of: the channels of a state (default: the state is a tuple of channels).

    Raises:
        MarkovError: no journey converted.

    Example (worked by hand in tests/unit/sinks/test_markov.py):
        >>> chain = chain_of([PathCount(("a", "b"), 1, 0), PathCount(("a",), 0, 1),
        ...                   PathCount(("b",), 1, 0)])
        >>> {k: round(v, 6) for k, v in sorted(removal_effects(chain).conversion.items())}
        {'a': 0.5, 'b': 1.0}
    """
    if chain.total_conversions <= 0:
        raise MarkovError("no journey converted: the Markov model has nothing to attribute")
    transient = sorted(chain.leaving, key=_sort_key)
    index = {s: i for i, s in enumerate(transient)}
    size = len(transient)
    leaving = np.array([chain.leaving[s] for s in transient])
    rows, cols, probs = [], [], []
    for (a, b), count in chain.moves.items():
        rows.append(index[a])
        cols.append(index[b])
        probs.append(count / chain.leaving[a])
    q = sparse.csr_matrix((probs, (rows, cols)), shape=(size, size))
    system = (sparse.identity(size, format="csr") - q).tocsc()
    rhs = np.column_stack(
        [
            np.array([chain.conversions.get(s, 0.0) for s in transient]) / leaving,
            np.array([chain.value.get(s, 0.0) for s in transient]) / leaving,
        ]
    )
    start = index[None]
    base = _absorbed(system, rhs, np.ones(size, dtype=bool), start)
    members: dict[Any, list[int]] = defaultdict(list)
    for i, s in enumerate(transient):
        if s is not None:
            for channel in set(channels_of(s)):
                members[channel].append(i)
    conversion, value = {}, {}
    for channel in sorted(members, key=_sort_key):
        keep = np.ones(size, dtype=bool)
        keep[members[channel]] = False
        without = _absorbed(system, rhs, keep, start)
        conversion[channel] = _effect(without[0], base[0])
        value[channel] = _effect(without[1], base[1])
    return Effects(conversion, value, float(base[0]), chain.total_conversions, chain.total_value)


def credit(
    effects: Effects, total_conversions: float | None = None, total_value: float | None = None
) -> dict[Any, tuple[float, float]]:
    """``{channel: (conversions, value)}``: the totals shared in proportion to the effects.

    The totals default to the chain's own (the journeys it learnt from); a report whose
    learning window is wider than its period passes the period's totals.

    Example:
        >>> e = Effects({"a": 0.5, "b": 1.0}, {"a": 0.0, "b": 1.0}, 2 / 3, 3.0, 30.0)
        >>> credit(e)
        {'a': (1.0, 0.0), 'b': (2.0, 30.0)}
    """
    conversions = effects.total_conversions if total_conversions is None else total_conversions
    value = effects.total_value if total_value is None else total_value
    re_sum = sum(effects.conversion.values())
    vre_sum = sum(effects.value.values())
    return {
        c: (
            conversions * effects.conversion[c] / re_sum if re_sum > 0 else 0.0,
            value * effects.value[c] / vre_sum if vre_sum > 0 else 0.0,
        )
        for c in effects.conversion
    }


def path_weights(channels: Sequence[str], effects: Mapping[str, float]) -> list[float]:
    """Weights of one converting path's touches (in order) under ``markov_path``; they sum to 1.

    The conversion is split over the channels on the path in proportion to their removal
    effects, and a channel's part evenly over its touches on the path.

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


def _effect(without: float, base: float) -> float:
    # Removing a channel can only remove routes to conversion; a tiny negative is rounding.
    return max(0.0, 1.0 - float(without) / float(base)) if base > 0 else 0.0


def _sort_key(state: Any) -> tuple[int, str]:
    return (0, "") if state is None else (1, repr(state))


def _absorbed(system: Any, rhs: Any, keep: Any, start: int) -> Any:
    """``x[start]`` of ``(I - Q) x = b`` restricted to the ``keep`` states (both columns)."""
    kept = np.flatnonzero(keep)
    sub = system[kept][:, kept].tocsc()
    b = rhs[kept]
    at = int(np.searchsorted(kept, start))
    if len(kept) <= DIRECT_STATES:
        return sparse_linalg.splu(sub).solve(b)[at]
    out = np.empty(b.shape[1])
    for j in range(b.shape[1]):
        column = b[:, j]
        x, info = sparse_linalg.bicgstab(sub, column, rtol=ITERATIVE_RTOL, atol=0.0)
        scale = max(float(np.linalg.norm(column)), 1e-300)
        if info != 0 or float(np.linalg.norm(sub @ x - column)) > CHECK_RTOL * scale:
            x = sparse_linalg.splu(sub).solve(column)
        out[j] = x[at]
    return out
