"""How far ahead of the log a receive stamp may move ``R'``: the log's own clock bounds it.

``R'`` (``processors/ordering.py``) is the running maximum of an inbound partition's
``received_at`` values and heartbeats. Without a bound, ONE writer with a stamp in the
future (``leadflow simulate --via kafka`` with future simulated times, a producer with a
fast clock, a bug) moves ``R'`` there for good: every later record of that partition sorts
at that ``R'``, and is released only by heartbeats past it, which a collector (wall clock)
does not write until its clock gets there. Real traffic would be held for as long as the
stamp is ahead: years, for a stamp of 2048.

**The rule.** A record's stamp counts for ``R'`` as at most its Kafka record timestamp plus
``max_ahead_ms`` (``LEADFLOW_ORDER_MAX_AHEAD_MS``)::

    bounded = min(stamp, timestamp + max_ahead_ms)      (stamp itself if no timestamp)

The timestamp is part of the record as the log holds it (``leadflow.events`` is created
with ``message.timestamp.type=LogAppendTime``: the broker's clock when it appended the
record; on a topic left at ``CreateTime`` it is the producer's), so the bound, and every
output, stays a function of the log: a replay, a crash or another worker count reads the
same timestamps and bounds the same stamps. ``R'`` then never runs more than
``max_ahead_ms`` past the newest timestamp its partition has seen, and a future stamp holds
a wall-clock writer's traffic back by at most ``max_ahead_ms`` (until its heartbeats pass).

The stamp in the event (``received_at``) is not changed: it stays the fact the writer
recorded; only the place the record sorts at is bounded. A bounded stamp is counted and
logged by the identity stage (``identity.receive_ahead``): loud, not silent.
"""

from __future__ import annotations

DEFAULT_MAX_AHEAD_MS = 5_000
"""Clock difference tolerated between a writer's stamps and the log's timestamps.

A collector stamps ``received_at`` before it produces, so on one clock a stamp is never
ahead of its record's timestamp; the tolerance is for writers whose clock runs ahead of the
broker's (NTP keeps that to milliseconds). It is also the longest a future stamp can hold
back traffic of a writer that follows the wall clock.
"""


def bounded_received(stamp: int, timestamp: int | None, max_ahead_ms: int) -> int:
    """The ``received_at`` value (or heartbeat) a record counts with for ``R'``.

    ``timestamp``: the record's Kafka timestamp in ms (None or negative: the log has none,
    as for a record built in a test; then the stamp counts as it is).

    Example:
        >>> bounded_received(1_000, 990, 5_000)          # within the bound: unchanged
        1000
        >>> bounded_received(2_487_369_600_000, 1_796_000_000_000, 5_000)   # 2048 in 2026
        1796000005000
        >>> bounded_received(1_000, None, 0)
        1000
    """
    if timestamp is None or timestamp < 0:
        return stamp
    return min(stamp, timestamp + max_ahead_ms)
