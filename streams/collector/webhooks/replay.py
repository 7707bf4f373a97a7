"""Replay protection for signed webhooks: a freshness window and a memory of what was used.

A signature proves who sent the bytes, not when: a captured request could be sent again.
Every vendor here signs a timestamp, so a request outside the window (300 s, HubSpot's own
figure) is refused; inside it, a signature (SendGrid, HubSpot) or token (Mailgun) already
used for a stored request is refused too. Only successful deliveries are remembered, so a
vendor's retry after our 503 still gets in; event ids derived from the vendor's own ids
make a replay that reaches another collector process idempotent downstream.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class ReplayGuard:
    """Remembers used signatures for ``window_ms`` (bounded, oldest forgotten first).

    Example:
        >>> guard = ReplayGuard(window_ms=1000)
        >>> guard.problem("sig", sent_at_ms=5_000, now_ms=5_500) is None
        True
        >>> guard.remember("sig", now_ms=5_500)
        >>> guard.problem("sig", sent_at_ms=5_000, now_ms=5_600)
        'this signature was already used (a replay)'
        >>> guard.problem("other", sent_at_ms=1_000, now_ms=5_600)
        'signed 4.6 s ago, outside the 1 s window'
        >>> guard.problem("other", sent_at_ms=0, now_ms=5_600)
        'no readable signing time'
    """

    window_ms: int
    capacity: int = 100_000
    _seen: OrderedDict[str, int] = field(default_factory=OrderedDict)

    def problem(
        self, token: str, *, sent_at_ms: int, now_ms: int, window_ms: int | None = None
    ) -> str | None:
        """Why the request must be refused, or ``None`` when it is fresh and unused.

        ``window_ms`` narrows the guard's window for this request (Postmark: per type).
        """
        if sent_at_ms <= 0:
            return "no readable signing time"
        limit = self.window_ms if window_ms is None else min(window_ms, self.window_ms)
        age = now_ms - sent_at_ms
        if abs(age) > limit:
            when = "ago" if age > 0 else "in the future"
            window = limit / 1000
            return f"signed {abs(age) / 1000:.1f} s {when}, outside the {window:g} s window"
        self._forget(now_ms)
        if token in self._seen:
            return "this signature was already used (a replay)"
        return None

    def remember(self, token: str, *, now_ms: int) -> None:
        """Mark ``token`` used (after its request was stored)."""
        self._seen[token] = now_ms
        self._seen.move_to_end(token)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def _forget(self, now_ms: int) -> None:
        while self._seen:
            token, at = next(iter(self._seen.items()))
            if now_ms - at <= 2 * self.window_ms:
                break
            del self._seen[token]
