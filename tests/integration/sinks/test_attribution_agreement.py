"""Attribution on path data shaped like ChannelAttribution's sample, against credit computed here.

The data: a dozen channels, 10,000 path records (a pool of paths drawn again and again, so
paths repeat; channels repeat within a path), each with conversions and null journeys, so
about 25,000 people: converting leads with a won deal each (of a random value), leads and
anonymous devices that never convert. They are written into the real tables (events and
deals), and the reports run through the path tables and their SQL.

The expected credit is computed in this file from the path records alone, independently of
``sinks/``: the heuristics by counting, Markov orders 1 and 2 with a dense numpy solve of the
absorbing chain built here (ChannelAttribution's states: windows of the raw path, equal
neighbours merged), Shapley with the textbook subset formula per converting channel set.
Every channel's conversions and revenue agree to 1e-6 relative.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import pytest

from leadflow.sinks import reports
from leadflow.sinks.bench_data import PathRecord, load_path_records
from leadflow.sinks.migrations import migrate

CHANNELS = (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu",
)  # fmt: skip
WS = "agree"
T0 = 1_767_225_600_000  # 2026-01-01
RANGE = {"date_from": date(2026, 1, 1), "date_to": date(2026, 3, 1)}

Record = PathRecord  # path, conversions, null journeys, each conversion's value


def path_records(seed: int = 20, records: int = 10_000) -> list[Record]:
    """Path records with channel-dependent conversion odds, repeats and null journeys."""
    rng = np.random.default_rng(seed)
    popularity = rng.dirichlet(np.full(len(CHANNELS), 0.7))
    lift = rng.normal(0.0, 0.8, len(CHANNELS))

    def draw() -> tuple[str, ...]:
        length = min(1 + int(rng.geometric(0.3)), 10)
        out = [int(rng.choice(len(CHANNELS), p=popularity))]
        for _ in range(length - 1):
            out.append(
                out[-1] if rng.random() < 0.4 else int(rng.choice(len(CHANNELS), p=popularity))
            )
        return tuple(CHANNELS[i] for i in out)

    pool = [draw() for _ in range(5_000)]
    out = []
    for _ in range(records):
        path = pool[int(rng.integers(len(pool)))] if rng.random() < 0.5 else draw()
        score = (
            -0.3 + sum(lift[CHANNELS.index(c)] for c in set(path)) / 2 + 0.3 * (path[-1] == path[0])
        )
        p = 1 / (1 + math.exp(-score))
        conversions = int(rng.binomial(3, p))
        nulls = int(rng.binomial(5, 1 - p))
        if conversions + nulls == 0:
            nulls = 1
        values = tuple(round(float(rng.uniform(0.5, 12.0)), 3) for _ in range(conversions))
        out.append((path, conversions, nulls, values))
    return out


def load(client: Any, database: str, records: Sequence[Record]) -> None:
    migrate(client, database)
    load_path_records(client, database, records, WS, T0)


# -- the expected credit, computed here -----------------------------------------------------------


def heuristics(records: Sequence[Record]) -> dict[str, dict[str, tuple[float, float]]]:
    out: dict[str, dict[str, list[float]]] = {
        m: defaultdict(lambda: [0.0, 0.0]) for m in ("first_touch", "last_touch", "linear")
    }
    for path, conversions, _, values in records:
        value = sum(values)
        for model, channel in (("first_touch", path[0]), ("last_touch", path[-1])):
            out[model][channel][0] += conversions
            out[model][channel][1] += value
        for channel in path:
            out["linear"][channel][0] += conversions / len(path)
            out["linear"][channel][1] += value / len(path)
    return {m: {c: (a, b) for c, (a, b) in by.items()} for m, by in out.items()}


def _walk(path: tuple[str, ...], order: int) -> list[tuple[str, ...]]:
    windows = (
        [path]
        if len(path) <= order
        else [path[i : i + order] for i in range(len(path) - order + 1)]
    )
    return [w for i, w in enumerate(windows) if i == 0 or w != windows[i - 1]]


def markov_expected(records: Sequence[Record], order: int) -> dict[str, tuple[float, float]]:
    """Removal effects by a dense solve of the absorbing chain; credit = total x RE / sum RE."""
    moves: dict[tuple[Any, Any], float] = defaultdict(float)
    leaving: dict[Any, float] = defaultdict(float)
    to_conv: dict[Any, float] = defaultdict(float)
    to_value: dict[Any, float] = defaultdict(float)
    for path, conversions, nulls, values in records:
        walk = [("(start)",), *_walk(path, order)]
        for a, b in itertools.pairwise(walk):
            moves[a, b] += conversions + nulls
            leaving[a] += conversions + nulls
        leaving[walk[-1]] += conversions + nulls
        to_conv[walk[-1]] += conversions
        to_value[walk[-1]] += sum(values)
    states = sorted(leaving)
    index = {s: i for i, s in enumerate(states)}
    q = np.zeros((len(states), len(states)))
    for (a, b), n in moves.items():
        q[index[a], index[b]] = n / leaving[a]
    b = np.array([[to_conv[s] / leaving[s], to_value[s] / leaving[s]] for s in states])
    start = index[("(start)",)]

    def solve(drop: str | None) -> np.ndarray:
        keep = [i for i, s in enumerate(states) if drop not in s]
        x = np.linalg.solve(np.eye(len(keep)) - q[np.ix_(keep, keep)], b[keep])
        return x[keep.index(start)]

    base = solve(None)
    effects = {c: 1 - solve(c) / base for c in {c for p, *_ in records for c in p}}
    totals = (sum(r[1] for r in records), sum(sum(r[3]) for r in records))
    sums = [sum(e[k] for e in effects.values()) for k in (0, 1)]
    return {c: (totals[0] * e[0] / sums[0], totals[1] * e[1] / sums[1]) for c, e in effects.items()}


def shapley_expected(records: Sequence[Record]) -> dict[str, tuple[float, float]]:
    """Shapley values of each converting set's game, v = conversion rate of the exact set."""
    conv: dict[frozenset[str], float] = defaultdict(float)
    seen: dict[frozenset[str], float] = defaultdict(float)
    value: dict[frozenset[str], float] = defaultdict(float)
    for path, conversions, nulls, values in records:
        s = frozenset(path)
        conv[s] += conversions
        seen[s] += conversions + nulls
        value[s] += sum(values)
    rate = {s: conv[s] / seen[s] for s in seen}
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for s in conv:
        if not conv[s]:
            continue
        k = len(s)
        for channel in s:
            others = sorted(s - {channel})
            phi = 0.0
            for size in range(k):
                weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
                for t in itertools.combinations(others, size):
                    before = frozenset(t)
                    phi += weight * (rate.get(before | {channel}, 0.0) - rate.get(before, 0.0))
            out[channel][0] += conv[s] * phi / rate[s]
            out[channel][1] += value[s] * phi / rate[s]
    return {c: (a, b) for c, (a, b) in out.items()}


