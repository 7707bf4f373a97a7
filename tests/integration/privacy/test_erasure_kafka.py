"""Crypto-shredding on the real broker and chdb: collector in, `leadflow erase`, raw bytes out.

One person uses two devices. Everything goes through the real collector (encryption on),
is projected into ClickHouse by the real projector, then erased with the real CLI
command. The test then reads the raw records of every topic the person's data went to
(values, keys and headers) and the ClickHouse tables, looking for the plaintext.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition

from leadflow.cli.erase import erase_cmd
from leadflow.processors.events import Event, Kind
from leadflow.processors.identity import derive_lead_id
from leadflow.schemas.codec import codec_from_settings
from leadflow.sinks.projector import Projector
from leadflow.streams.control import is_control
from leadflow.streams.pii.vault import Vault
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, PII_KEYS, create_topics
from tests.integration.collector.conftest import end_offsets, make_collector, serve

WS = "ws-acme"


def raw_records(
    settings: Settings, topic: str, since: dict[int, int] | None = None
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Every record of ``topic`` after ``since`` (from the start when None), as stored."""
    ends = end_offsets(settings, topic)
    starts = since or dict.fromkeys(ends, 0)
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": "privacy-tests", "log_level": 3}
    )
    consumer.assign([TopicPartition(topic, p, starts.get(p, 0)) for p in ends])
    wanted = sum(max(0, ends[p] - starts.get(p, 0)) for p in ends)
    out: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    misses = seen = 0
    try:
        while seen < wanted and misses < 40:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                misses += 1
                continue
            seen += 1
            if is_control(msg.headers()):
                continue  # the collector's heartbeats: no payload, not events
            out.append((msg.key() or b"", msg.value() or b"", list(msg.headers() or [])))
    finally:
        consumer.close()
    return out


def leaks(records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]], secrets: list[str]) -> set:
    found = set()
    for key, value, headers in records:
        blob = key + value + b"".join(k.encode() + v for k, v in headers)
        found |= {s for s in secrets if s.encode() in blob}
    return found


def post(url: str, key: str, path: str, body: dict[str, Any]) -> None:
    response = httpx.post(f"{url}{path}", json=body, auth=(key, ""), timeout=30)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def privacy_settings(kafka: Settings) -> Settings:
    create_topics(kafka)
    return kafka.model_copy(update={"pii_encryption": True})


