"""Erasing a person: audited, acknowledged step by step, the same for the API and the CLI.

Only a secret credential erases: an admin key on the collector's ``POST /v1/erasure`` or
``leadflow erase`` on a machine that holds the cluster's credentials. A public write key
cannot (docs/privacy.md, "Threat model").

In order, each step acknowledged by Kafka before the next:

1. audit ``requested`` (who, when, what) on ``leadflow.audit``;
2. every key of the lead and of its devices is tombstoned (``leadflow.pii-keys``): from here
   on no process can open the person's PII anywhere in the log;
3. an ``erasure_requested`` event (lead id and who asked; no email) on ``leadflow.events``:
   the worker drops the lead's contact, the projector blanks the person's ClickHouse rows;
4. audit ``done`` with what was shredded and the event's id (or ``failed`` with the reason).

Every step is idempotent: a retry (same request) shreds nothing more and sends the event
again, which the worker and the projector apply as often as they like.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event, Kind
from leadflow.streams.acked_producer import AckedProducer
from leadflow.streams.audit import AuditLog, AuditRecord, utc_iso
from leadflow.streams.logs import Throttle, get_logger
from leadflow.streams.pii.vault import Shredded, Vault
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS

log = get_logger(__name__)

ACTION = "erasure"
PREVIEW = "erasure.preview"


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    """What to erase and on whose authority.

    Attributes:
        workspace_id: the person's workspace (the credential's own).
        lead_id: the lead (an email is turned into its derived lead id before this).
        devices: anonymous ids of the person not linked to the lead yet.
        requested_by: the requester's own words (a ticket, a DPO's address); audited.
        actor: the credential: ``key:<admin key id>`` or ``cli:<user>``.
    """

    workspace_id: str
    lead_id: str
    devices: tuple[str, ...] = ()
    requested_by: str = ""
    actor: str = "cli"


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """What an erasure did (or, for a dry run, would do): the confirmation a caller keeps."""

    erasure_id: str
    workspace_id: str
    lead_id: str
    subjects: tuple[str, ...]
    keys_shredded: int
    links_removed: int
    event_id: str | None
    requested_by: str
    actor: str
    requested_at: str
    dry_run: bool = False
    status: str = "done"

    def as_json(self) -> dict[str, Any]:
        """The receipt as a JSON object (API answer, CLI output)."""
        return {
            "erasure_id": self.erasure_id,
            "status": self.status,
            "dry_run": self.dry_run,
            "workspace_id": self.workspace_id,
            "lead_id": self.lead_id,
            "subjects": list(self.subjects),
            "keys_shredded": self.keys_shredded,
            "links_removed": self.links_removed,
            "event_id": self.event_id,
            "requested_by": self.requested_by,
            "actor": self.actor,
            "requested_at": self.requested_at,
        }


def build_eraser(settings: Settings, vault: Vault | None, clock_ms: Callable[[], int]) -> Eraser:
    """An :class:`Eraser` on the real topics (the collector's admin API, ``leadflow erase``)."""
    from leadflow.schemas.codec import codec_from_settings

    return Eraser(
        vault=vault,
        audit=AuditLog(settings),
        events=AckedProducer(settings, settings.collector_delivery_timeout_seconds),
        encode=codec_from_settings(settings).encode,
        clock_ms=clock_ms,
        new_id=lambda: str(uuid.uuid4()),
        received_floor=lambda: received_floor(settings),
    )


_TAIL = -2000  # librdkafka's RD_KAFKA_OFFSET_TAIL_BASE: _TAIL - n is "n before the end"


def received_floor(settings: Settings, timeout: float = 10.0) -> int | None:
    """The highest ``R'`` the worker's identity stage committed for any inbound partition.

    ``R'`` is the running maximum of a partition's ``received_at`` values and heartbeats
    (``processors/ordering.py``); the identity stage keeps it in its ``received`` store, one
    key per inbound partition, changelogged. It can be ahead of this machine's clock: a
    writer whose clock runs ahead, or one that wrote simulated future times, moves it up to
    its record's timestamp + ``LEADFLOW_ORDER_MAX_AHEAD_MS`` (``processors/receive_bound.py``;
    further with a larger bound, or before the bound existed), and a record sorts at its
    partition's ``R'``. An erasure's heartbeat must promise past it, or the erasure waits for
    someone else's. (Its own heartbeat counts as at most its timestamp + the bound too: an
    ``R'`` further ahead than that releases it only once the clock gets there.)
    ``None`` when no worker ever committed one (or the changelog cannot be read in time).

    Read errors are retried by the client until ``timeout``; each kind is logged
    (``pii.erasure_floor_read_error``, at most every 10 s per partition and error) and a read
    that ends short says the last one (``pii.erasure_floor_partial``). A changelog that does
    not exist, or whose metadata comes with an error, is ``pii.erasure_floor_unread`` with
    the reason, as is a failed metadata request.
    """
    from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

    from leadflow.streams.engine.stores import changelog_topic
    from leadflow.streams.kafka_offsets import EndNotReached, read_to_end
    from leadflow.streams.stages.identity import CLOCK, CLOCK_KEY

    topic = changelog_topic(CLOCK).name
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "leadflow-erasure-floor",  # never commits: assign() only
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            "log_level": 3,
        }
    )
    found: int | None = None
    deadline = time.monotonic() + timeout
    said = Throttle(10.0)
    read_errors = 0
    last_error: str | None = None

    def read_error(message: Message) -> None:
        # The client retries (a broker away, a leader moving): go on until the deadline, but
        # say it, or a floor read short of its end (a low floor) has no cause in the log.
        nonlocal read_errors, last_error
        error = message.error()  # never None here: read_to_end passes errors only
        read_errors += 1
        last_error = str(error)
        where = f"{message.topic()}:{message.partition()}"
        if said.due(f"{where}:{error.name() if error is not None else ''}"):
            log.warning("pii.erasure_floor_read_error", partition=where, error=last_error)

    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            # Usually no worker ever ran against this cluster (its identity stage creates
            # the changelog); the reason tells that apart from a metadata error.
            why = "not in the cluster's metadata" if meta is None else str(meta.error)
            log.warning("pii.erasure_floor_unread", topic=topic, error=why)
            return None
        # R' only grows: a partition's last value is its largest. Its last few entries are
        # enough (each identity batch writes one value and one commit marker).
        consumer.assign([TopicPartition(topic, p, _TAIL - 64) for p in meta.partitions])
        pending: dict[tuple[str, int], int | None] = dict.fromkeys(
            ((topic, p) for p in meta.partitions), None
        )
        # Until EOF on every partition; errors are retried by the client within the deadline.
        for msg in read_to_end(consumer, pending, deadline=deadline, on_error=read_error):
            if msg.key() == CLOCK_KEY and msg.value():
                value = int(msg.value() or b"0")
                found = value if found is None else max(found, value)
    except EndNotReached as exc:  # what was read in time: the floor may be low
        log.warning(
            "pii.erasure_floor_partial",
            error=str(exc),
            read_errors=read_errors,
            last_error=last_error,
        )
    except (KafkaException, ValueError) as exc:
        log.warning("pii.erasure_floor_unread", error=str(exc))
    finally:
        consumer.close()
    return found


