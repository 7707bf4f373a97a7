"""Issue 19 (HIGH): a public write key erased anyone knowing only their email.

Before: a cross-origin ``text/plain`` POST (no CORS preflight) of
``{"writeKey": KEY, "event": "Erasure Requested", "properties": {"subject_email": ...}}``
answered 200 and shredded the victim's keys. Now a write key cannot erase at all: erasure
takes an admin key on ``POST /v1/erasure`` (a server, never a browser) and is audited
(who, when, what) and confirmable (``GET /v1/erasure/{id}``). On the real broker.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from leadflow.processors.events import Event, Kind
from leadflow.processors.identity import derive_lead_id
from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.audit import AuditLog
from leadflow.streams.collector.keys import ADMIN, KeyStore
from leadflow.streams.pii.vault import Vault
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, create_topics
from tests.integration.collector.conftest import end_offsets, make_collector, serve
from tests.integration.privacy.test_erasure_kafka import raw_records

# Workspaces of this test only: test_erasure_kafka counts ws-acme's rows before and after.
WS, OTHER = f"ws-auth-{uuid.uuid4().hex[:6]}", f"ws-other-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def settings(kafka: Settings) -> Settings:
    create_topics(kafka)
    return kafka.model_copy(update={"pii_encryption": True})


def _victims_email_opens(settings: Settings, since: dict[int, int], email: str) -> bool:
    codec = codec_from_settings(settings)
    reader = Vault(settings)
    try:
        for _, value, _ in raw_records(settings, EVENTS.name, since):
            event = codec.decode(value)
            if isinstance(event, Event) and event.kind is Kind.IDENTIFY:
                return reader.open(event).payload.get("email") == email
    finally:
        reader.close()
    raise AssertionError("the victim's identify is not in the log")


def test_a_write_key_cannot_erase_and_an_admin_key_erases_audited(
    settings: Settings, tmp_path: Path
) -> None:
    u = uuid.uuid4().hex[:10]
    victim = f"victim.{u}@corp.example"
    keys_file = tmp_path / "keys.json"
    collector, _acme_key = make_collector(settings, keys_file)
    store = KeyStore(keys_file)
    write_key = store.create(WS, lambda: datetime.now(UTC))
    admin_key = store.create(WS, lambda: datetime.now(UTC), role=ADMIN)
    other_admin = store.create(OTHER, lambda: datetime.now(UTC), role=ADMIN)
    since = end_offsets(settings)
    with serve(collector) as url:
        identify = {"userId": f"u-{u}", "anonymousId": f"d-{u}", "traits": {"email": victim}}
        assert httpx.post(f"{url}/v1/identify", json=identify, auth=(write_key, "")).is_success

        # The attack, as a browser on any site sends it: text/plain, key in the body.
        attack = {"writeKey": write_key, "event": "Erasure Requested", "userId": f"u-{u}",
                  "properties": {"subject_email": victim}}  # fmt: skip
        answer = httpx.post(
            f"{url}/v1/track",
            content=json.dumps(attack),
            headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["refused"][0]["reason"] == "forbidden"
        assert _victims_email_opens(settings, since, victim)  # nothing was shredded

        # A write key on the admin API, a browser with the admin key, a wrong key.
        body = {"email": victim, "requested_by": f"ticket {u}"}
        bearer = {"Authorization": f"Bearer {write_key}"}
        assert httpx.post(f"{url}/v1/erasure", json=body, headers=bearer).status_code == 403
        browser = {"Authorization": f"Bearer {admin_key}", "Origin": "https://evil.example"}
        assert httpx.post(f"{url}/v1/erasure", json=body, headers=browser).status_code == 403
        wrong = {"Authorization": "Bearer lfa_nope"}
        assert httpx.post(f"{url}/v1/erasure", json=body, headers=wrong).status_code == 401
        # An admin key as a tracker's key is unknown there.
        assert (
            httpx.post(f"{url}/v1/identify", json=identify, auth=(admin_key, "")).status_code == 401
        )
        assert _victims_email_opens(settings, since, victim)

        # A dry run says what would go, and changes nothing.
        admin = {"Authorization": f"Bearer {admin_key}"}
        by_lead = {"lead_id": f"u-{u}", "devices": [f"d-{u}"], "requested_by": f"ticket {u}"}
        preview = httpx.post(f"{url}/v1/erasure", json={**by_lead, "dry_run": True}, headers=admin)
        assert preview.status_code == 200, preview.text
        assert preview.json()["dry_run"] is True
        assert preview.json()["keys_shredded"] == 1
        assert _victims_email_opens(settings, since, victim)

        # The real thing.
        done = httpx.post(f"{url}/v1/erasure", json=by_lead, headers=admin)
        assert done.status_code == 200, done.text
        receipt = done.json()
        assert receipt["status"] == "done"
        assert receipt["keys_shredded"] == 1
        assert receipt["actor"].startswith("key:")
        assert victim not in done.text
        assert not _victims_email_opens(settings, since, victim)

        # Confirmable: the audit trail says who, when and what; not to another workspace.
        erasure_id = receipt["erasure_id"]
        status = httpx.get(f"{url}/v1/erasure/{erasure_id}", headers=admin)
        assert status.status_code == 200, status.text
        records = status.json()["records"]
        assert [r["status"] for r in records] == ["requested", "done"]
        assert {r["actor"] for r in records} == {receipt["actor"]}
        assert records[-1]["lead_id"] == f"u-{u}"
        assert records[-1]["keys"] == 1
        assert records[-1]["event_id"] == receipt["event_id"]
        foreign = {"Authorization": f"Bearer {other_admin}"}
        assert httpx.get(f"{url}/v1/erasure/{erasure_id}", headers=foreign).status_code == 404

    trail = AuditLog(settings)
    try:
        mine = [
            r
            for r in trail.records()
            if r.workspace_id == WS and r.details.get("requested_by") == f"ticket {u}"
        ]
    finally:
        trail.close()
    assert [(r.action, r.status) for r in mine] == [
        ("erasure.preview", "done"),
        ("erasure", "requested"),
        ("erasure", "done"),
    ]
    assert victim not in repr(mine)
    assert derive_lead_id(WS, victim) not in repr(mine)  # the attack left no trace either
