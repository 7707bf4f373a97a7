"""A device that withdrew tracking consent is linked to no lead in ClickHouse (chdb and HTTP)."""

from __future__ import annotations

from typing import Any

from leadflow.processors.events import Event, Kind
from leadflow.sinks.migrations import migrate
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import insert_rows


def journey(device: str, lead: str, *, consent: list[bool]) -> list[Event]:
    """Two anonymous visits, consent changes in between, then a form that names the lead."""
    events = [Event(f"{device}-v1", Kind.VISIT, "ws", 1_000, 1_000, anonymous_id=device)]
    for i, tracking in enumerate(consent):
        events.append(
            Event(
                f"{device}-c{i}",
                Kind.CONSENT_CHANGED,
                "ws",
                1_500 + i,
                1_500 + i,
                anonymous_id=device,
                payload={"tracking": tracking},
            )
        )
    events.append(Event(f"{device}-v2", Kind.VISIT, "ws", 2_000, 2_000, anonymous_id=device))
    events.append(Event(f"{device}-f1", Kind.FORM_SUBMITTED, "ws", 3_000, 3_000, device, lead))
    return events


def test_only_devices_with_tracking_consent_credit_their_visits_to_the_lead(
    client: Any, clickhouse_db: str
) -> None:
    migrate(client, clickhouse_db)
    events = [
        *journey("dev-never-asked", "L1", consent=[]),
        *journey("dev-withdrew", "L2", consent=[False]),
        *journey("dev-changed-mind", "L3", consent=[False, True]),
    ]
    insert_rows(client, clickhouse_db, rows_for_all(events))

    linked = client.query(
        f"SELECT anonymous_id, lead_id FROM {clickhouse_db}.v_identities ORDER BY anonymous_id"
    ).result_rows
    assert linked == [("dev-changed-mind", "L3"), ("dev-never-asked", "L1")]
    visits = client.query(
        f"SELECT event_id, person_id FROM {clickhouse_db}.v_person_events "
        "WHERE kind = 'visit' ORDER BY event_id"
    ).result_rows
    assert visits == [
        ("dev-changed-mind-v1", "L3"),
        ("dev-changed-mind-v2", "L3"),
        ("dev-never-asked-v1", "L1"),
        ("dev-never-asked-v2", "L1"),
        ("dev-withdrew-v1", "anon:dev-withdrew"),
        ("dev-withdrew-v2", "anon:dev-withdrew"),
    ]
