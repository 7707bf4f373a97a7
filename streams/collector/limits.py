"""Per-write-key rate limiting: a token bucket on an injected monotonic clock.

One misbehaving tracker (a loop in a tag manager) must not starve every other workspace
of the broker's capacity. The bucket refills at ``rate`` events per second up to ``burst``;
a request is admitted while the bucket holds at least one token and then pays for all its
events, so a batch larger than the burst still passes once and leaves the bucket in debt
(the following requests wait until the debt is repaid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

_EPSILON = 1e-9


@dataclass(slots=True)
class TokenBucket:
    """A token bucket; not thread-safe (the collector uses it from its event loop only).

    Example:
        >>> now = [0.0]
        >>> bucket = TokenBucket(rate=2.0, burst=2.0, clock=lambda: now[0])
        >>> bucket.take(1), bucket.take(1), bucket.take(1)
        (True, True, False)
        >>> now[0] = 0.5  # half a second refills one token
        >>> bucket.take(1)
        True
    """

    rate: float
    burst: float
    clock: Callable[[], float]
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.updated = self.clock()

    def take(self, cost: float) -> bool:
        """Admit a request of ``cost`` events and charge for it, or refuse it unchanged."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0 - _EPSILON:  # float refill must not refuse a due request
            return False
        self.tokens -= cost
        return True

    def wait_seconds(self) -> float:
        """How long until the next request would be admitted (for ``Retry-After``)."""
        return max(0.0, (1.0 - self.tokens) / self.rate)


@dataclass(slots=True)
class RateLimiter:
    """One bucket per write key, created on first use."""

    rate: float
    burst: float
    clock: Callable[[], float]
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def bucket(self, key_id: str) -> TokenBucket:
        """The bucket of ``key_id``."""
        found = self.buckets.get(key_id)
        if found is None:
            found = self.buckets[key_id] = TokenBucket(self.rate, self.burst, self.clock)
        return found
