"""Attribution over the path tables: every model's SQL, and the data-driven models' assembly.

Reads ``conversion_paths`` and ``journeys`` (:mod:`leadflow.sinks.paths`), never the touches
themselves. A conversion's touches are those in ``[converted_at - lookback, converted_at]``;
the arrays are in time order, so that window is a suffix found with one ``arrayFirstIndex``.

- Rule models: one query computes the requested model's weight for every touch of every
  conversion in the period as array expressions (the formulas of the ``attribution`` view),
  then ``ARRAY JOIN`` and ``GROUP BY`` the channel or campaign.
- Data-driven models learn from the *learning set*, per workspace: the converting journeys
  (conversions in the learning window, their lookback touches) and the null journeys (people
  with a touch in the window who had not converted by its end; their touches in the lookback
  before their last touch in the window). The window is the report's period unless widened.
  ``markov`` counts the chain's transitions in SQL (a state is its keys' numbers packed in
  one integer) and solves it in :mod:`leadflow.sinks.markov`; ``shapley`` counts journeys
  per channel set in SQL and solves the game in :mod:`leadflow.sinks.shapley`;
  ``markov_path`` splits each conversion over its own path in SQL with the learnt removal
  effects.

Every statement is a template: ``$db`` (database), ``$ws`` (workspace filter), ``$key``
(``channel`` or ``campaign``, from a fixed list); parameters are bound server-side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leadflow.processors.errors import LeadflowError
from leadflow.sinks.markov import ORDERS, Chain, credit, removal_effects
from leadflow.sinks.shapley import OTHER, SetCount, shapley_credit

RULE_MODELS = (
    "first_touch", "last_touch", "linear", "time_decay", "u_shaped", "w_shaped", "full_path",
)  # fmt: skip
DATA_DRIVEN_MODELS = ("markov", "markov_path", "shapley")
KEYS = ("channel", "campaign")

Query = Callable[[str, Mapping[str, Any]], list[tuple[Any, ...]]]


class AttributionError(LeadflowError):
    """An attribution was asked for with parameters it does not support."""


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time window ``[start_ms, end_ms)`` in epoch milliseconds."""

    start_ms: int
    end_ms: int


# -- rule models ---------------------------------------------------------------------------------

# The first touch inside the lookback (0: none, the conversion is unattributed).
WINDOW_START = (
    "arrayFirstIndex(t -> t >= converted_at - toInt64({lookback_days:UInt32}) * 86400000, touch_at)"
)

IN_PERIOD = """conversion = {conversion:String} AND $ws
      AND converted_at >= {from_ms:Int64} AND converted_at < {to_ms:Int64}"""

# Milestone positions: lead creation = the last touch at or before the lead's first 'lead'
# transition (else the first touch); opportunity creation = the last touch at or before the
# latest opportunity before the conversion (else the last touch); the last touch whose
# channel is not 'direct' (else the last touch). The arrays are sorted, so "the last touch at
# or before x" is the count of touches at or before x.
RULE_SQL = """
SELECT key, sum(weight) AS conversions, sum(weight * revenue) AS revenue
FROM
(
    SELECT revenue, keys, $weights AS weights
    FROM
    (
        SELECT revenue, converted_at, $window_start AS w0,
               arraySlice(touch_at, w0) AS at, arraySlice(channel, w0) AS chs,
               arraySlice($key, w0) AS keys, length(at) AS n, arrayEnumerate(at) AS pos,
               arrayCount(t -> t <= lead_at, at) AS lead_c,
               arrayCount(t -> t <= opp_at, at) AS opp_c,
               if(lead_at > 0 AND lead_c > 0, lead_c, 1) AS lead_pos,
               if(opp_at > 0 AND opp_c > 0, opp_c, n) AS opp_pos,
               arrayLastIndex(c -> c != 'direct', chs) AS nd_c,
               if(nd_c > 0, nd_c, n) AS nd_pos
        FROM $db.conversion_paths FINAL
        WHERE $in_period AND w0 > 0
    )
)
ARRAY JOIN keys AS key, weights AS weight
GROUP BY key
ORDER BY conversions DESC, key
"""