def erasure_event(
    workspace_id: str, lead_id: str, requested_by: str, now_ms: int, event_id: str
) -> Event:
    """The ``erasure_requested`` event for a lead (no email in it, by design).

    Example:
        >>> e = erasure_event("ws", "L", "dpo@acme", 5, "x1")
        >>> e.kind.value, e.lead_id, dict(e.payload)
        ('erasure_requested', 'L', {'subject_email': None, 'requested_by': 'dpo@acme'})
    """
    return Event(
        event_id=event_id,
        kind=Kind.ERASURE_REQUESTED,
        workspace_id=workspace_id,
        occurred_at=now_ms,
        received_at=now_ms,
        lead_id=lead_id,
        payload={"subject_email": None, "requested_by": requested_by},
    )


def _record(
    request: ErasureRequest, erasure_id: str, action: str, status: str, at_ms: int, **extra: Any
) -> AuditRecord:
    details = {
        "lead_id": request.lead_id,
        "devices": list(request.devices),
        "requested_by": request.requested_by,
        **extra,
    }
    return AuditRecord(
        erasure_id, action, status, request.workspace_id, request.actor, utc_iso(at_ms), details
    )


@dataclass
class Eraser:
    """The erasure steps with their collaborators injected (the CLI and the API build one).

    Attributes:
        vault: the key view and its tombstone producer (None: PII encryption is off and
            there are no keys to shred; the event and the audit still happen).
        audit: the audit trail.
        events: produces the erasure event to ``leadflow.events`` (acknowledged).
        encode: event -> Avro bytes (the project codec).
        clock_ms: the request's own time, UTC epoch ms.
        new_id: ids of erasures and of their events.
        received_floor: the highest ``R'`` the worker committed (:func:`received_floor`;
            ``None``: unknown), so the closing heartbeat promises past where the event sorts.
    """

    vault: Vault | None
    audit: AuditLog
    events: AckedProducer
    encode: Callable[[Event], bytes]
    clock_ms: Callable[[], int]
    new_id: Callable[[], str]
    received_floor: Callable[[], int | None] = lambda: None

    def send_event(self, event: Event) -> None:
        """Produce ``event`` keyed by its person; return once Kafka acknowledged it.

        Then a heartbeat on every partition of ``leadflow.events`` past where the event
        sorts, so the worker releases it without waiting for the collector's next traffic
        (streams/control.py). The event sorts at its partition's ``R'``: its own
        ``received_at``, or higher if that partition already promised more (a writer's
        clock ahead of this one); the heartbeat is past both.
        """
        self.events.send([(EVENTS.name, event.person_key.encode(), self.encode(event))])
        self.events.heartbeat(EVENTS.name, self.heartbeat_value(event))

    def heartbeat_value(self, event: Event) -> int:
        """The heartbeat that releases ``event``: past its time, the wall clock and ``R'``.

        Example:
            >>> from leadflow.streams.pii.erasure import erasure_event
            >>> e = erasure_event("ws", "L", "dpo", 1_000, "x")
            >>> eraser = Eraser(None, None, None, None, lambda: 0, str,  # type: ignore[arg-type]
            ...                 received_floor=lambda: 2_487_369_600_002)
            >>> eraser.heartbeat_value(e)
            2487369600003
        """
        beat = max(event.received_at + 1, time.time_ns() // 1_000_000)
        floor = self.received_floor()
        if floor is None:
            # The erasure may then wait (docs/privacy.md, "When the worker applies an
            # erasure"): the operator must know why, and what releases it.
            log.warning(
                "pii.erasure_floor_unknown",
                event_id=event.event_id,
                heartbeat=beat,
                means="no committed R' read (see the warning before this one, if any): the "
                "heartbeat promises past this event and the wall clock only; if an inbound "
                "partition's R' is ahead of that, the worker applies the erasure at the "
                "next heartbeat past it (the collector's next traffic, or run the erasure "
                "again: it is idempotent)",
            )
            return beat
        return max(beat, floor + 1)

    def close(self) -> None:
        """Release the audit and event producers (the vault belongs to the caller)."""
        self.audit.close()
        self.events.close()

    def preview(self, request: ErasureRequest) -> ErasureReceipt:
        """What :meth:`erase` would shred now, changing nothing; audited as a preview."""
        erasure_id, now = self.new_id(), self.clock_ms()
        plan = self._plan(request, preview=True)
        receipt = self._receipt(request, erasure_id, now, plan, None, dry_run=True)
        self.audit.write(
            _record(
                request,
                erasure_id,
                PREVIEW,
                "done",
                now,
                subjects=list(plan.subjects),
                keys=plan.keys,
            )
        )
        return receipt

    def erase(self, request: ErasureRequest) -> ErasureReceipt:
        """Shred the person's keys and send the erasure event, audited before and after.

        Raises:
            AuditError: the audit trail did not acknowledge ``requested`` (nothing was done).
            LeadflowError: a later step was not acknowledged (audited as ``failed``; the
                request may be repeated: every step is idempotent).
        """
        erasure_id, now = self.new_id(), self.clock_ms()
        self.audit.write(_record(request, erasure_id, ACTION, "requested", now))
        try:
            plan = self._plan(request, preview=False)
            event = erasure_event(
                request.workspace_id, request.lead_id, request.requested_by, now, self.new_id()
            )
            self.send_event(event)
        except LeadflowError as exc:
            self.audit.write(
                _record(request, erasure_id, ACTION, "failed", self.clock_ms(), error=str(exc))
            )
            raise
        self.audit.write(
            _record(
                request,
                erasure_id,
                ACTION,
                "done",
                self.clock_ms(),
                subjects=list(plan.subjects),
                keys=plan.keys,
                links=plan.links,
                event_id=event.event_id,
            )
        )
        log.info("pii.erased", workspace=request.workspace_id, erasure=erasure_id,
                 keys=plan.keys, actor=request.actor)  # fmt: skip
        return self._receipt(request, erasure_id, now, plan, event.event_id, dry_run=False)

    def _plan(self, request: ErasureRequest, *, preview: bool) -> Shredded:
        if self.vault is None:
            return Shredded(request.workspace_id, request.lead_id, (request.lead_id,), 0, 0)
        act = self.vault.preview_shred if preview else self.vault.shred
        return act(request.workspace_id, request.lead_id, request.devices)

    @staticmethod
    def _receipt(
        request: ErasureRequest,
        erasure_id: str,
        now: int,
        plan: Shredded,
        event_id: str | None,
        *,
        dry_run: bool,
    ) -> ErasureReceipt:
        return ErasureReceipt(
            erasure_id=erasure_id,
            workspace_id=request.workspace_id,
            lead_id=request.lead_id,
            subjects=plan.subjects,
            keys_shredded=plan.keys,
            links_removed=plan.links,
            event_id=event_id,
            requested_by=request.requested_by,
            actor=request.actor,
            requested_at=utc_iso(now),
            dry_run=dry_run,
        )
