"""The inbound event, as every processor sees it.

On the wire each kind is its own Avro record (``schemas/avsc``) with the shared envelope
fields followed by the kind's own fields. In memory the envelope is typed and the kind's
fields are in ``payload`` under the same names as in the schema.

Times are UTC epoch milliseconds (``occurred_at`` is event time; business logic uses it and
never the wall clock, so a replay rebuilds identical numbers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from leadflow.processors.codec import COMPACT_JSON
from leadflow.processors.errors import InvalidEvent

# What JSON escapes in a string (``ensure_ascii=False``): quote, backslash, control characters.
_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def scoped_key(workspace_id: str, ident: str) -> str:
    """The one key format of every person-, device- and lead-keyed record and state entry.

    A device, user or lead id means nothing without its workspace: two tenants may use the
    same ids, and their state must never meet (issue 19). The key is compact JSON
    ``["<workspace>","<id>"]``: JSON quoting leaves nothing to forge with a separator.

    Example:
        >>> scoped_key("ws", "a1")
        '["ws","a1"]'
        >>> scoped_key("ws", 'x"]') != scoped_key('ws","x', "]")
        True
    """
    if _ESCAPED.search(workspace_id) or _ESCAPED.search(ident):
        return COMPACT_JSON.encode([workspace_id, ident])
    # What the encoder writes for strings it escapes nothing in, ~5x faster: the worker
    # builds several keys per event.
    return f'["{workspace_id}","{ident}"]'


def lead_key(workspace_id: str, lead_id: str) -> str:
    """The key of ``leadflow.events.by-lead`` and of the lead state (see :func:`scoped_key`).

    Example:
        >>> lead_key("ws", "L1")
        '["ws","L1"]'
    """
    return scoped_key(workspace_id, lead_id)


class Kind(StrEnum):
    """Every inbound event kind. The value is the Avro record's ``kind`` name."""

    VISIT = "visit"
    FORM_SUBMITTED = "form_submitted"
    IDENTIFY = "identify"
    ALIAS = "alias"
    EMAIL_SENT = "email_sent"
    EMAIL_OPENED = "email_opened"
    EMAIL_CLICKED = "email_clicked"
    EMAIL_BOUNCED = "email_bounced"
    EMAIL_UNSUBSCRIBED = "email_unsubscribed"
    AD_CLICK = "ad_click"
    DEMO_REQUESTED = "demo_requested"
    WEBINAR_ATTENDED = "webinar_attended"
    CONTENT_DOWNLOADED = "content_downloaded"
    STAGE_CHANGED = "stage_changed"
    DEAL_WON = "deal_won"
    DEAL_LOST = "deal_lost"
    CAMPAIGN_COST = "campaign_cost"
    CONSENT_CHANGED = "consent_changed"
    ERASURE_REQUESTED = "erasure_requested"
    GROUP = "group"
    CUSTOM = "custom"


# Touches are what attribution credits: a person interacting with marketing.
TOUCH_KINDS = frozenset(
    {
        Kind.VISIT,
        Kind.FORM_SUBMITTED,
        Kind.EMAIL_CLICKED,
        Kind.AD_CLICK,
        Kind.DEMO_REQUESTED,
        Kind.WEBINAR_ATTENDED,
        Kind.CONTENT_DOWNLOADED,
    }
)


@dataclass(frozen=True, slots=True)
class Context:
    """Where an event came from. IP and user agent are kept only with tracking consent."""

    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    title: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    channel: str | None = None
    experiment: str | None = None
    variant: str | None = None
    user_agent: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One immutable inbound event.

    Attributes:
        event_id: the idempotency key (client ``messageId`` or a collector UUID).
        kind: what happened.
        workspace_id: the tenant; every table and report is isolated by it.
        occurred_at: event time, UTC epoch ms (clock-skew corrected by the collector).
        received_at: when the collector accepted it, UTC epoch ms.
        anonymous_id: the device/browser id, if any.
        lead_id: the known person id, if any (``userId`` in Segment terms).
        context: page, campaign and channel context.
        payload: the kind's own fields, named as in its Avro schema.
    """

    event_id: str
    kind: Kind
    workspace_id: str
    occurred_at: int
    received_at: int
    anonymous_id: str | None = None
    lead_id: str | None = None
    context: Context = field(default_factory=Context)
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def person_id(self) -> str:
        """The plain id of whom the event is about: the device, else the lead.

        The device comes first: the identity processor must see a browser's anonymous
        touches and the identify that names them on one partition, in order. Events that
        only know the lead (CRM, sales) go by lead. Campaign costs belong to no person.
        """
        if self.kind is Kind.CAMPAIGN_COST:
            return f"cost:{self.payload.get('channel')}:{self.payload.get('campaign')}"
        ident = self.anonymous_id or self.lead_id
        if not ident:
            raise InvalidEvent(f"event {self.event_id} has neither lead_id nor anonymous_id")
        return ident

    @property
    def person_key(self) -> str:
        """The Kafka key of the inbound log ``leadflow.events`` (and the identity state's).

        :attr:`person_id` in its workspace (:func:`scoped_key`).

        Example:
            >>> Event("e1", Kind.VISIT, "ws", 1, 1, anonymous_id="a1").person_key
            '["ws","a1"]'
        """
        return scoped_key(self.workspace_id, self.person_id)
