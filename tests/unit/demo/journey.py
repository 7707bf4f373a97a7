"""Issue 14's journey as ONE SDK batch, mapped by the collector exactly as it arrives.

A visitor reads the pricing and product pages from an ad, submits the white-paper form
with their email and firmographics (anonymous: no userId yet), logs in (identify), the
app aliases their old CRM id to the new user id, joins them to their company (group),
they attend the webinar, and sales accepts them in the CRM. The SDK queued all of it
and sends one ``/v1/batch``: one request, one ``received_at``; the anonymous events are
keyed by the device, the userId-only ones by the user, so they land on different
partitions of ``leadflow.events``.
"""

from __future__ import annotations

from typing import Any

from leadflow.processors.events import Event
from leadflow.streams.collector.mapping import MapOptions, Mapped, map_message

WORKSPACE = "acme"
DEVICE = "anon-7f3a"
USER = "user-ada"
OLD_CRM_ID = "crm-00042"
EMAIL = "ada@bigcorp.io"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def batch(received_at: int = T0 + 40 * MINUTE) -> list[dict[str, Any]]:
    """The SDK batch's messages, oldest first (as the SDK queued them)."""
    page = {"page": {"url": "https://acme.io/pricing?utm_source=google&utm_medium=cpc&utm_campaign=spring",
                     "path": "/pricing", "referrer": "https://www.google.com/"}}  # fmt: skip
    firmographics = {"email": EMAIL, "company": "BigCorp", "company_size": 1200,
                     "title": "VP Operations", "industry": "software", "country": "US"}  # fmt: skip
    messages = [
        {"type": "page", "anonymousId": DEVICE, "messageId": "m01-page-pricing",
         "timestamp": _iso(T0), "context": page, "name": "Pricing"},
        {"type": "page", "anonymousId": DEVICE, "messageId": "m02-page-product",
         "timestamp": _iso(T0 + 2 * MINUTE),
         "context": {"page": {"url": "https://acme.io/product", "path": "/product"}}},
        {"type": "track", "anonymousId": DEVICE, "messageId": "m03-form",
         "event": "Form Submitted", "timestamp": _iso(T0 + 5 * MINUTE),
         "properties": {"form_id": "whitepaper", **firmographics,
                        "answers": {"timeline": "this_quarter"}}},
        {"type": "identify", "anonymousId": DEVICE, "userId": USER, "messageId": "m04-identify",
         "timestamp": _iso(T0 + 6 * MINUTE), "traits": {"email": EMAIL, "first_name": "Ada"}},
        {"type": "alias", "userId": USER, "previousId": OLD_CRM_ID, "messageId": "m05-alias",
         "timestamp": _iso(T0 + 7 * MINUTE)},
        {"type": "group", "userId": USER, "groupId": "bigcorp", "messageId": "m06-group",
         "timestamp": _iso(T0 + 8 * MINUTE), "traits": {"name": "BigCorp", "employees": 1200}},
        {"type": "track", "userId": USER, "messageId": "m07-webinar", "event": "Webinar Attended",
         "timestamp": _iso(T0 + 20 * MINUTE),
         "properties": {"webinar_id": "w-1", "webinar_name": "Ops at scale",
                        "minutes_attended": 45}},
        {"type": "track", "userId": USER, "messageId": "m08-crm-accept", "event": "Stage Changed",
         "timestamp": _iso(T0 + 30 * MINUTE),
         "properties": {"action": "accept_mql", "actor": "crm"}},
    ]  # fmt: skip
    for message in messages:
        message["sentAt"] = _iso(received_at)
    return messages


def events(
    received_at: int = T0 + 40 * MINUTE,
    messages: list[dict[str, Any]] | None = None,
    workspace: str = WORKSPACE,
) -> list[Event]:
    """The batch as the collector writes it to ``leadflow.events`` (one ``received_at``)."""
    options = MapOptions(
        workspace_id=workspace, received_at=received_at, future_tolerance_ms=300_000
    )
    out = []
    for i, message in enumerate(messages or batch(received_at)):
        mapped = map_message(message, message["type"], options, new_id=lambda i=i: f"gen-{i}")
        assert isinstance(mapped, Mapped), mapped
        out.append(mapped.event)
    return out
