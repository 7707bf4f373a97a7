"""Event builders for the processor tests (event time in hours from a fixed origin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leadflow.demo.simulator.generator import SimConfig, Simulation
from leadflow.demo.simulator.send import message_to_event
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Context, Event, Kind
from leadflow.processors.identity import IdentityState, identity_step

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


def simulated_journey(
    config: SimConfig, on_device: Callable[[IdentityState], None], on_lead: Callable[[Event], None]
) -> dict[str, IdentityState]:
    """Feed a seeded simulation through ``identity_step``; hand each device state and each
    routed event to the callbacks (the caller keeps the lead states). Events a processor
    refuses (``LeadflowError``) are skipped, as the worker would dead-letter them."""
    devices: dict[str, IdentityState] = {}
    for message in Simulation(config).messages():
        event = message_to_event(message, WS)
        try:
            device, routed = identity_step(devices.get(event.person_key), event)
        except LeadflowError:
            continue
        if device is not None:
            devices[event.person_key] = device
            on_device(device)
        for r in routed:
            try:
                on_lead(r)
            except LeadflowError:
                continue
    return devices
