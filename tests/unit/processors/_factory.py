"""Event builders for the processor tests (event time in hours from a fixed origin)."""

from __future__ import annotations

from typing import Any

from leadflow.processors.events import Context, Event, Kind

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
DAY = 24 * HOUR
WS = "ws-1"


def ev(
    event_id: str,
    kind: Kind,
    hours: float,
    *,
    anon: str | None = None,
    lead: str | None = None,
    path: str | None = None,
    channel: str | None = None,
    campaign: str | None = None,
    ip: str | None = None,
    **payload: Any,
) -> Event:
    at = T0 + int(hours * HOUR)
    return Event(
        event_id=event_id,
        kind=kind,
        workspace_id=WS,
        occurred_at=at,
        received_at=at,
        anonymous_id=anon,
        lead_id=lead,
        context=Context(
            path=path,
            channel=channel,
            utm_campaign=campaign,
            ip=ip,
            user_agent="Mozilla/5.0" if ip else None,
        ),
        payload=payload,
    )


ICP_FORM = {
    "email": "ada@acme.io",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "title": "VP Data Platform",
    "company": "Acme",
    "company_size": 3000,
    "industry": "software",
    "country": "US",
}
