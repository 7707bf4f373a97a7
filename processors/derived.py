"""Events the processors derive, one dataclass per contract topic.

Every derived event carries a deterministic id computed from the lead, what happened and
the inbound event that caused it (:func:`derived_id`). A worker that crashes and re-emits
after a restart therefore emits the *same* id: the ClickHouse projection counts it once
and downstream consumers can drop it by id. See docs/handoff.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum


class Stage(StrEnum):
    """Funnel stages (see processors/funnel.py for the allowed transitions)."""

    VISITOR = "visitor"
    LEAD = "lead"
    MQL = "mql"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    RECYCLED = "recycled"
    DISQUALIFIED = "disqualified"


def derived_id(*parts: object) -> str:
    """A stable 32-hex-char id for a derived event from the parts that define it.

    Example:
        >>> a = derived_id("lead-1", "mql", "sql", "evt-9")
        >>> a == derived_id("lead-1", "mql", "sql", "evt-9"), a == derived_id("lead-2", "mql")
        (True, False)
        >>> len(derived_id("x"))
        32
    """
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class RuleHit:
    """One scoring rule's contribution (after decay), so a rep can see why."""

    rule: str
    points: float


@dataclass(frozen=True, slots=True)
class StageChanged:
    """``leadflow.lead-stage-changed``: one validated funnel transition."""

    transition_id: str
    workspace_id: str
    lead_id: str
    from_stage: Stage | None
    to_stage: Stage
    occurred_at: int
    reason: str
    cause_event_id: str
    sequence: int  # 1 for the lead's first transition, then 2, 3, ...


@dataclass(frozen=True, slots=True)
class LeadScored:
    """``leadflow.lead-scored``: the scores after an event changed them."""

    score_id: str
    workspace_id: str
    lead_id: str
    occurred_at: int
    fit_score: float
    engagement_score: float
    model_score: float | None
    model_version: str | None
    top_rules: tuple[RuleHit, ...]
    cause_event_id: str
    stage: Stage
    segments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BecameMQL:
    """``leadflow.lead-became-mql``."""

    transition_id: str
    workspace_id: str
    lead_id: str
    occurred_at: int
    fit_score: float
    engagement_score: float
    owner_id: str | None
    sla_due_at: int
    segments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Contact:
    """Contact and firmographics, as consent allows (fields are ``None`` when not allowed)."""

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    seniority: str | None = None
    phone: str | None = None
    company: str | None = None
    company_size: int | None = None
    industry: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class Touch:
    """A marketing touch as attribution and the hand-off see it."""

    event_id: str
    kind: str
    occurred_at: int
    channel: str
    campaign: str | None = None


@dataclass(frozen=True, slots=True)
class EngagementSummary:
    """Counts of what the lead did, over its whole history (pre-identification included)."""

    visits: int = 0
    pricing_views: int = 0
    content_downloads: int = 0
    emails_opened: int = 0
    emails_clicked: int = 0
    webinars_attended: int = 0
    demo_requested: bool = False
    last_activity_at: int | None = None


@dataclass(frozen=True, slots=True)
class StageStep:
    """One entry of the stage history carried in the hand-off."""

    stage: Stage
    entered_at: int
    reason: str


@dataclass(frozen=True, slots=True)
class Qualification:
    """Answers of the configured framework (BANT by default) and how complete they are."""

    framework: str
    answers: dict[str, str] = field(default_factory=dict)
    completeness: float = 0.0  # answered criteria / all criteria of the framework


@dataclass(frozen=True, slots=True)
class BecameSQL:
    """``leadflow.lead-became-sql`` (contract): everything a rep needs to open the conversation.

    Exactly one per SQL transition; ``transition_id`` is deterministic, so consumers dedupe
    by it. ``sql_count`` is 2 for a lead that was recycled and became SQL again.
    """

    transition_id: str
    workspace_id: str
    lead_id: str
    became_sql_at: int
    reason: str  # "sales_accepted" or the strong-signal rule's name
    sql_count: int
    contact: Contact
    segments: tuple[str, ...]
    fit_score: float
    engagement_score: float
    top_rules: tuple[RuleHit, ...]
    model_score: float | None
    model_version: str | None
    top_features: tuple[RuleHit, ...]
    qualification: Qualification
    owner_id: str | None
    team: str | None
    first_touch: Touch | None
    last_touch: Touch | None
    engagement: EngagementSummary
    stage_history: tuple[StageStep, ...]


@dataclass(frozen=True, slots=True)
class SlaBreached:
    """``leadflow.sla-breached``: an MQL nobody accepted or rejected in time (event time)."""

    breach_id: str
    workspace_id: str
    lead_id: str
    mql_transition_id: str
    mql_at: int
    due_at: int
    owner_id: str | None


