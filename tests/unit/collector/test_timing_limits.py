"""Clock-skew correction, the far-future guard and the token bucket (injected clocks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from leadflow.streams.collector.limits import RateLimiter, TokenBucket
from leadflow.streams.collector.timing import epoch_ms, occurred_at, too_far_ahead

ms = st.integers(0, 4_102_444_800_000)  # 1970 .. 2100


@given(ms, ms, ms)
def test_skew_correction_shifts_by_the_clock_difference(ts: int, sent: int, received: int) -> None:
    corrected = occurred_at(ts, sent, received)
    assert corrected - ts == received - sent
    # The delay between the event and its sending survives the correction.
    assert received - corrected == sent - ts


@given(ms, ms)
def test_no_sent_at_keeps_the_timestamp_and_no_timestamp_means_now(ts: int, received: int) -> None:
    assert occurred_at(ts, None, received) == ts
    assert occurred_at(None, ts, received) == received


def test_epoch_ms_reads_offsets_and_naive_as_utc() -> None:
    berlin = timezone(timedelta(hours=1))
    assert epoch_ms(datetime(2026, 3, 1, 13, 0, tzinfo=berlin)) == epoch_ms(
        datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    )
    assert epoch_ms(datetime(2026, 3, 1, 12, 0)) == 1_772_366_400_000  # noqa: DTZ001
    assert epoch_ms(datetime(2026, 3, 1, 12, 0, 0, 999_999, tzinfo=UTC)) == 1_772_366_400_999


def test_far_future_tolerance_is_inclusive() -> None:
    assert not too_far_ahead(1_300, 1_000, 300)
    assert too_far_ahead(1_301, 1_000, 300)
    assert not too_far_ahead(0, 1_000, 0)  # the past is never "too far ahead"


def test_bucket_refuses_when_empty_and_refills_with_time() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10.0, burst=5.0, clock=lambda: now[0])
    assert [bucket.take(1) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.wait_seconds() == 0.1
    now[0] = 0.1
    assert bucket.take(1)
    assert not bucket.take(1)
    now[0] = 100.0  # refills to the burst, not beyond
    assert [bucket.take(1) for _ in range(6)] == [True] * 5 + [False]


def test_a_large_batch_passes_once_and_leaves_debt() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10.0, burst=5.0, clock=lambda: now[0])
    assert bucket.take(50)
    assert not bucket.take(1)
    assert bucket.wait_seconds() == 4.6  # 45 tokens of debt + 1 at 10/s
    now[0] = 4.5
    assert not bucket.take(1)
    now[0] = 4.6
    assert bucket.take(1)


@given(st.lists(st.tuples(st.floats(0, 2), st.integers(1, 20)), max_size=50))
def test_admitted_events_never_exceed_burst_plus_refill(steps: list[tuple[float, int]]) -> None:
    now = [0.0]
    bucket = TokenBucket(rate=3.0, burst=10.0, clock=lambda: now[0])
    admitted = 0
    last_cost = 0
    for dt, cost in steps:
        now[0] += dt
        if bucket.take(cost):
            admitted += cost
            last_cost = cost
    # Only the last admission may overdraw, and by less than its own cost.
    assert admitted <= 10.0 + 3.0 * now[0] + last_cost


def test_limiter_keeps_one_bucket_per_key() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=1.0, clock=lambda: now[0])
    assert limiter.bucket("a").take(1)
    assert not limiter.bucket("a").take(1)
    assert limiter.bucket("b").take(1)