# Position-based shares: milestone touches get their shares (added up when two milestones
# are the same touch); the rest is spread evenly over the other touches, and when there are
# none the milestones' shares are rescaled to sum to 1.
_SPREAD = "arrayMap(s -> if(n > {ms}, s + if(s > 0, 0, {rest} / (n - {ms})), s / {kept}), {shares})"
RULE_WEIGHTS: dict[str, str] = {
    "first_touch": "arrayMap(p -> toFloat64(p = 1), pos)",
    "last_touch": "arrayMap(p -> toFloat64(p = nd_pos), pos)",
    "linear": "arrayMap(p -> 1 / n, pos)",
    "time_decay": (
        "arrayMap(d -> d / arraySum(decay), "
        "arrayMap(t -> pow(2, -((converted_at - t) / 86400000) / {half_life_days:Float64}), at)"
        " AS decay)"
    ),
    "u_shaped": _SPREAD.format(
        ms="length(arrayDistinct([1, n]))", rest="0.2", kept="0.8",
        shares="arrayMap(p -> 0.4 * (p = 1) + 0.4 * (p = n), pos)",
    ),
    "w_shaped": _SPREAD.format(
        ms="length(arrayDistinct([1, lead_pos, opp_pos]))", rest="0.1", kept="0.9",
        shares="arrayMap(p -> 0.3 * (p = 1) + 0.3 * (p = lead_pos) + 0.3 * (p = opp_pos), pos)",
    ),
    "full_path": _SPREAD.format(
        ms="length(arrayDistinct([1, lead_pos, opp_pos, n]))", rest="0.1", kept="0.9",
        shares="arrayMap(p -> 0.225 * ((p = 1) + (p = lead_pos) + (p = opp_pos) + (p = n)), pos)",
    ),
}  # fmt: skip

# Per workspace: conversions in the period with a touch in the lookback (and their revenue),
# and those without (not attributed by any model).
PERIOD_TOTALS_SQL = """
SELECT workspace_id, countIf(w0 > 0), sumIf(revenue, w0 > 0), countIf(w0 = 0)
FROM
(
    SELECT workspace_id, revenue, $window_start AS w0
    FROM $db.conversion_paths FINAL
    WHERE $in_period
)
GROUP BY workspace_id
ORDER BY workspace_id
"""


def _key(by: str) -> str:
    if by not in KEYS:
        raise AttributionError(f"attribution is by one of {', '.join(KEYS)}, not {by!r}")
    return by


def rule_sql(model: str, by: str) -> str:
    """The query of rule-based ``model`` by ``by`` (parameters: the period, lookback, ...).

    Example:
        >>> "arrayMap(p -> 1 / n, pos)" in rule_sql("linear", "campaign")
        True
    """
    if model not in RULE_WEIGHTS:
        raise AttributionError(f"unknown rule model {model!r}")
    return (
        RULE_SQL.replace("$weights", RULE_WEIGHTS[model])
        .replace("$in_period", IN_PERIOD)
        .replace("$window_start", WINDOW_START)
        .replace("$key", _key(by))
    )


def period_totals_sql() -> str:
    """Attributed conversions, their revenue and unattributed conversions, per workspace."""
    return PERIOD_TOTALS_SQL.replace("$in_period", IN_PERIOD).replace("$window_start", WINDOW_START)


# -- the learning set ----------------------------------------------------------------------------

