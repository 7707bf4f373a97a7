"""Pydantic models of the Segment HTTP Tracking API messages (and of our answers).

They validate each message's envelope (types of ids, timestamps, context) and make the
OpenAPI document real. Segment tolerates fields it does not know (libraries add
``integrations``, ``_metadata``, ``version``...), and so do these models: unknown
envelope fields are accepted and not stored. The kind-specific checks of
``properties``/``traits`` are in :mod:`mapping`, which knows the tracking plan.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

Id = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(max_length=8192)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class PageContext(_Open):
    """``context.page``: where the event happened."""

    url: Text | None = None
    path: Text | None = None
    referrer: Text | None = None
    title: Text | None = None
    search: Text | None = None


class CampaignContext(_Open):
    """``context.campaign``: the UTM parameters of the visit."""

    source: Text | None = None
    medium: Text | None = None
    name: Text | None = None
    term: Text | None = None
    content: Text | None = None


class ConsentContext(_Open):
    """``context.consent``: what the person agreed to (Segment's consent object is tolerated).

    ``tracking`` is leadflow's switch: ``true`` lets the collector keep the call's IP and
    user agent; absent, the workspace default applies (docs/privacy.md).
    """

    tracking: bool | None = None


class ReferrerContext(_Open):
    """``context.referrer``: Segment's referrer object (``{type, name, url, link}``)."""

    url: Text | None = None


class SegmentContext(_Open):
    """``context``: page, campaign, user agent and IP (other keys are tolerated).

    ``traits`` is where RudderStack's SDKs (and some Segment calls) put the user's traits;
    identify and form calls read them as well as the top-level ``traits``/``properties``.
    """

    page: PageContext | None = None
    campaign: CampaignContext | None = None
    consent: ConsentContext | None = None
    referrer: ReferrerContext | None = None
    traits: dict[str, Any] | None = None
    userAgent: Text | None = None
    ip: Annotated[str, Field(max_length=64)] | None = None


class _Message(_Open):
    messageId: Id | None = Field(
        default=None, description="Idempotency key; the collector makes a UUID when absent."
    )
    anonymousId: Id | None = Field(default=None, description="Device id.")
    userId: Id | None = Field(default=None, description="Known person id (lead_id).")
    timestamp: datetime | None = Field(default=None, description="When it happened (client).")
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = Field(
        default=None, description="When the client sent it (for clock-skew correction)."
    )
    context: SegmentContext | None = None
    integrations: dict[str, Any] | None = None

    @field_validator("anonymousId", "userId", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any) -> Any:
        # RudderStack's JS SDK sends "userId": "" for every anonymous call: no id, not an
        # invalid one (refusing it lost every anonymous page view of that SDK).
        return None if value == "" else value


class TrackMessage(_Message):
    """``track``: something a person did; ``event`` picks the kind (tracking plan)."""

    type: Literal["track"] = "track"
    event: Annotated[str, Field(min_length=1, max_length=200)]
    properties: dict[str, Any] | None = None


class PageMessage(_Message):
    """``page``: a page view (kind ``visit``)."""

    type: Literal["page"] = "page"
    name: Text | None = None
    category: Text | None = None
    properties: dict[str, Any] | None = None


class ScreenMessage(_Message):
    """``screen``: a mobile screen view, stored as a ``visit`` like a page view."""

    type: Literal["screen"] = "screen"
    name: Text | None = None
    category: Text | None = None
    properties: dict[str, Any] | None = None


class IdentifyMessage(_Message):
    """``identify``: who the person is (traits become contact fields)."""

    type: Literal["identify"] = "identify"
    traits: dict[str, Any] | None = None


class AliasMessage(_Message):
    """``alias``: ``previousId`` and ``userId`` are the same person."""

    type: Literal["alias"] = "alias"
    previousId: Id
    userId: Id


class GroupMessage(_Message):
    """``group``: the person's account; its traits are the company's firmographics."""

    type: Literal["group"] = "group"
    groupId: Id
    traits: dict[str, Any] | None = None


AnyMessage = Annotated[
    TrackMessage | PageMessage | ScreenMessage | IdentifyMessage | AliasMessage | GroupMessage,
    Field(discriminator="type"),
]

MESSAGE_MODELS: dict[str, type[_Message]] = {
    "track": TrackMessage,
    "page": PageMessage,
    "screen": ScreenMessage,
    "identify": IdentifyMessage,
    "alias": AliasMessage,
    "group": GroupMessage,
}


class BatchRequest(_Open):
    """``/v1/batch``: many messages; each is stored or refused on its own."""

    batch: list[AnyMessage]
    sentAt: datetime | None = None
    context: SegmentContext | None = Field(
        default=None, description="Defaults for messages without their own context."
    )


class FieldError(BaseModel):
    """One problem, with the path of the offending field (``batch[3].properties.amount``)."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str


class Refusal(BaseModel):
    """One message of a request that was not stored (it went to the dead-letter topic)."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(description="Place of the message in the request (0 for single calls).")
    reason: str = Field(description="invalid | too_large | forbidden")
    errors: list[FieldError]


class Accepted(BaseModel):
    """The 200 answer: every accepted event is durably in Kafka (acks=all)."""

    success: Literal[True] = True
    event_ids: list[str] = Field(description="Ids of the stored events, in request order.")
    ignored: list[str] = Field(
        default_factory=list,
        description="Paths of fields that were not stored at all (SDK/device context, "
        "notifications leadflow does not record, extras of events that belong to no person).",
    )
    kept: list[str] = Field(
        default_factory=list,
        description="Paths of properties/traits the event's kind has no field for, stored "
        "in its extra_json (sealed with the person's key when PII encryption is on).",
    )
    warnings: list[FieldError] = Field(
        default_factory=list,
        description="Values stored differently from how they were sent (a future timestamp "
        "clamped, a size range stored as its lower bound).",
    )
    refused: list[Refusal] = Field(
        default_factory=list,
        description="Messages not stored, each on the dead-letter topic with its reasons.",
    )


class Problem(BaseModel):
    """Every non-2xx answer.

    ``code`` repeats ``error`` because rudder-sdk-python reads ``body["code"]`` and, without
    it, treats a final 4xx as a network failure and retries it.
    """

    success: Literal[False] = False
    error: str = Field(
        description="invalid | unauthorized | forbidden | too_large | rate_limited | "
        "unavailable | internal | not_found"
    )
    message: str
    errors: list[FieldError] = Field(default_factory=list)
    refused: list[Refusal] = Field(
        default_factory=list,
        description="With 400: every message of the request, each refused with its reasons.",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def code(self) -> str:
        """The same as ``error`` (the field Segment's and RudderStack's SDKs read)."""
        return self.error