# -- the test --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return path_records()


@pytest.fixture
def db(client: Any, clickhouse_db: str, records: list[Record]) -> str:
    load(client, clickhouse_db, records)
    return clickhouse_db


def _report(client: Any, db: str, model: str, order: int = 1) -> dict[str, tuple[float, float]]:
    report = reports.attribution(
        client, db, model=model, conversion="won", workspace=WS, order=order, **RANGE
    )
    return {str(k): (c, r) for k, c, r in report.rows}


def _agree(
    model: str, got: dict[str, tuple[float, float]], expected: dict[str, tuple[float, float]]
) -> None:
    expected = {k: v for k, v in expected.items() if v[0] or v[1]}
    got = {k: v for k, v in got.items() if v[0] or v[1]}
    assert set(got) == set(expected), model
    for channel, (conversions, revenue) in expected.items():
        assert got[channel][0] == pytest.approx(conversions, rel=1e-6), (model, channel)
        assert got[channel][1] == pytest.approx(revenue, rel=1e-6), (model, channel)


def test_the_data_has_the_sample_shape(records: list[Record]) -> None:
    paths = [r[0] for r in records]
    assert len(records) == 10_000
    assert len({c for p in paths for c in p}) == 12
    assert len(set(paths)) < 0.5 * len(paths)  # paths repeat
    assert any(a == b for p in paths for a, b in itertools.pairwise(p))  # channels repeat
    conversions, nulls = sum(r[1] for r in records), sum(r[2] for r in records)
    assert 5_000 < conversions < nulls


def test_every_model_agrees(client: Any, db: str, records: list[Record]) -> None:
    # One load per client (chdb and HTTP), every model compared on it.
    expected = heuristics(records)
    for model in ("first_touch", "last_touch", "linear"):
        _agree(model, _report(client, db, model), expected[model])
    for order in (1, 2):
        _agree(
            f"markov {order}", _report(client, db, "markov", order), markov_expected(records, order)
        )
    _agree("shapley", _report(client, db, "shapley"), shapley_expected(records))
