"""Pure mapping from leadflow objects to ClickHouse rows, table by table.

One inbound :class:`Event` gives an ``events`` row, plus an ``identities`` row when it links
a device to a lead, a ``costs`` row for a campaign cost and a ``deals`` row for a won or lost
deal. Each derived event gives one row in its table. Nothing here talks to ClickHouse, so
the mapping is tested on plain objects.

Missing strings become ``''`` (not NULL): the sorting keys cannot be Nullable and analysts'
``GROUP BY channel`` should not split ``NULL`` from ``''``. Numbers that may be unknown
(company size, amount, model score) stay Nullable.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from leadflow.processors.derived import (
    BecameSQL,
    IdentityLinked,
    LeadMerged,
    LeadScored,
    SlaBreached,
    StageChanged,
)
from leadflow.processors.errors import InvalidEvent
from leadflow.processors.events import Event, Kind
from leadflow.processors.identity import EMAIL_LEAD_FIELD
from leadflow.processors.pii import PII_PAYLOAD_FIELDS
from leadflow.sinks.tables import (
    COSTS,
    DEAD_LETTERS,
    DEALS,
    EVENTS,
    HANDOFFS,
    IDENTITIES,
    LEAD_MERGES,
    SCORES,
    SLA_BREACHES,
    STAGE_TRANSITIONS,
    TableSpec,
)
from leadflow.streams.collector.channels import ChannelInputs, group_channel

Row = tuple[Any, ...]

# Contact PII (and the sealed extra fields) stays out of the analytics copy of the payload
# (erasure must not need a rewrite of ClickHouse); the columns keep only firmographics. The
# email's lead id identity links by is derived from the email, so it stays out with it.
_PII_FIELDS = frozenset(PII_PAYLOAD_FIELDS) | {EMAIL_LEAD_FIELD}
_EMAIL_KINDS = frozenset(
    {Kind.EMAIL_SENT, Kind.EMAIL_OPENED, Kind.EMAIL_CLICKED, Kind.EMAIL_BOUNCED,
     Kind.EMAIL_UNSUBSCRIBED}
)  # fmt: skip


@dataclass(slots=True)
class Rows:
    """Rows per table, in each table's insert column order; ``extend`` to merge batches."""

    by_table: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))

    def add(self, table: TableSpec, row: Row) -> None:
        """Append one row to ``table`` (its length must match the table's columns)."""
        if len(row) != len(table.insert_columns):
            raise InvalidEvent(
                f"{table.name}: row has {len(row)} values, table has "
                f"{len(table.insert_columns)} columns"
            )
        self.by_table[table.name].append(row)

    def extend(self, other: Rows) -> None:
        """Add every row of ``other``."""
        for name, rows in other.by_table.items():
            self.by_table[name].extend(rows)

    def count(self) -> int:
        """Rows over all tables."""
        return sum(len(rows) for rows in self.by_table.values())


def _s(value: object) -> str:
    return "" if value is None else str(value)


def _int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _float(value: object) -> float | None:
    return None if value is None else float(str(value))


def channel_of(event: Event) -> str:
    """The event's channel: the collector's (``context.channel``), else grouped the same way.

    Example:
        >>> from leadflow.processors.events import Context
        >>> channel_of(Event("e", Kind.VISIT, "w", 0, 0, "a", context=Context(channel="email")))
        'email'
        >>> channel_of(Event("e", Kind.VISIT, "w", 0, 0, "a"))
        'direct'
    """
    ctx = event.context
    if event.kind is Kind.CAMPAIGN_COST:
        return _s(event.payload.get("channel"))
    grouped = group_channel(
        ChannelInputs(
            kind=event.kind,
            explicit=ctx.channel,
            utm_source=ctx.utm_source,
            utm_medium=ctx.utm_medium,
            referrer=ctx.referrer,
            url=ctx.url,
            ad_network=event.payload.get("network") if event.kind is Kind.AD_CLICK else None,
        )
    )
    return grouped or ""


def campaign_of(event: Event) -> str:
    """The campaign a touch belongs to: ``utm_campaign``, else the email's or ad's campaign.

    Example:
        >>> campaign_of(Event("e", Kind.AD_CLICK, "w", 0, 0, "a", payload={"campaign": "q3"}))
        'q3'
    """
    campaign = event.context.utm_campaign or event.payload.get("campaign")
    return _s(campaign)


