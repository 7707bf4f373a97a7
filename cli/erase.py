"""``leadflow erase``: forget one person (crypto-shredding plus the erasure event), audited.

The command is one of the two ways to erase (the other is the collector's admin API with an
admin key): it runs where the cluster's credentials are, never with a public write key. The
steps, their order and the audit records are in ``leadflow.streams.pii.erasure``: audit
``requested``, tombstones for every key of the lead and its devices, the ``erasure_requested``
event keyed by the lead (no email), audit ``done``.
"""

from __future__ import annotations

import getpass
import time

import click

from leadflow.cli.options import settings_of, workspace_param
from leadflow.processors.errors import LeadflowError
from leadflow.processors.identity import derive_lead_id
from leadflow.streams.pii.erasure import ErasureReceipt, ErasureRequest, build_eraser
from leadflow.streams.pii.vault import Vault
from leadflow.streams.settings import Settings


def erase(
    settings: Settings,
    workspace_id: str,
    lead_id: str,
    devices: tuple[str, ...] = (),
    requested_by: str = "leadflow erase",
    *,
    dry_run: bool = False,
) -> ErasureReceipt:
    """Erase (or, with ``dry_run``, preview erasing) a lead, as the current OS user.

    Raises:
        LeadflowError: a step was not acknowledged (audited as failed; run it again, every
            step is idempotent), or the audit trail is unreachable (nothing was done).
    """
    vault = Vault(settings) if settings.pii_encryption else None
    eraser = build_eraser(settings, vault, lambda: time.time_ns() // 1_000_000)
    request = ErasureRequest(
        workspace_id=workspace_id,
        lead_id=lead_id,
        devices=devices,
        requested_by=requested_by,
        actor=f"cli:{getpass.getuser()}",
    )
    try:
        return eraser.preview(request) if dry_run else eraser.erase(request)
    finally:
        eraser.close()
        if vault is not None:
            vault.close()


@click.command("erase")
@click.option(
    "--workspace", "workspace_id", required=True, callback=workspace_param,
    help="The person's workspace.",
)  # fmt: skip
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
@click.option("--requested-by", default="leadflow erase", show_default=True,
              help="Who asked (a ticket, the DPO); written to the audit trail.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Say what would be shredded; change nothing.")
@click.pass_context
def erase_cmd(
    ctx: click.Context,
    workspace_id: str,
    lead_id: str | None,
    email: str | None,
    devices: tuple[str, ...],
    requested_by: str,
    dry_run: bool,
) -> None:
    """Erase a person: shred their PII keys and send the erasure event (audited).

    Afterwards the PII fields of every event of the lead and of its devices read as
    null everywhere in the Kafka log; the worker drops the lead's contact and the
    projector blanks the free text of the person's ClickHouse rows. See docs/privacy.md.
    """
    if (lead_id is None) == (email is None):
        raise click.UsageError("give exactly one of --lead-id or --email")
    if email is not None and "@" not in email:
        raise click.BadParameter("not an email address", param_hint="--email")
    lead = lead_id or derive_lead_id(workspace_id, email or "")
    settings = settings_of(ctx)
    try:
        done = erase(settings, workspace_id, lead, devices, requested_by, dry_run=dry_run)
    except LeadflowError as exc:
        raise click.ClickException(f"erasure not completed: {exc}") from None
    subjects = f"{len(done.subjects)} subject(s) ({', '.join(done.subjects)})"
    if dry_run:
        click.echo(
            f"lead {done.lead_id}: would shred {done.keys_shredded} key(s) over {subjects}; "
            f"nothing changed (preview {done.erasure_id}, audited)"
        )
        return
    click.echo(
        f"lead {done.lead_id}: {done.keys_shredded} key(s) shredded over {subjects}; "
        f"erasure event {done.event_id} sent (erasure {done.erasure_id}, audited)"
    )