# One row per journey: (workspace, converted, revenue, path of keys). Parameters learn_from_ms
# / learn_to_ms bound the learning window.
LEARNING_SET = """
SELECT workspace_id, converted, revenue, path
FROM
(
    SELECT workspace_id, toUInt8(1) AS converted, revenue,
           arraySlice($key, $window_start) AS path
    FROM $db.conversion_paths FINAL
    WHERE conversion = {conversion:String} AND $ws
      AND converted_at >= {learn_from_ms:Int64} AND converted_at < {learn_to_ms:Int64}
    UNION ALL
    SELECT workspace_id, toUInt8(0) AS converted, toFloat64(0) AS revenue,
           arraySlice($key, first_in, last_in - first_in + 1) AS path
    FROM
    (
        SELECT workspace_id, touch_at, $key,
               arrayFirstIndex(t -> t >= {learn_to_ms:Int64}, touch_at) AS after,
               if(after = 0, length(touch_at), after - 1) AS last_in,
               touch_at[last_in] AS last_at,
               arrayFirstIndex(
                   t -> t >= last_at - toInt64({lookback_days:UInt32}) * 86400000, touch_at
               ) AS first_in
        FROM $db.journeys FINAL
        WHERE $ws
          AND (workspace_id, person_id) NOT IN (
              SELECT workspace_id, lead_id FROM $db.conversion_paths
              WHERE conversion = {conversion:String} AND $ws
                AND converted_at < {learn_to_ms:Int64})
    )
    WHERE last_in > 0 AND last_at >= {learn_from_ms:Int64}
)
WHERE length(path) > 0
"""

# Transitions between order-k states. Each key of a path is its 1-based position in the
# sorted list of every key in scope ({names}: KEYS_SQL), and a state (a window of k keys,
# zero-padded when the path is shorter than k) is packed into one UInt64, 64 // k bits per key:
# exact (decoded in Python), and grouping on one integer is 3-5x faster at order 4 than on
# tuples. Equal neighbours are merged; start and end are 0 (start only ever leaves, end only
# ever is reached). Used while the keys fit (order 4: 65,535 keys); HASHED_MARKOV_SQL above.
MARKOV_SQL = """
SELECT workspace_id, a, b, converted, count() AS journeys, sum(revenue) AS value
FROM
(
    SELECT workspace_id, converted, revenue,
           arrayMap(x -> transform(x, {names:Array(String)},
                                   arrayEnumerate({names:Array(String)}), 0), path) AS h,
           $windows AS w0,
           arrayFilter((x, p) -> x != p, w0, arrayPushFront(arrayPopBack(w0), toUInt64(0))) AS w
    FROM ($learning_set)
)
ARRAY JOIN arrayPushFront(w, toUInt64(0)) AS a, arrayPushBack(w, toUInt64(0)) AS b
GROUP BY workspace_id, a, b, converted
"""

# The same with states as tuples of key hashes (cityHash64), for more keys than fit.
HASHED_MARKOV_SQL = """
SELECT workspace_id, a, b, converted, count() AS journeys, sum(revenue) AS value
FROM
(
    SELECT workspace_id, converted, revenue,
           arrayMap(x -> cityHash64(x), path) AS h, $windows AS w0,
           arrayFilter((x, p) -> x != p, w0, arrayPushFront(arrayPopBack(w0), $zero)) AS w
    FROM ($learning_set)
)
ARRAY JOIN arrayPushFront(w, $zero) AS a, arrayPushBack(w, $zero) AS b
GROUP BY workspace_id, a, b, converted
"""

# Every key a path in scope can hold (journeys hold every touch; conversion_paths is read too
# so that a key is never missing while the two tables are refreshed), with its hash.
KEYS_SQL = """
SELECT name, cityHash64(name) FROM
(
    SELECT DISTINCT arrayJoin($key) AS name FROM $db.journeys FINAL WHERE $ws
    UNION DISTINCT
    SELECT DISTINCT arrayJoin($key) AS name FROM $db.conversion_paths FINAL
    WHERE conversion = {conversion:String} AND $ws
)
ORDER BY name
"""

SETS_SQL = """
SELECT workspace_id, arraySort(arrayDistinct(arrayMap(x -> cityHash64(x), path))) AS s,
       converted, count() AS journeys, sum(revenue) AS value
FROM ($learning_set)
GROUP BY workspace_id, s, converted
"""

