"""One lead's state as the lead processor keeps it, its storage bytes and its size caps.

Bounded state: hits :data:`MAX_HITS` (decaying hits worth under :data:`NEGLIGIBLE` points
at the watermark are pruned, then the oldest decaying hits go first), stage history
:data:`MAX_HISTORY` (first step kept), aliases :data:`MAX_ALIASES`, answers 32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from leadflow.processors import codec
from leadflow.processors.derived import (
    BecameMQL,
    BecameSQL,
    Contact,
    EngagementSummary,
    LeadMerged,
    LeadScored,
    LeadTransfer,
    NurtureAction,
    OwnerAssigned,
    RuleHit,
    SlaBreached,
    Stage,
    StageChanged,
    StageStep,
    Touch,
    TrainingExample,
)
from leadflow.processors.events import Event
from leadflow.processors.pii import PiiFacts
from leadflow.processors.scoring import EngagementHit

MAX_SEEN = 64  # > identity.MAX_BUFFERED + 1 (tested); 128 made p90 state > 2 KB
MAX_HITS = 64
NEGLIGIBLE = 0.01
MAX_HISTORY = 32
MAX_ALIASES = 16

Derived = (
    StageChanged
    | LeadScored
    | BecameMQL
    | BecameSQL
    | OwnerAssigned
    | SlaBreached
    | NurtureAction
    | TrainingExample
    | LeadMerged
)


@dataclass(frozen=True, slots=True)
class Parked:
    """An event held while its lead waits for a merged lead's state (``processors/merges``).

    ``facts`` are what the worker derived from the event's sealed PII when it arrived: the
    step that runs it later cannot open PII. ``offset``: where the worker read the record
    that brought it (on the lead's own partition), so that if it fails when the lead
    resumes, its dead letter names that record and not the one that resumed the lead;
    ``None`` when the caller has no offset (the reference) or it was parked before this
    field existed.
    """

    event: Event
    facts: PiiFacts | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A later feature snapshot of a lead's open label window (``processors/labels``).

    ``at`` is the event time of the score it was taken at; it is labelled like the window's
    own snapshot (by the conversion, the sales "no" or its own horizon).
    """

    at: int
    features: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LeadState:
    """Everything the processors know about one lead.

    Field order is the storage format: only append new fields at the end, with defaults
    (see ``codec``).
    """

    lead_id: str
    workspace_id: str
    contact: Contact = field(default_factory=Contact)
    profile_at: int = -1  # event time of the newest profile update applied
    tracking: bool = True
    marketing: bool | None = None
    stage: Stage | None = None
    history: tuple[StageStep, ...] = ()
    transitions: int = 0
    hits: tuple[EngagementHit, ...] = ()
    fit: float = 0.0
    fit_hits: tuple[RuleHit, ...] = ()
    engagement: float = 0.0  # as computed at ``watermark``; recomputed, never accumulated
    engagement_hits: tuple[RuleHit, ...] = ()
    model_score: float | None = None
    model_version: str | None = None
    top_features: tuple[RuleHit, ...] = ()
    first_touch: Touch | None = None
    last_touch: Touch | None = None
    summary: EngagementSummary = field(default_factory=EngagementSummary)
    answers: dict[str, str] = field(default_factory=dict)
    segments: tuple[str, ...] = ()
    owner_id: str | None = None
    team: str | None = None
    mql_at: int | None = None
    mql_transition_id: str | None = None
    sla_due_at: int | None = None
    sla_breached: bool = False
    recycled_at: int | None = None
    sql_count: int = 0
    features: dict[str, float] = field(default_factory=dict)  # as of the last score
    features_at: int | None = None
    labelled: bool = True  # the current features snapshot already taught a label
    nurture: dict[str, int] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    watermark: int = 0
    seen: tuple[str, ...] = ()
    label_due_at: int | None = None  # features_at + negative horizon, while unlabelled
    episode_after: int = 0  # labelled_at of the last example: no episode opens before it
    # The domain of ``contact.email``, which may be sealed (docs/privacy.md): fit rules and
    # segments test the domain, and the worker derives it at the edge (``PiiFacts``).
    email_domain: str | None = None
    # When event time is due to re-score the lead as its engagement decays (processors/rescore.py).
    rescore_due_at: int | None = None
    # Merges (processors/merges.py): a merged lead is a redirect to its survivor; a
    # survivor waiting for a merged lead's state parks its later records, in order.
    merged_into: str | None = None
    # Pairs (merge id, "from:<merged lead id>") per merge whose LeadTransfer is due.
    awaiting: tuple[str, ...] = ()
    parked: tuple[Parked, ...] = ()
    parked_tick: int | None = None  # a deadline watermark that came while waiting
    early: tuple[LeadTransfer, ...] = ()  # transfers that came before their request
    announced: bool = False  # a redirect whose LeadMerged is out (see merges._on_event)
    # Later snapshots of the open window, oldest first, at most the policy's
    # ``labels.later_snapshots``, each ``labels.snapshot_every_days`` after the one before
    # (empty while ``labelled``; processors/labels.py).
    pending: tuple[Snapshot, ...] = ()
    # Event ids the identity stage re-sent to this lead's survivor when it merged away (a
    # late identify's in-flight records, MergeRequest.resent): dropped here when they come.
    dropping: tuple[str, ...] = ()
    # When the moment the newest snapshot settles over began (``labels.SETTLE_LIMIT_MS``):
    # the open window's score, or its newest later snapshot's; ``None`` while labelled.
    moment_at: int | None = None


def encode_lead_state(state: LeadState) -> bytes:
    """Compact bytes for the RocksDB table (positional JSON, see ``codec``)."""
    return codec.encode(state)


def decode_lead_state(data: bytes) -> LeadState:
    """Inverse of :func:`encode_lead_state`."""
    return codec.decode(LeadState, data)
