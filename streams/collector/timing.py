"""Event time from a Segment message: clock-skew correction and the far-future guard.

A browser's clock can be minutes or years off. Segment's answer, which the collector
copies: the client stamps ``sentAt`` when it sends, the collector stamps ``receivedAt``
when it receives; their difference is the client's skew (plus the network delay, which
is small), and it is added to the client's ``timestamp``. Event time drives decay, SLAs
and velocity, so this correction is where an honest ``occurred_at`` is born.
"""

from __future__ import annotations

from datetime import UTC, datetime


def epoch_ms(moment: datetime) -> int:
    """UTC epoch milliseconds of ``moment``; a naive datetime is read as UTC (Segment does).

    Example:
        >>> epoch_ms(datetime(2026, 1, 1, tzinfo=UTC))
        1767225600000
        >>> epoch_ms(datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose
        1767225600000
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def occurred_at(timestamp: int | None, sent_at: int | None, received_at: int) -> int:
    """Event time in UTC ms: ``timestamp + (received_at - sent_at)``.

    Without ``sent_at`` the skew is unknown and the timestamp is taken as is (server
    libraries with a good clock, historical imports); without ``timestamp`` the event
    happened when it was received.

    Example:
        >>> occurred_at(1_000, 1_500, 61_500)  # client clock 60 s behind
        61000
        >>> occurred_at(1_000, None, 61_500)
        1000
        >>> occurred_at(None, 1_500, 61_500)
        61500
    """
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    return timestamp + (received_at - sent_at)


def too_far_ahead(occurred: int, received_at: int, tolerance_ms: int) -> bool:
    """Whether an event claims to happen after the collector received it, beyond tolerance.

    Example:
        >>> too_far_ahead(10_000, 5_000, 5_000), too_far_ahead(10_001, 5_000, 5_000)
        (False, True)
    """
    return occurred - received_at > tolerance_ms