def _payload_json(event: Event) -> str:
    kept = {k: v for k, v in event.payload.items() if k not in _PII_FIELDS}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)


def event_rows(event: Event) -> Rows:
    """The rows one inbound event projects to (``events`` and maybe more).

    Example:
        >>> rows = event_rows(Event("e1", Kind.IDENTIFY, "w", 5, 6, "anon-1", "lead-1"))
        >>> sorted(rows.by_table)
        ['events', 'identities']
    """
    rows = Rows()
    ctx = event.context
    p = event.payload
    rows.add(
        EVENTS,
        (
            event.event_id, event.workspace_id, event.kind.value, event.occurred_at,
            event.received_at, _s(event.anonymous_id), _s(event.lead_id), channel_of(event),
            campaign_of(event), _s(ctx.utm_source), _s(ctx.utm_medium), _s(ctx.utm_campaign),
            _s(ctx.utm_term), _s(ctx.utm_content), _s(ctx.url), _s(ctx.path),
            _s(ctx.referrer), _s(ctx.title), _s(ctx.experiment), _s(ctx.variant),
            _int(p.get("company_size")), _s(p.get("industry")), _s(p.get("country")),
            _float(p.get("amount")), _s(p.get("currency")), _s(p.get("deal_id")),
            _s(p.get("reason")), _s(p.get("action")),
            _s(p.get("name") if event.kind in (Kind.VISIT, Kind.CUSTOM) else p.get("asset_name")),
            _payload_json(event),
        ),
    )  # fmt: skip
    linked = _identity_link(event)
    if linked is not None:
        rows.add(
            IDENTITIES,
            (event.workspace_id, linked[0], linked[1], event.occurred_at, event.event_id,
             event.kind.value),
        )  # fmt: skip
    if event.kind is Kind.CAMPAIGN_COST:
        rows.add(COSTS, _cost_row(event))
    if event.kind in (Kind.DEAL_WON, Kind.DEAL_LOST):
        rows.add(
            DEALS,
            (
                event.event_id, event.workspace_id, _s(event.lead_id), _s(p.get("deal_id")),
                "won" if event.kind is Kind.DEAL_WON else "lost", _float(p.get("amount")),
                _s(p.get("currency")) or "USD", _s(p.get("reason")), event.occurred_at,
            ),
        )  # fmt: skip
    return rows


def _identity_link(event: Event) -> tuple[str, str] | None:
    """``(anonymous_id, lead_id)`` when the event ties a device to a lead."""
    if event.kind is Kind.ALIAS:
        previous = event.payload.get("previous_id")
        if previous and event.lead_id and previous != event.lead_id:
            return str(previous), event.lead_id
        return None
    if event.anonymous_id and event.lead_id:
        return event.anonymous_id, event.lead_id
    return None


def _cost_row(event: Event) -> Row:
    p = event.payload
    try:
        day = date.fromisoformat(str(p["date"]))
        amount = float(p["amount"])
    except (KeyError, ValueError) as exc:
        raise InvalidEvent(f"campaign_cost {event.event_id}: bad date or amount ({exc})") from exc
    return (
        event.event_id, event.workspace_id, day, _s(p.get("channel")), _s(p.get("campaign")),
        amount, _s(p.get("currency")) or "USD", event.occurred_at,
    )  # fmt: skip


def stage_changed_rows(obj: StageChanged) -> Rows:
    """One ``stage_transitions`` row."""
    rows = Rows()
    rows.add(
        STAGE_TRANSITIONS,
        (
            obj.transition_id, obj.workspace_id, obj.lead_id, _s(obj.from_stage),
            obj.to_stage.value, obj.occurred_at, obj.reason, obj.cause_event_id, obj.sequence,
        ),
    )  # fmt: skip
    return rows


