"""``leadflow erase``: forget one person (crypto-shredding plus the erasure event).

Order matters. The keys go first (tombstones on ``leadflow.pii-keys``, acknowledged), so
from that moment no process can decrypt the person's PII anywhere in the Kafka log. Then
an ``erasure_requested`` event goes to ``leadflow.events`` keyed by the lead: the worker
drops the contact from the lead's state, and the projector blanks the person's free-text
columns in ClickHouse (see ``sinks/erasure.py``). The event carries no email: only the
lead id and who asked.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import click

from leadflow.cli.options import settings_of
from leadflow.processors.events import Event, Kind
from leadflow.processors.identity import derive_lead_id
from leadflow.streams.collector.producer import EventProducer
from leadflow.streams.logs import get_logger
from leadflow.streams.pii.vault import Shredded, Vault
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ErasureDone:
    """What ``leadflow erase`` did: the shredded keys and the erasure event it produced."""

    shredded: Shredded
    event_id: str


def erasure_event(
    workspace_id: str, lead_id: str, requested_by: str, now_ms: int, event_id: str
) -> Event:
    """The ``erasure_requested`` event for a lead (no email in it, by design).

    Example:
        >>> e = erasure_event("ws", "L", "dpo@acme", 5, "x1")
        >>> e.kind.value, e.person_key, dict(e.payload)
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


def erase(
    settings: Settings,
    workspace_id: str,
    lead_id: str,
    devices: tuple[str, ...] = (),
    requested_by: str = "leadflow erase",
) -> ErasureDone:
    """Shred the person's keys, then publish the erasure event (both acknowledged).

    Raises:
        KeyringError: the tombstones were not acknowledged (nothing else was done).
        KafkaUnavailable: the erasure event was not acknowledged (the keys are gone
            already; run the command again: both steps are idempotent).
    """
    import asyncio

    from leadflow.schemas.codec import codec_from_settings

    vault = Vault(settings)
    try:
        shredded = vault.shred(workspace_id, lead_id, devices)
    finally:
        vault.close()
    now_ms = time.time_ns() // 1_000_000  # the request's own time, like the collector's
    event = erasure_event(workspace_id, lead_id, requested_by, now_ms, str(uuid.uuid4()))
    producer = EventProducer(
        settings.kafka_client_config(), EVENTS.name, settings.collector_delivery_timeout_seconds
    )
    producer.start()
    try:
        record = (event.person_key.encode(), codec_from_settings(settings).encode(event))
        asyncio.run(producer.send([record]))
    finally:
        producer.close()
    log.info("pii.erasure_requested", workspace=workspace_id, keys=shredded.keys)
    return ErasureDone(shredded=shredded, event_id=event.event_id)


@click.command("erase")
@click.option("--workspace", "workspace_id", required=True, help="The person's workspace.")
@click.option("--lead-id", help="The lead to erase (the userId the trackers send).")
@click.option(
    "--email",
    help="Erase the lead this email names when it had no userId (derived lead id); "
    "the email itself is never written anywhere.",
)
@click.option(
    "--device",
    "devices",
    multiple=True,
    help="An anonymous id of the person not linked to the lead yet (repeatable).",
)
@click.option("--requested-by", default="leadflow erase", show_default=True)
@click.pass_context
def erase_cmd(
    ctx: click.Context,
    workspace_id: str,
    lead_id: str | None,
    email: str | None,
    devices: tuple[str, ...],
    requested_by: str,
) -> None:
    """Erase a person: shred their PII keys and send the erasure event.

    Afterwards the PII fields of every event of the lead and of its devices read as
    null everywhere in the Kafka log; the worker drops the lead's contact and the
    projector blanks the free text of the person's ClickHouse rows. See docs/privacy.md.
    """
    from leadflow.streams.pii.keyring import KeyringError

    if (lead_id is None) == (email is None):
        raise click.UsageError("give exactly one of --lead-id or --email")
    if email is not None and "@" not in email:
        raise click.BadParameter("not an email address", param_hint="--email")
    lead = lead_id or derive_lead_id(workspace_id, email or "")
    settings = settings_of(ctx)
    try:
        done = erase(settings, workspace_id, lead, devices, requested_by)
    except KeyringError as exc:
        raise click.ClickException(f"nothing erased: {exc}") from None
    s = done.shredded
    click.echo(
        f"lead {s.lead_id}: {s.keys} key(s) shredded over {len(s.subjects)} subject(s) "
        f"({', '.join(s.subjects)}); erasure event {done.event_id} sent"
    )
