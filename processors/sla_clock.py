"""A workspace's event-time clock across by-lead partitions: clock steps.

Deadlines (SLA, label horizon, decay re-scores) fire on the event-time clock of the lead's
workspace on the lead's by-lead partition. Driven by that partition's records alone, a
partition on which no lead of the workspace has traffic would hold its deadlines back
forever. So the identity stage, which sees every routed event of its inbound partition in
log order, sends every by-lead partition a **clock step** whenever a routed event moves its
workspace's event time into a new step (``step_ms``, an hour by default) on that inbound
partition: "event time of workspace *w* has reached ``v`` at release key ``k``" (``k`` the
event's own release key, ``v`` its ``occurred_at`` rounded down to the step).

A by-lead partition applies a step at its place in the release order, right after the
record with the same key, and moves the workspace's clock to ``max(clock, v)``. The steps
of all inbound partitions together give, at every key ``k``, the clock
``floor_step(max occurred_at of the workspace's routed events with key <= k)``
(:func:`step_clock`): a function of the log, whatever the partitioning, batches, crashes or
worker count, because a step sorts like a record and is released like one. The price of
the rounding: a deadline that only another partition's traffic passes fires up to
``step_ms`` of event time late; the step count is at most one per step of event time per
inbound partition and workspace (an hour of live traffic: one record per by-lead
partition), never more than the routed events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from leadflow.processors.ordering import ReleaseKey

DEFAULT_STEP_MS = 3_600_000
"""An hour of event time: SLAs are hours (24 by default), horizons days."""


@dataclass(frozen=True, slots=True)
class ClockStep:
    """Event time of ``workspace`` reached ``value`` at release key ``key``."""

    workspace: str
    value: int
    key: ReleaseKey


def step_of(occurred_at: int, step_ms: int) -> int:
    """``occurred_at`` rounded down to a multiple of ``step_ms`` (negative times too).

    Example:
        >>> step_of(7_200_001, 3_600_000), step_of(-1, 3_600_000)
        (7200000, -3600000)
    """
    if step_ms <= 0:
        raise ValueError(f"step must be > 0, got {step_ms}")
    return occurred_at // step_ms * step_ms


def next_step(last: int | None, occurred_at: int, step_ms: int) -> int | None:
    """The step an event makes its inbound partition send, or ``None``.

    ``last`` is the last step this inbound partition sent for the event's workspace.

    Example:
        >>> H = 3_600_000
        >>> next_step(None, 5 * H + 10, H), next_step(5 * H, 5 * H + 99, H)
        (18000000, None)
        >>> next_step(5 * H, 7 * H, H), next_step(5 * H, 2 * H, H)
        (25200000, None)
    """
    value = step_of(occurred_at, step_ms)
    return value if last is None or value > last else None


def step_clock(events: Iterable[tuple[ReleaseKey, str, int]], step_ms: int) -> dict[str, int]:
    """The reference: each workspace's clock after ``events`` (key, workspace, occurred_at).

    What the steps of every inbound partition make of it, rounded down to the step.

    Example:
        >>> from leadflow.processors.ordering import release_key
        >>> H = 3_600_000
        >>> step_clock([(release_key(1, 1, "a"), "w", 3 * H + 5), (release_key(2, 2, "b"), "w",
        ...             H)], H)
        {'w': 10800000}
    """
    clock: dict[str, int] = {}
    for _key, workspace, occurred_at in events:
        value = step_of(occurred_at, step_ms)
        clock[workspace] = max(value, clock.get(workspace, value))
    return clock