def lead_scored_rows(obj: LeadScored) -> Rows:
    """One ``scores`` row (``lead_state`` follows through its materialized view)."""
    rows = Rows()
    rows.add(
        SCORES,
        (
            obj.score_id, obj.workspace_id, obj.lead_id, obj.occurred_at, obj.fit_score,
            obj.engagement_score, obj.model_score, _s(obj.model_version),
            [h.rule for h in obj.top_rules], [h.points for h in obj.top_rules],
            obj.cause_event_id, obj.stage.value, list(obj.segments),
        ),
    )  # fmt: skip
    return rows


def became_sql_rows(obj: BecameSQL) -> Rows:
    """One ``handoffs`` row: the hand-off flattened to what analysts group by."""
    rows = Rows()
    first, last = obj.first_touch, obj.last_touch
    rows.add(
        HANDOFFS,
        (
            obj.transition_id, obj.workspace_id, obj.lead_id, obj.became_sql_at, obj.reason,
            obj.sql_count, _s(obj.owner_id), _s(obj.team), obj.fit_score,
            obj.engagement_score, obj.model_score, _s(obj.model_version),
            _s(obj.contact.company), obj.contact.company_size, _s(obj.contact.industry),
            _s(obj.contact.country), list(obj.segments),
            _s(first.channel if first else None), _s(first.campaign if first else None),
            _s(last.channel if last else None), _s(last.campaign if last else None),
            obj.qualification.framework, obj.qualification.completeness,
            [h.rule for h in obj.top_rules],
        ),
    )  # fmt: skip
    return rows


def sla_breached_rows(obj: SlaBreached) -> Rows:
    """One ``sla_breaches`` row."""
    rows = Rows()
    rows.add(
        SLA_BREACHES,
        (
            obj.breach_id, obj.workspace_id, obj.lead_id, obj.mql_transition_id, obj.mql_at,
            obj.due_at, _s(obj.owner_id),
        ),
    )  # fmt: skip
    return rows


def identity_linked_rows(obj: IdentityLinked) -> Rows:
    """One ``identities`` row from the identity processor's link (``leadflow.identities``)."""
    rows = Rows()
    rows.add(
        IDENTITIES,
        (obj.workspace_id, obj.anonymous_id, obj.lead_id, obj.linked_at, obj.cause_event_id,
         "identity_linked"),
    )  # fmt: skip
    return rows


def lead_merged_rows(obj: LeadMerged) -> Rows:
    """One ``lead_merges`` row per id the merge resolves to the survivor.

    Example:
        >>> m = LeadMerged("m1", "w", "U", "e-1", 5, "identify", "i1", True, ("e-1", "x"))
        >>> [r[2:4] for r in lead_merged_rows(m).by_table["lead_merges"]]
        [('e-1', 'U'), ('x', 'U')]
    """
    rows = Rows()
    for merged in dict.fromkeys((obj.merged_lead_id, *obj.merged_lead_ids)):
        rows.add(
            LEAD_MERGES,
            (obj.merge_id, obj.workspace_id, merged, obj.lead_id, obj.occurred_at, obj.reason,
             obj.cause_event_id, int(obj.adopted_history)),
        )  # fmt: skip
    return rows


_INDEX = re.compile(r"\[\d+\]")
MAX_FIELDS = 20
DEAD_LETTER_STAGES = frozenset({"collector", "worker", "projector", "rekey"})


def _short(text: str, limit: int = 100) -> str:
    return text.strip()[:limit]


def _key_workspace(key: bytes | None) -> str:
    """The workspace of a scoped record key (``["ws", "id"]``), else ``''``."""
    try:
        scoped = json.loads(key or b"")
    except ValueError:
        return ""
    if isinstance(scoped, list) and scoped and isinstance(scoped[0], str):
        return _short(scoped[0], 200)
    return ""


def _field_names(error: str) -> list[str]:
    """The field paths of a collector's ``error`` header, without indexes or values.

    Example:
        >>> _field_names('[{"path": "batch[3].traits.company_size", "message": "51-200"},'
        ...              ' {"path": "batch[3].properties.items[0].x", "message": "?"}]')
        ['properties.items.x', 'traits.company_size']
    """
    try:
        errors = json.loads(error)
    except ValueError:
        return []
    names: set[str] = set()
    for item in errors if isinstance(errors, list) else []:
        path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str):
            continue
        path = _INDEX.sub("", path)
        if path.startswith("batch."):
            path = path[len("batch.") :]
        # A field NAME is schema, not data; one that looks like an address is not kept.
        names.add("<redacted>" if "@" in path else _short(path, 200))
    return sorted(names)[:MAX_FIELDS]


