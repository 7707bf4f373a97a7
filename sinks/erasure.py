"""Erasure in ClickHouse: what of a person the analytics copy may still hold, removed.

The projection already keeps contact PII out of ClickHouse (no email, name, phone, IP or
user agent columns; ``payload_json`` drops those fields, see ``projection._PII_FIELDS``).
What can still carry personal data is free text a sender controls: query strings of the
page URL and referrer (``?email=...``), and the payload copy (qualification answers,
custom properties). Erasure rewrites exactly those columns on the person's ``events``
rows and keeps every row, id, time, channel and campaign, so counts, attribution and
velocity are unchanged.

The person's rows: the lead's own, and those of every device linked to it (the
``identities`` table, plus devices the caller knows). Mutations run with
``mutations_sync = 2`` so the call returns once every replica rewrote its parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from leadflow.sinks.tables import EVENTS, IDENTITIES, check_identifier, on_cluster

ERASED_PAYLOAD = "{}"


@dataclass(frozen=True, slots=True)
class ErasedRows:
    """What a ClickHouse erasure touched."""

    devices: tuple[str, ...]
    rows: int


def devices_sql(database: str) -> str:
    """Devices linked to a lead (parameters ``ws``, ``lead``).

    Example:
        >>> "FROM leadflow.identities" in devices_sql("leadflow")
        True
    """
    db = check_identifier(database, "database")
    where = "workspace_id = {ws:String} AND lead_id = {lead:String} AND anonymous_id != ''"
    return f"SELECT DISTINCT anonymous_id FROM {db}.{IDENTITIES.name} WHERE {where}"  # noqa: S608


def person_rows_condition() -> str:
    """The ``WHERE`` of a person's ``events`` rows (parameters ``ws``, ``lead``, ``devices``)."""
    return (
        "workspace_id = {ws:String} AND "
        "(lead_id = {lead:String} OR anonymous_id IN {devices:Array(String)})"
    )


def count_sql(database: str) -> str:
    """How many ``events`` rows belong to the person (same parameters)."""
    db = check_identifier(database, "database")
    return f"SELECT count() FROM {db}.{EVENTS.name} WHERE {person_rows_condition()}"  # noqa: S608


def erase_sql(database: str, cluster: str | None = None) -> str:
    """The mutation that blanks the person's free-text columns (same parameters).

    Example:
        >>> sql = erase_sql("leadflow")
        >>> sql.startswith("ALTER TABLE leadflow.events UPDATE"), "mutations_sync = 2" in sql
        (True, True)
    """
    db = check_identifier(database, "database")
    return (
        f"ALTER TABLE {db}.{EVENTS.name}{on_cluster(cluster)} UPDATE "
        "url = cutQueryStringAndFragment(url), "
        "referrer = cutQueryStringAndFragment(referrer), "
        f"payload_json = '{ERASED_PAYLOAD}' "
        f"WHERE {person_rows_condition()} SETTINGS mutations_sync = 2"
    )


def erase_person(
    client: Any,
    database: str,
    workspace_id: str,
    lead_id: str,
    devices: Sequence[str] = (),
    cluster: str | None = None,
) -> ErasedRows:
    """Remove what ClickHouse may hold of one person's data; idempotent.

    Args:
        client: a clickhouse-connect client (chdb or HTTP).
        database: the leadflow database.
        workspace_id: the person's workspace.
        lead_id: the person's lead id.
        devices: device ids known besides those in ``identities``.
        cluster: the cluster for ``ON CLUSTER`` (server mode).

    Returns:
        the devices whose rows were included and how many rows were rewritten.
    """
    params: dict[str, Any] = {"ws": workspace_id, "lead": lead_id}
    linked = [str(r[0]) for r in client.query(devices_sql(database), parameters=params).result_rows]
    params["devices"] = sorted(set(linked) | {d for d in devices if d})
    rows = int(client.query(count_sql(database), parameters=params).result_rows[0][0])
    if rows:
        client.command(erase_sql(database, cluster), parameters=params)
    return ErasedRows(devices=tuple(params["devices"]), rows=rows)