def test_erase_shreds_pii_in_kafka_and_clickhouse_and_keeps_the_counts(
    privacy_settings: Settings, clickhouse_session: Any, clickhouse_db: str, tmp_path: Path
) -> None:
    u = uuid.uuid4().hex[:10]
    email, first, last = f"ada.{u}@example.com", f"Adalina{u}", f"Lovelace{u}"
    phone, ip, agent = f"+44 20 {u}", f"2001:db8::{u[:4]}:{u[4:8]}", f"Mozilla/5.0 Privacy{u}"
    # A trait the contract has no field for: kept with the event, sealed like the email.
    profile = f"https://social.example/in/ada-{u}"
    secrets = [email, first, last, phone, ip, agent, profile]
    dev_a, dev_b = f"dev-a-{u}", f"dev-b-{u}"
    lead = derive_lead_id(WS, email)
    consent = {"ip": ip, "userAgent": agent, "consent": {"tracking": True}}

    collector, key = make_collector(privacy_settings, tmp_path / "keys.json")
    assert collector.vault is not None
    before = end_offsets(privacy_settings)
    with serve(collector) as url:
        pricing = {"url": f"https://acme.example/pricing?ref=partner-{u}"}
        post(url, key, "/v1/page", {"anonymousId": dev_a, "context": {**consent, "page": pricing}})
        contact = {"email": email, "first_name": first, "last_name": last, "phone": phone}
        post(url, key, "/v1/track", {"event": "Form Submitted", "anonymousId": dev_a,
             "context": consent, "properties": {**contact, "company": "Analytical"}})  # fmt: skip
        post(url, key, "/v1/identify", {"anonymousId": dev_b, "context": consent,
             "traits": {"email": email, "firstName": first, "profile_url": profile}})  # fmt: skip
        post(url, key, "/v1/page", {"anonymousId": dev_b, "context": consent})

    # Sealed from the start: the event log never held the plaintext.
    mine = raw_records(privacy_settings, EVENTS.name, before)
    assert len(mine) == 4
    assert leaks(mine, secrets) == set()
    # ...but it is readable while the keys exist.
    codec = codec_from_settings(privacy_settings)
    reader = Vault(privacy_settings)
    try:
        opened = [reader.open(codec.decode(value)) for _, value, _ in mine]
    finally:
        reader.close()
    assert all(isinstance(e, Event) for e in opened)
    form = next(e for e in opened if e.kind is Kind.FORM_SUBMITTED)
    assert (form.payload["email"], form.payload["phone"], form.context.ip) == (email, phone, ip)
    assert form.lead_id == lead
    identify = next(e for e in opened if e.kind is Kind.IDENTIFY)
    assert json.loads(identify.payload["extra_json"]) == {"traits": {"profile_url": profile}}

    projector = Projector(
        privacy_settings, clickhouse_session, clickhouse_db, group_id=f"privacy-{u}"
    )
    projector.run_until_idle(max_seconds=120)
    table = f"{clickhouse_db}.events"
    count_sql = (
        f"SELECT kind, count(), uniqExact(anonymous_id) FROM {table} FINAL "
        "WHERE workspace_id = {ws:String} GROUP BY kind ORDER BY kind"
    )
    counts_before = clickhouse_session.query(count_sql, parameters={"ws": WS}).result_rows
    assert f"ref=partner-{u}" in str(
        clickhouse_session.query(f"SELECT url FROM {table} FINAL").result_rows
    )

    result = CliRunner().invoke(
        erase_cmd, ["--workspace", WS, "--email", email], obj=privacy_settings
    )
    assert result.exit_code == 0, result.output
    # The lead's key (none: every event had a device) and both devices' keys.
    assert f"lead {lead}: 2 key(s) shredded over 3 subject(s)" in result.output
    assert email not in result.output

    # Kafka: the person's events, the erasure event and the key topic hold no plaintext,
    # and no process can open the sealed fields any more.
    after = raw_records(privacy_settings, EVENTS.name, before)
    assert len(after) == 5
    assert leaks(after, secrets) == set()
    assert leaks(raw_records(privacy_settings, PII_KEYS.name), secrets) == set()
    fresh = Vault(privacy_settings)
    try:
        reopened = [fresh.open(codec.decode(value)) for _, value, _ in after]
        assert fresh.shred(WS, lead).keys == 0  # erasing again finds nothing left
    finally:
        fresh.close()
    for event in reopened:
        assert isinstance(event, Event)
        assert all(
            event.payload.get(f) is None for f in ("email", "first_name", "phone", "extra_json")
        )
        assert (event.context.ip, event.context.user_agent) == (None, None)
    # The raw topic is read partition by partition: find the erasure event, not the last one.
    erasures = [e for e in reopened if e.kind is Kind.ERASURE_REQUESTED]
    assert [e.lead_id for e in erasures] == [lead]
    # Non-PII survives: kinds, devices, firmographics.
    form_after = next(e for e in reopened if e.kind is Kind.FORM_SUBMITTED)
    assert (form_after.anonymous_id, form_after.payload["company"]) == (dev_a, "Analytical")

    # ClickHouse: the projector applied the erasure; nothing of the person's text is left
    # and every count is what it was (plus the erasure request itself).
    projector = Projector(
        privacy_settings, clickhouse_session, clickhouse_db, group_id=f"privacy-{u}"
    )
    projector.run_until_idle(max_seconds=120)
    rows = clickhouse_session.query(f"SELECT * FROM {table} FINAL").result_rows
    assert [s for s in secrets if s in repr(rows)] == []
    assert f"ref=partner-{u}" not in repr(rows)
    counts_after = clickhouse_session.query(count_sql, parameters={"ws": WS}).result_rows
    assert [r for r in counts_after if r[0] != "erasure_requested"] == counts_before


def test_without_consent_no_ip_or_user_agent_is_stored(
    privacy_settings: Settings, tmp_path: Path
) -> None:
    u = uuid.uuid4().hex[:10]
    ip, agent = f"2001:db8::{u[:4]}", f"Mozilla/5.0 NoConsent{u}"
    collector, key = make_collector(privacy_settings, tmp_path / "keys.json")
    before = end_offsets(privacy_settings)
    with serve(collector) as url:
        context = {"ip": ip, "userAgent": agent}
        post(url, key, "/v1/page", {"anonymousId": f"d1-{u}", "context": context})
        post(url, key, "/v1/page", {"anonymousId": f"d2-{u}",
             "context": {**context, "consent": {"tracking": False}}})  # fmt: skip
        post(url, key, "/v1/page", {"anonymousId": f"d3-{u}",
             "context": {**context, "consent": {"tracking": True}}})  # fmt: skip
    records = raw_records(privacy_settings, EVENTS.name, before)
    codec = codec_from_settings(privacy_settings)
    events = {e.anonymous_id: e for e in (codec.decode(v) for _, v, _ in records)}
    assert isinstance(events[f"d1-{u}"], Event)
    assert events[f"d1-{u}"].context.ip is None  # type: ignore[union-attr]
    assert events[f"d1-{u}"].context.user_agent is None  # type: ignore[union-attr]
    assert events[f"d2-{u}"].context.ip is None  # type: ignore[union-attr]
    # With consent they are kept, sealed.
    sealed = events[f"d3-{u}"].context.ip  # type: ignore[union-attr]
    assert sealed is not None
    assert sealed.startswith("enc:v2:")
    assert leaks(records, [ip, agent]) == set()
