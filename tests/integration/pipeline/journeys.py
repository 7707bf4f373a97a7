"""Scripted lead journeys with their own workspace, so tests sharing a broker never collide."""

from __future__ import annotations

from typing import Any

from leadflow.processors.events import Context, Event, Kind
from leadflow.processors.identity import derive_lead_id

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000

ICP = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "title": "VP Data Platform",
    "company": "Acme",
    "company_size": 3000,
    "industry": "software",
    "country": "US",
}


class Journey:
    """Events of one person in one workspace, in event time (hours from T0)."""

    def __init__(self, workspace: str, start: int = T0) -> None:
        self.workspace = workspace
        self.start = start
        self.anon = f"{workspace}-device"
        self.email = f"ada@{workspace}.example.com"
        self.lead = derive_lead_id(workspace, self.email)

    def at(self, hours: float) -> int:
        return self.start + int(hours * HOUR)

    def ev(
        self,
        event_id: str,
        kind: Kind,
        hours: float,
        *,
        device: bool = True,
        path: str | None = None,
        channel: str | None = None,
        campaign: str | None = None,
        **payload: Any,
    ) -> Event:
        return Event(
            event_id=f"{self.workspace}-{event_id}",
            kind=kind,
            workspace_id=self.workspace,
            occurred_at=self.at(hours),
            received_at=self.at(hours),
            anonymous_id=self.anon if device else None,
            lead_id=None if device else self.lead,
            context=Context(path=path, channel=channel, utm_campaign=campaign),
            payload=payload,
        )

    def to_sql_twice(self) -> list[list[Event]]:
        """Three anonymous pricing visits, form (MQL), demo request (SQL), recycle, SQL again.

        In phases: a person's device-keyed and lead-keyed events travel on different
        partitions of the inbound log, so only events far apart in time keep their order
        (as they do in real traffic, where weeks pass between these phases).
        """
        return [
            [
                self.ev(
                    "v1", Kind.VISIT, 0, path="/pricing", channel="paid_search", campaign="spring"
                ),
                self.ev("v2", Kind.VISIT, 24, path="/pricing", channel="direct"),
                self.ev("v3", Kind.VISIT, 48, path="/pricing", channel="direct"),
                self.ev("f1", Kind.FORM_SUBMITTED, 49, channel="direct", email=self.email, **ICP),
                self.ev("d1", Kind.DEMO_REQUESTED, 60, channel="direct"),
            ],
            [
                self.ev("c1", Kind.EMAIL_CLICKED, 62, device=False, campaign="nurture-1"),
                self.ev(
                    "r1", Kind.STAGE_CHANGED, 200, device=False, action="recycle", reason="later"
                ),
            ],
            [
                self.ev("v4", Kind.VISIT, 600, path="/pricing", channel="direct"),
                self.ev("c3", Kind.EMAIL_CLICKED, 601, campaign="nurture-2"),
                self.ev("d2", Kind.DEMO_REQUESTED, 602, channel="direct"),
            ],
        ]

    def unreviewed_mql(self) -> list[Event]:
        """An MQL nobody reviews; a visit 30 h later moves event time past the 24 h SLA."""
        return [
            self.ev("v1", Kind.VISIT, 0, path="/pricing", channel="organic_search"),
            self.ev("v2", Kind.VISIT, 1, path="/pricing", channel="direct"),
            self.ev("v3", Kind.VISIT, 2, path="/pricing", channel="direct"),
            self.ev("f1", Kind.FORM_SUBMITTED, 3, channel="direct", email=self.email, **ICP),
            self.ev("v4", Kind.VISIT, 33, path="/blog/post", channel="direct"),
        ]