# The keys' names behind the hashes: only keys on converting paths can earn credit.
NAMES_SQL = """
SELECT DISTINCT name, cityHash64(name)
FROM $db.conversion_paths FINAL
ARRAY JOIN $key AS name
WHERE conversion = {conversion:String} AND $ws
  AND converted_at >= {learn_from_ms:Int64} AND converted_at < {learn_to_ms:Int64}
"""

# markov_path: each conversion split over the channels on its own path in proportion to their
# removal effects (a channel's part evenly over its touches), linear when none is known.
MARKOV_PATH_SQL = """
WITH mapFromArrays({effect_keys:Array(String)}, {effect_values:Array(Float64)}) AS effects
SELECT key, sum(weight) AS conversions, sum(weight * revenue) AS revenue
FROM
(
    SELECT revenue, keys,
           arrayMap(c -> effects[concat(workspace_id, '\\0', c)], chs) AS re,
           arraySum(arrayMap(c -> effects[concat(workspace_id, '\\0', c)], arrayDistinct(chs)))
               AS total,
           arrayMap((c, r) -> if(total > 0, r / total / countEqual(chs, c), 1 / length(chs)),
                    chs, re) AS weights
    FROM
    (
        SELECT workspace_id, revenue, $window_start AS w0, arraySlice(channel, w0) AS chs,
               arraySlice($key, w0) AS keys
        FROM $db.conversion_paths FINAL
        WHERE $in_period AND w0 > 0
    )
)
ARRAY JOIN keys AS key, weights AS weight
GROUP BY key
ORDER BY conversions DESC, key
"""


def learning_set_sql(by: str) -> str:
    """The journeys a data-driven model learns from (one row per journey)."""
    return LEARNING_SET.replace("$window_start", WINDOW_START).replace("$key", _key(by))


def _windows(order: int) -> tuple[str, str]:
    """SQL for the order-``order`` state windows of ``h`` as hash tuples, and the zero tuple."""
    if order not in ORDERS:
        raise AttributionError(f"order must be one of {ORDERS}, not {order}")
    zero = "tuple(" + ", ".join(["toUInt64(0)"] * order) + ")"
    if order == 1:
        return "arrayMap(x -> tuple(x), h)", zero
    slices = ", ".join(f"arraySlice(h, {i}, greatest(length(h) - {order - 1}, 0))"
                       for i in range(1, order + 1))  # fmt: skip
    padded = ", ".join(f"h[{i}]" for i in range(1, order + 1))
    return f"if(length(h) >= {order}, arrayZip({slices}), [tuple({padded})])", zero


def packed_bits(order: int) -> int:
    """Bits per key in a packed order-``order`` state (keys are numbered from 1)."""
    return 64 // order


def _packed_windows(order: int) -> str:
    """SQL for the packed windows of ``h``: one window of the zero-padded path if shorter."""
    bits = packed_bits(order)
    window = " + ".join(f"bitShiftLeft(toUInt64(h[i + {j}]), {bits * j})" for j in range(order))
    return f"arrayMap(i -> {window}, range(1, toUInt64(greatest(length(h) - {order - 1}, 1) + 1)))"


def markov_sql(order: int, by: str, *, packed: bool = True) -> str:
    """Transition counts of the order-``order`` chain of the learning set, per workspace.

    ``packed``: states as packed key numbers ({names} bound to KEYS_SQL's names in order),
    else as tuples of key hashes.

    Example:
        >>> "bitShiftLeft(toUInt64(h[i + 1]), 32)" in markov_sql(2, "channel")
        True
        >>> "arrayZip(arraySlice(h, 1" in markov_sql(2, "channel", packed=False)
        True
    """
    windows, zero = _windows(order)
    if packed:
        return MARKOV_SQL.replace("$learning_set", learning_set_sql(by)).replace(
            "$windows", _packed_windows(order)
        )
    return (
        HASHED_MARKOV_SQL.replace("$learning_set", learning_set_sql(by))
        .replace("$windows", windows)
        .replace("$zero", zero)
    )


def keys_sql(by: str) -> str:
    """``(name, cityHash64(name))`` of every key in scope, sorted by name."""
    return KEYS_SQL.replace("$key", _key(by))