def dead_letter_rows(
    partition: int,
    offset: int,
    key: bytes | None,
    headers: Iterable[tuple[str, bytes | str | None]],
    received_at: int,
    size: int,
) -> Rows:
    """One ``dead_letters`` row from a dead-letter record's headers (never its value).

    The three writers: the collector (``stage: collector``, ``group`` = the workspace,
    ``error`` = JSON field errors), the worker (``leadflow.reason`` = ``Type: message``; the
    workspace from the scoped key) and the projector (``stage: projector``, ``reason``; the
    workspace from the scoped key). Only the reason's type is kept from the worker (its
    message may quote a value).

    Example:
        >>> r = dead_letter_rows(0, 7, b"u1", [("reason", b"invalid"), ("stage", b"collector"),
        ...     ("group", b"acme"), ("source.topic", b"/v1/batch"),
        ...     ("error", b'[{"path": "batch[0].traits.company_size", "message": "x"}]')], 5, 40)
        >>> r.by_table["dead_letters"][0]
        ('0:7', 'acme', 5, 'collector', 'invalid', '/v1/batch', ['traits.company_size'], 40)
        >>> w = dead_letter_rows(1, 2, b'["acme","a1"]',
        ...     [("leadflow.reason", b"InvalidEvent: event e1: bad"),
        ...      ("leadflow.source.topic", b"leadflow.events")], 9, 10)
        >>> w.by_table["dead_letters"][0][1:6]
        ('acme', 9, 'worker', 'InvalidEvent', 'leadflow.events')
    """
    h = {k: (v.decode(errors="replace") if isinstance(v, bytes) else (v or "")) for k, v in headers}
    fields: list[str] = []
    if "leadflow.reason" in h and h.get("stage") not in DEAD_LETTER_STAGES:
        stage = "worker"
        reason = h["leadflow.reason"].split(":", 1)[0]
        source = h.get("leadflow.source.topic", "")
        workspace = _key_workspace(key)
    else:
        stage = h.get("stage", "") if h.get("stage") in DEAD_LETTER_STAGES else "unknown"
        reason = h.get("reason", "")
        source = h.get("source.topic", "")
        workspace = _short(h.get("group", ""), 200) if stage == "collector" else ""
        workspace = workspace or _key_workspace(key)
        if stage == "collector":
            fields = _field_names(h.get("error", ""))
    rows = Rows()
    rows.add(
        DEAD_LETTERS,
        (f"{partition}:{offset}", workspace, int(received_at), stage, _short(reason),
         _short(source, 200), fields, max(0, min(int(size), 2**32 - 1))),
    )  # fmt: skip
    return rows


def rows_for(obj: object) -> Rows:
    """The rows any projected object maps to; other derived events map to none.

    Example:
        >>> rows_for(Event("e1", Kind.VISIT, "w", 5, 6, "anon-1")).count()
        1
    """
    if isinstance(obj, Event):
        return event_rows(obj)
    if isinstance(obj, StageChanged):
        return stage_changed_rows(obj)
    if isinstance(obj, LeadScored):
        return lead_scored_rows(obj)
    if isinstance(obj, BecameSQL):
        return became_sql_rows(obj)
    if isinstance(obj, SlaBreached):
        return sla_breached_rows(obj)
    if isinstance(obj, IdentityLinked):
        return identity_linked_rows(obj)
    if isinstance(obj, LeadMerged):
        return lead_merged_rows(obj)
    return Rows()


def rows_for_all(objects: Iterable[object]) -> Rows:
    """The rows of many objects, merged."""
    rows = Rows()
    for obj in objects:
        rows.extend(rows_for(obj))
    return rows


def as_columns(table: TableSpec, rows: list[Row]) -> Mapping[str, list[Any]]:
    """Rows of ``table`` as ``{column: values}`` (handy in tests and reports)."""
    return {name: [r[i] for r in rows] for i, name in enumerate(table.insert_columns)}
