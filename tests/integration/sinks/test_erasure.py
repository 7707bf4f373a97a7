"""ClickHouse erasure on the real engine (chdb and HTTP): free text gone, counts unchanged."""

from __future__ import annotations

from typing import Any

from leadflow.processors.events import Context, Event, Kind
from leadflow.sinks.erasure import erase_person
from leadflow.sinks.migrations import migrate
from leadflow.sinks.projection import rows_for_all
from leadflow.sinks.projector import insert_rows

SECRET = "ada.lovelace@example.com"


def person_events() -> list[Event]:
    leaked = Context(
        url=f"https://acme.example/thanks?email={SECRET}&utm_source=news",
        path="/thanks",
        referrer=f"https://mail.example/read?to={SECRET}",
        utm_source="news",
        channel="email",
    )
    return [
        Event("v1", Kind.VISIT, "ws", 1_000, 1_000, anonymous_id="dev-1", context=leaked),
        Event(
            "f1",
            Kind.FORM_SUBMITTED,
            "ws",
            2_000,
            2_000,
            anonymous_id="dev-1",
            lead_id="L1",
            context=leaked,
            payload={"email": SECRET, "answers": {"note": f"write to {SECRET}"}, "company": "A"},
        ),
        Event("d1", Kind.DEAL_WON, "ws", 3_000, 3_000, lead_id="L1", payload={"amount": 99.0}),
        # Someone else, in the same and in another workspace: untouched.
        Event("o1", Kind.VISIT, "ws", 1_500, 1_500, anonymous_id="dev-2", context=leaked),
        Event("o2", Kind.VISIT, "other", 1_500, 1_500, lead_id="L1", context=leaked),
    ]


def leaking(client: Any, db: str) -> list[tuple[str, str]]:
    rows = client.query(
        f"SELECT workspace_id, event_id FROM {db}.events FINAL "
        "WHERE positionCaseInsensitive(concat(url, referrer, payload_json), {s:String}) > 0 "
        "ORDER BY workspace_id, event_id",
        parameters={"s": SECRET},
    ).result_rows
    return [(str(a), str(b)) for a, b in rows]


def test_erasure_blanks_the_persons_free_text_and_keeps_every_row(
    client: Any, clickhouse_db: str
) -> None:
    migrate(client, clickhouse_db)
    insert_rows(client, clickhouse_db, rows_for_all(person_events()))
    assert leaking(client, clickhouse_db) == [
        ("other", "o2"), ("ws", "f1"), ("ws", "o1"), ("ws", "v1"),
    ]  # fmt: skip
    count_sql = (
        f"SELECT count(), sum(amount), groupArray(channel) FROM {clickhouse_db}.events FINAL"
    )
    before = client.query(count_sql).result_rows

    erased = erase_person(client, clickhouse_db, "ws", "L1")

    # dev-1 is linked through the identities row the form submit projected.
    assert erased.devices == ("dev-1",)
    assert erased.rows == 3
    assert leaking(client, clickhouse_db) == [("other", "o2"), ("ws", "o1")]
    assert client.query(count_sql).result_rows == before
    url = client.query(
        f"SELECT url FROM {clickhouse_db}.events FINAL WHERE event_id = 'v1'"
    ).result_rows
    assert url == [("https://acme.example/thanks",)]

    again = erase_person(client, clickhouse_db, "ws", "L1")
    assert again.rows == 3
    assert leaking(client, clickhouse_db) == [("other", "o2"), ("ws", "o1")]
