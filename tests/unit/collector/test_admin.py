"""Issue 19: only a secret admin key erases, through the admin API; a write key never does.

In-process (ASGI), with a recording audit trail and event producer instead of Kafka; the real
broker path is tests/integration/privacy/test_erasure_authority.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadflow.processors.events import Event, Kind
from leadflow.processors.identity import derive_lead_id
from leadflow.streams.audit import AuditRecord
from leadflow.streams.collector.admin import bearer_token
from leadflow.streams.collector.keys import ADMIN, KeyStore
from leadflow.streams.pii.erasure import Eraser
from tests.unit.collector.test_http import CODEC, Harness


class Trail:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)

    def find(self, workspace_id: str, audit_id: str) -> list[AuditRecord]:
        return [r for r in self.records if (r.workspace_id, r.audit_id) == (workspace_id, audit_id)]

    def close(self) -> None:
        pass


class Events:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def heartbeat(self, topic: str, value: int) -> None:
        pass

    def send(self, records: Sequence[tuple[str, bytes, bytes | None]]) -> None:
        self.sent.extend(records)

    def close(self) -> None:
        pass


class AdminHarness(Harness):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        store = KeyStore(tmp_path / "keys.json")
        now = lambda: datetime(2026, 3, 1, tzinfo=UTC)  # noqa: E731
        self.admin_key = store.create("acme", now, role=ADMIN)
        self.other_admin = store.create("globex", now, role=ADMIN)
        self.trail, self.produced = Trail(), Events()
        ids = iter(f"id-{i}" for i in range(1000))
        self.collector.eraser = Eraser(
            vault=None,
            audit=self.trail,  # type: ignore[arg-type]
            events=self.produced,  # type: ignore[arg-type]
            encode=CODEC.encode,
            clock_ms=lambda: 1_772_366_400_000,
            new_id=lambda: next(ids),
        )
        from leadflow.streams.collector.app import create_app

        self.app = create_app(self.collector, manage_sink=False)

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                content = None if body is None else json.dumps(body).encode()
                return await client.request(method, path, content=content, headers=headers)

        return asyncio.run(go())


@pytest.fixture
def a(tmp_path: Path) -> AdminHarness:
    return AdminHarness(tmp_path)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ERASE = {"email": "victim@corp.example", "requested_by": "DPO ticket 17"}


def test_a_write_key_cannot_send_an_erasure_request_in_any_form(a: AdminHarness) -> None:
    attack = {"writeKey": a.key, "event": "Erasure Requested",
              "properties": {"subject_email": "victim@corp.example"}, "userId": "x"}  # fmt: skip
    answer = a.post("/v1/track", key=None, content=json.dumps(attack).encode(),
                    headers={"Content-Type": "text/plain"})  # fmt: skip
    assert answer.status_code == 400
    (refusal,) = answer.json()["refused"]
    assert refusal["reason"] == "forbidden"
    assert "admin key" in refusal["errors"][0]["message"]
    batch = {"batch": [{"type": "track", "event": "Erasure Requested", "userId": "x"},
                       {"type": "page", "anonymousId": "a1"}]}  # fmt: skip
    answer = a.post("/v1/batch", batch)
    assert answer.status_code == 200
    assert [r["reason"] for r in answer.json()["refused"]] == ["forbidden"]
    assert [e.kind for e in a.events()] == [Kind.VISIT]
    assert a.produced.sent == []
    assert a.trail.records == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer lfa_unknown"}, 401),
        ({"Authorization": "Basic bGZhX3g6"}, 401),
        ("write", 403),
        ("admin+origin", 403),
    ],
)
def test_the_admin_api_takes_only_an_admin_key_from_a_server(
    a: AdminHarness, headers: Any, status: int
) -> None:
    if headers == "write":
        headers = bearer(a.key)
    elif headers == "admin+origin":
        headers = {**bearer(a.admin_key), "Origin": "https://www.acme.example"}
    answer = a.call("POST", "/v1/erasure", ERASE, headers)
    assert answer.status_code == status
    assert answer.json()["success"] is False
    assert a.produced.sent == []
    assert a.trail.records == []


def test_an_admin_key_is_not_a_write_key(a: AdminHarness) -> None:
    assert a.post("/v1/page", {"anonymousId": "a1"}, key=a.admin_key).status_code == 401


def test_erasure_is_audited_before_and_after_and_confirmable(a: AdminHarness) -> None:
    answer = a.call("POST", "/v1/erasure", ERASE, bearer(a.admin_key))
    assert answer.status_code == 200, answer.text
    receipt = answer.json()
    lead = derive_lead_id("acme", "victim@corp.example")
    assert (receipt["lead_id"], receipt["status"], receipt["dry_run"]) == (lead, "done", False)
    assert "victim" not in answer.text
    ((topic, key, value),) = a.produced.sent
    event = CODEC.decode(value or b"")
    assert isinstance(event, Event)
    assert (topic, event.kind, event.lead_id) == ("leadflow.events", Kind.ERASURE_REQUESTED, lead)
    assert event.payload["requested_by"] == "DPO ticket 17"
    assert key == event.person_key.encode()
    assert [(r.action, r.status) for r in a.trail.records] == [
        ("erasure", "requested"),
        ("erasure", "done"),
    ]
    done = a.trail.records[-1]
    assert (
        done.actor
        == receipt["actor"]
        == f"key:{KeyStore(a.collector.keys.path).lookup(a.admin_key).key_id}"
    )  # type: ignore[union-attr]
    assert done.details["event_id"] == event.event_id
    assert "victim" not in repr(a.trail.records)

    status = a.call("GET", f"/v1/erasure/{receipt['erasure_id']}", None, bearer(a.admin_key))
    assert status.status_code == 200
    assert status.json()["status"] == "done"
    # Another workspace's admin key does not learn that it exists.
    other = a.call("GET", f"/v1/erasure/{receipt['erasure_id']}", None, bearer(a.other_admin))
    assert other.status_code == 404


def test_a_dry_run_changes_nothing_and_is_audited_as_a_preview(a: AdminHarness) -> None:
    answer = a.call("POST", "/v1/erasure", {**ERASE, "dry_run": True}, bearer(a.admin_key))
    assert answer.status_code == 200
    assert answer.json()["dry_run"] is True
    assert answer.json()["event_id"] is None
    assert a.produced.sent == []
    assert [(r.action, r.status) for r in a.trail.records] == [("erasure.preview", "done")]


@pytest.mark.parametrize(
    "body",
    [
        {"requested_by": "x"},
        {"lead_id": "L", "email": "a@b.c", "requested_by": "x"},
        {"lead_id": "L"},
        {"lead_id": "L", "requested_by": "x", "extra": 1},
        {"email": "not-an-email", "requested_by": "x"},
        "not an object",
    ],
)
def test_a_bad_erasure_request_is_a_400_naming_the_problem(a: AdminHarness, body: Any) -> None:
    answer = a.call("POST", "/v1/erasure", body, bearer(a.admin_key))
    assert answer.status_code == 400
    assert answer.json()["errors"]
    assert a.produced.sent == []


def test_bearer_token_doctest() -> None:
    assert bearer_token("bearer  k ") == "k"