@dataclass(frozen=True, slots=True)
class NurtureAction:
    """``leadflow.nurture-actions``: a behavioural trigger fired."""

    action_id: str
    workspace_id: str
    lead_id: str
    occurred_at: int
    trigger: str
    action: str
    cause_event_id: str


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """``leadflow.training-examples``: features as they were when scored, and the late label."""

    example_id: str
    workspace_id: str
    lead_id: str
    scored_at: int
    labelled_at: int
    label: bool
    features: dict[str, float]


@dataclass(frozen=True, slots=True)
class OwnerAssigned:
    """A lead got an owner (on MQL/SQL) or was escalated after an SLA breach.

    ``pool``/``cursor_after`` carry the round-robin cursor: the agent stores
    ``cursor_after`` for ``pool`` (per partition) and passes it back in, so a retried step
    with the same cursor picks the same rep.
    """

    assignment_id: str
    workspace_id: str
    lead_id: str
    occurred_at: int
    owner_id: str | None
    team: str | None
    pool: str
    rule: str
    cursor_after: int
    previous_owner_id: str | None
    reason: str  # "mql", "sql" or "sla_escalation"
    cause_event_id: str


@dataclass(frozen=True, slots=True)
class IdentityLinked:
    """``leadflow.identities`` (compacted by anonymous_id): a device now belongs to a lead.

    Published when a link is first made, so ClickHouse can credit pre-identification
    touches to the lead without waiting for the replayed events.
    """

    workspace_id: str
    anonymous_id: str
    lead_id: str
    linked_at: int
    cause_event_id: str


@dataclass(frozen=True, slots=True)
class DeadlineTick:
    """``leadflow.events.by-lead`` (internal): event time has passed one of the lead's deadlines.

    The worker's watermark advances with records of every partition it holds, but faust
    keeps table state per source partition: a lead's state may only be read and written
    while processing a record of the lead's own partition. A deadline found due elsewhere
    therefore travels to the lead as this record, keyed by lead, and is applied there.
    Applying a tick twice is harmless: time that has passed fires nothing new.
    """

    lead_id: str
    watermark: int


@dataclass(frozen=True, slots=True)
class MergeRequest:
    """``leadflow.events.by-lead`` (internal): two lead ids are one person.

    The identity stage decides a merge (see ``processors/identity.py``, "Merges") and
    sends this record twice, keyed by each lead: the absorbed lead hands its state over
    and becomes a redirect, the survivor waits for that state (``processors/merges.py``).
    Both copies sort right before the event that caused the merge.
    """

    merge_id: str  # derived_id("merge", workspace, absorbed, survivor, cause_event_id)
    workspace_id: str
    lead_id: str  # the lead this copy is for: absorbed_id or survivor_id (the record key)
    absorbed_id: str
    survivor_id: str
    occurred_at: int  # event time of the cause
    received_at: int  # collector receive time of the cause (its place in ingestion order)
    reason: str  # "identify", "alias", "form" or "email" (see identity.py)
    cause_event_id: str
    # Records the absorbed lead will receive after it merged away that the identity stage
    # sent to the survivor as well (identity.py, "In-flight records"): the absorbed lead
    # drops these instead of forwarding them (v2).
    resent: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeadTransfer:
    """``leadflow.events.by-lead`` (internal, lead stage to lead stage): an absorbed lead's state.

    ``state`` is the absorbed lead's stored state (base64 of ``encode_lead_state``), ``""``
    for a lead never seen; ``refused`` names why the absorbed lead did not merge (then the
    survivor only stops waiting). ``hops`` counts forwards through redirects.
    """

    merge_id: str
    workspace_id: str
    lead_id: str  # the survivor (the record key)
    absorbed_id: str
    occurred_at: int  # the merge's event time
    reason: str
    cause_event_id: str
    state: str = ""
    refused: str | None = None
    hops: int = 0
    # A refused merge's MergeRequest.resent: the survivor drops those records (v2).
    resent: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeadMerged:
    """``leadflow.lead-merged`` (contract): ``merged_lead_id`` is now ``lead_id``, for good.

    Every touch and fact of the merged lead counts for the survivor from now on; records
    later addressed to the merged id are redirected, and the id is never re-used.
    ``adopted_history``: the survivor had no history of its own and continues the merged
    lead's stage history (its transitions count for the survivor); otherwise the
    survivor's own stage history stands. ``merged_lead_ids`` lists the merged id and every
    id merged into it before, so one row per id resolves to the survivor in one hop.
    """

    merge_id: str
    workspace_id: str
    lead_id: str  # the survivor
    merged_lead_id: str
    occurred_at: int
    reason: str
    cause_event_id: str
    adopted_history: bool
    merged_lead_ids: tuple[str, ...] = ()