def sets_sql(by: str) -> str:
    """Journeys per distinct set of (hashed) keys and outcome, per workspace."""
    return SETS_SQL.replace("$learning_set", learning_set_sql(by))


def names_sql(by: str) -> str:
    """``(name, cityHash64(name))`` of the keys on the learning window's converting paths."""
    return NAMES_SQL.replace("$key", _key(by))


def markov_path_sql(by: str) -> str:
    """``markov_path`` credit per key for the period, given the removal effects."""
    return (
        MARKOV_PATH_SQL.replace("$in_period", IN_PERIOD)
        .replace("$window_start", WINDOW_START)
        .replace("$key", _key(by))
    )


# -- assembly ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    """Per workspace: attributed conversions, their revenue, unattributed conversions."""

    conversions: dict[str, float]
    revenue: dict[str, float]
    unattributed: int


def period_totals(query: Query, params: Mapping[str, Any]) -> Totals:
    """The period's totals (the rule models' and every model's unattributed count)."""
    rows = query(period_totals_sql(), params)
    return Totals(
        {str(w): float(c) for w, c, _, _ in rows},
        {str(w): float(r) for w, _, r, _ in rows},
        sum(int(u) for *_, u in rows),
    )


def chains(
    query: Query, params: Mapping[str, Any], order: int, by: str
) -> tuple[dict[str, Chain], dict[int, str]]:
    """The learning set's chain per workspace, and the names of the keys in its states.

    States are tuples of key numbers (packed SQL) or of key hashes (more keys than fit).
    """
    keys = query(keys_sql(by), params)
    if not keys:
        return {}, {}
    out: dict[str, Chain] = defaultdict(Chain)
    if len(keys) < 2 ** packed_bits(order):
        names = [str(n) for n, _ in keys]
        rows = query(markov_sql(order, by), {**params, "names": names})
        decode: Callable[[Any], tuple[int, ...] | None] = _unpacker(order)
        named = {i: n for i, n in enumerate(names, 1)}
    else:
        rows = query(markov_sql(order, by, packed=False), params)
        decode = _state
        named = {int(h): str(n) for n, h in keys}
    for workspace, a, b, converted, journeys, value in rows:
        chain = out[str(workspace)]
        chain.add(decode(a), decode(b), bool(converted), float(journeys), float(value))
    return dict(out), named


def _unpacker(order: int) -> Callable[[int], tuple[int, ...] | None]:
    """Decode a packed state: its key numbers in order (padding dropped); 0 is start/end.

    Example:
        >>> _unpacker(2)(1 + (3 << 32)), _unpacker(2)(5), _unpacker(2)(0)
        ((1, 3), (5,), None)
    """
    bits = packed_bits(order)
    mask = (1 << bits) - 1

    def decode(packed: int) -> tuple[int, ...] | None:
        state = tuple(k for j in range(order) if (k := (int(packed) >> (bits * j)) & mask))
        return state or None

    return decode


def _state(window: Sequence[int]) -> tuple[int, ...] | None:
    """A hashed window as a state; the zero tuple is start (as a source) or end (as a target)."""
    state = tuple(int(h) for h in window if h)
    return state or None


def names(query: Query, params: Mapping[str, Any], by: str) -> dict[int, str]:
    """``{hash: name}`` of the keys that can earn credit."""
    return {int(h): str(n) for n, h in query(names_sql(by), params)}


def markov_credit(
    query: Query,
    params: Mapping[str, Any],
    *,
    order: int,
    by: str,
    totals: Totals | None,
) -> dict[str, tuple[float, float]]:
    """``markov``: per workspace, the period's conversions x RE / sum(RE), then summed.

    ``totals`` is ``None`` when the learning window is the period (the chain's own totals
    are then the period's attributed conversions and revenue).
    """
    by_workspace, named = chains(query, params, order, by)
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for workspace, chain in by_workspace.items():
        if chain.total_conversions <= 0:
            continue
        conversions = None if totals is None else totals.conversions.get(workspace, 0.0)
        revenue = None if totals is None else totals.revenue.get(workspace, 0.0)
        for h, (c, v) in credit(removal_effects(chain), conversions, revenue).items():
            # Every key on a converting path has RE > 0; a key seen only on null journeys
            # earns credit only if walks through it can still convert in the chain.
            if h in named and (c or v):
                out[named[h]][0] += c
                out[named[h]][1] += v
    return {k: (a, b) for k, (a, b) in out.items()}


def effects_by_workspace(
    query: Query, params: Mapping[str, Any], order: int
) -> dict[str, dict[str, tuple[float, float]]]:
    """``{workspace: {channel: (removal effect, value removal effect)}}`` of the learning set."""
    by_workspace, named = chains(query, params, order, "channel")
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for workspace, chain in by_workspace.items():
        if chain.total_conversions <= 0:
            continue
        effects = removal_effects(chain)
        out[workspace] = {
            named[h]: (effects.conversion[h], effects.value[h])
            for h in effects.conversion
            if h in named
        }
    return out


def markov_path_credit(
    query: Query, params: Mapping[str, Any], *, order: int, by: str
) -> list[tuple[str, float, float]]:
    """``markov_path`` rows: removal effects learnt per workspace, split over each path."""
    effects = effects_by_workspace(query, params, order)
    keys = [f"{w}\0{c}" for w, by_channel in effects.items() for c in by_channel]
    values = [e[0] for by_channel in effects.values() for e in by_channel.values()]
    rows = query(markov_path_sql(by), {**params, "effect_keys": keys, "effect_values": values})
    return [(str(k), float(c), float(r)) for k, c, r in rows]


def shapley_rows(
    query: Query, params: Mapping[str, Any], by: str, period_params: Mapping[str, Any] | None
) -> tuple[dict[str, tuple[float, float]], tuple[str, ...]]:
    """``shapley`` credit per key and the keys pooled as OTHER by the fallback.

    ``period_params`` are the parameters whose learning window is the report's period, when
    the learning window is wider (the period's converting sets are credited with the game
    learnt from the wider window); ``None`` when the two are the same.
    """
    named = names(query, params, by)
    learned = _sets(query(sets_sql(by), params))
    credited = None if period_params is None else _sets(query(sets_sql(by), period_params))
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    pooled: set[str] = set()
    for workspace, sets in learned.items():
        period = None if credited is None else credited.get(workspace, {})
        period = None if period is None else {s: c for s, c in period.items() if c.conversions}
        result = shapley_credit(sets, period, other=OTHER)
        pooled |= {named.get(h, str(h)) for h in result.pooled}
        for h, (c, v) in result.credit.items():
            # Keys that are on no converting path (not named) have no credit to report.
            if h == OTHER or h in named:
                name = OTHER if h == OTHER else named[h]
                out[name][0] += c
                out[name][1] += v
    return {k: (a, b) for k, (a, b) in out.items()}, tuple(sorted(pooled))


def _sets(rows: list[tuple[Any, ...]]) -> dict[str, dict[frozenset[int], SetCount]]:
    acc: dict[str, dict[frozenset[int], list[float]]] = defaultdict(
        lambda: defaultdict(lambda: [0.0, 0.0, 0.0])
    )
    for workspace, hashes, converted, journeys, value in rows:
        slot = acc[str(workspace)][frozenset(int(h) for h in hashes)]
        if converted:
            slot[0] += float(journeys)
            slot[2] += float(value)
        else:
            slot[1] += float(journeys)
    return {w: {s: SetCount(*v) for s, v in sets.items()} for w, sets in acc.items()}


def sorted_rows(credit_by_key: Mapping[str, tuple[float, float]]) -> list[tuple[str, float, float]]:
    """Report rows, most credited first (ties by key), as the rule models' SQL orders them."""
    return sorted(
        ((k, float(c), float(v)) for k, (c, v) in credit_by_key.items()),
        key=lambda r: (-r[1], r[0]),
    )
