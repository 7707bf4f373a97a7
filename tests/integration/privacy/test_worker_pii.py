"""A real `leadflow worker` on sealed events: PII stays sealed in every log it writes.

The lead's state (its changelog) and the hand-off keep the contact sealed; a consumer with
the keys opens it, and after `leadflow erase` nobody can.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
import zlib
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from leadflow.cli.erase import erase
from leadflow.processors.derived import BecameSQL, LeadMerged, LeadScored
from leadflow.processors.events import Event, Kind, lead_key
from leadflow.processors.identity import derive_lead_id
from leadflow.processors.lead_state import decode_lead_state
from leadflow.streams.kafka_offsets import EndNotReached, read_to_end
from leadflow.streams.pii import vault as vault_module
from leadflow.streams.pii.vault import Vault
from leadflow.streams.settings import Settings
from leadflow.streams.topics import (
    EVENTS_BY_LEAD,
    LEAD_BECAME_SQL,
    LEAD_MERGED,
    LEAD_SCORED,
    create_topics,
)
from tests.integration.pipeline.conftest import WorkerProcess, read, send
from tests.integration.pipeline.journeys import Journey

LEADS_CHANGELOG = "leadflow-leads-changelog"
PHONE = "+1 555 0100"
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
AHEAD = T0 + 200_001 * 3_600_000  # 2048: a writer's stamp far ahead of the clock


@pytest.fixture(scope="module")
def topics(kafka: Settings) -> Settings:
    create_topics(kafka)
    return kafka


@pytest.fixture(scope="module")
def pii_worker(
    topics: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    assert topics.pii_encryption  # the worker subprocess runs with the default: on
    process = WorkerProcess(topics, tmp_path_factory.mktemp("pii-worker"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def raw_values(settings: Settings, topic: str, key: bytes | None = None) -> list[bytes]:
    """Every committed value of ``topic`` (only records with ``key`` when given), log order.

    The worker writes its changelogs in transactions: read committed records only, up to
    the end each partition reports (its last stable offset, past the final commit marker).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": "pii-raw",
            "log_level": 3,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    values: list[bytes] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            pending: dict[tuple[str, int], int | None] = {(topic, p): None}
            messages = read_to_end(
                consumer, pending, deadline=time.monotonic() + 30, on_error=lambda _m: None
            )
            with contextlib.suppress(EndNotReached):  # what was read in 30 s
                for msg in messages:
                    if key is None or msg.key() == key:
                        values.append(msg.value() or b"")
    finally:
        consumer.close()
    return values


def readable(value: bytes) -> bytes:
    """A stored record as bytes a reader can search: state records may be zlib'd."""
    return zlib.decompress(value[1:]) if value[:1] == b"z" else value


def test_pii_stays_sealed_in_state_and_handoff_and_erasure_unseals_nothing(
    topics: Settings, pii_worker: WorkerProcess
) -> None:
    # Every inbound partition's R' ahead of this machine's clock first: an event and a
    # heartbeat of 2048 (test_worker_pipeline's SLA tests once left the session broker
    # there; they now run on a broker of their own). A stamp counts as at most its
    # record's timestamp + LEADFLOW_ORDER_MAX_AHEAD_MS (processors/receive_bound.py), so
    # R' runs that far ahead of the clock. The erasure sorts at its partition's R', so its
    # closing heartbeat must promise past that, not just past the wall clock (it did not:
    # "erasure not processed" in CI, 2026-12-03, with R' at 2048).
    ahead = Journey(f"ws-pii-ahead-{uuid.uuid4().hex[:8]}", start=AHEAD)
    send(topics, [ahead.ev("v1", Kind.VISIT, 0, path="/", channel="direct")])
    journey = Journey(f"ws-pii-{uuid.uuid4().hex[:8]}")
    phase = journey.to_sql_twice()[0]
    phase = [
        dataclasses.replace(e, payload={**e.payload, "phone": PHONE}) if e.payload.get("email")
        else e
        for e in phase
    ]  # fmt: skip
    vault = Vault(topics)
    try:
        sealed = vault.seal(phase)
    finally:
        vault.close()
    form = next(e for e in sealed if e.payload.get("email"))
    assert str(form.payload["email"]).startswith("enc:v2:")
    send(topics, sealed)
    secrets = [s.encode() for s in (journey.email, "Ada", "Lovelace", PHONE)]

    (handoff,) = read(topics, LEAD_BECAME_SQL.name, journey.workspace, expect=1)
    assert isinstance(handoff, BecameSQL)
    assert handoff.lead_id == journey.lead
    # The hand-off carries the contact sealed (firmographics plaintext), and the fit rules
    # saw the email's domain: acme.io is no free-mail domain, so the lead became SQL.
    contact = handoff.contact
    for value in (contact.email, contact.first_name, contact.last_name, contact.phone):
        assert str(value).startswith("enc:v2:")
    assert (contact.company, contact.title) == ("Acme", "VP Data Platform")
    # A downstream consumer with access to the keys opens it.
    reader = Vault(topics)
    try:
        opened = reader.open_handoff(handoff).contact
    finally:
        reader.close()
    assert (opened.email, opened.first_name, opened.last_name, opened.phone) == (
        journey.email, "Ada", "Lovelace", PHONE,
    )  # fmt: skip

    # The raw bytes of every Kafka log the worker wrote for this lead: no plaintext PII.
    # Contract topics are keyed by the lead id, the worker's own logs by lead_key.
    key = lead_key(journey.workspace, journey.lead).encode()
    keys = {LEAD_BECAME_SQL.name: journey.lead.encode(), LEADS_CHANGELOG: key,
            EVENTS_BY_LEAD.name: key}  # fmt: skip
    logs = {
        topic: [readable(v) for v in raw_values(topics, topic, topic_key)]
        for topic, topic_key in keys.items()
    }
    assert all(logs.values()), {topic: len(values) for topic, values in logs.items()}
    for topic, values in logs.items():
        for secret in secrets:
            assert not any(secret in v for v in values), (topic, secret)
    states = [decode_lead_state(v) for v in raw_values(topics, LEADS_CHANGELOG, key)]
    assert any(str(state.contact.email).startswith("enc:v2:") for state in states)
    assert all(state.contact.email is None or "@" not in state.contact.email for state in states)

    done = erase(topics, journey.workspace, journey.lead)
    assert done.keys_shredded == 1  # the one device's key
    deadline = time.monotonic() + 90
    while True:
        scored = read(topics, LEAD_SCORED.name, journey.workspace, expect=0, settle=1.0)
        if any(isinstance(s, LeadScored) and s.cause_event_id == done.event_id for s in scored):
            break
        assert time.monotonic() < deadline, f"erasure not processed:\n{pii_worker.tail()}"

    # After erasure the past hand-off and every old state record still hold the sealed
    # contact, but nobody can open it any more: it reads as null.
    reader = Vault(topics)
    try:
        gone = reader.open_handoff(handoff).contact
        states = [decode_lead_state(v) for v in raw_values(topics, LEADS_CHANGELOG, key)]
        old = [reader.open_contact(journey.workspace, s.contact) for s in states]
    finally:
        reader.close()
    assert (gone.email, gone.first_name, gone.last_name, gone.phone) == (None,) * 4
    assert gone.company == "Acme"
    assert all((c.email, c.first_name, c.last_name, c.phone) == (None,) * 4 for c in old)
    latest = states[-1]
    assert (latest.contact.email, latest.contact.first_name, latest.email_domain) == (None,) * 3
    assert latest.answers == {}
    for secret in secrets:
        assert not any(secret in readable(v) for v in raw_values(topics, LEADS_CHANGELOG, key))


def test_a_sealed_email_declared_with_a_user_id_merges_that_emails_lead(
    topics: Settings, pii_worker: WorkerProcess
) -> None:
    """Issue 14: a form on the laptop, then identify(userId, email) on the phone, sealed.

    The worker cannot read a sealed email; the collector's seal writes the email's lead id
    (``email_lead_id``), so the form's lead still merges into the user.
    """
    workspace = f"ws-pii-merge-{uuid.uuid4().hex[:8]}"
    email = "grace@navy.example"
    form = Event("pm-form", Kind.FORM_SUBMITTED, workspace, T0, T0, anonymous_id="laptop",
                 payload={"email": email, "company": "Navy"})  # fmt: skip
    identify = Event("pm-identify", Kind.IDENTIFY, workspace, T0 + 60_000, T0 + 60_000,
                     anonymous_id="phone", lead_id="user-grace",
                     payload={"email": email, "title": "Rear Admiral"})  # fmt: skip
    vault = Vault(topics)
    try:
        sealed = vault.seal([form, identify])
    finally:
        vault.close()
    assert all(str(e.payload["email"]).startswith("enc:v2:") for e in sealed)
    send(topics, sealed)
    (merged,) = read(topics, LEAD_MERGED.name, workspace, expect=1)
    assert isinstance(merged, LeadMerged)
    assert (merged.lead_id, merged.merged_lead_id, merged.reason) == (
        "user-grace", derive_lead_id(workspace, email), "email",
    )  # fmt: skip


def test_a_value_that_does_not_open_for_another_reason_than_erasure_is_logged_and_counted(
    topics: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged ciphertext and a key the topic does not hold read as None, loudly.

    An erased person's values read as None too, quietly: that is the erasure working. The
    other two used to look exactly like it.
    """
    logged: list[tuple[str, str]] = []
    monkeypatch.setattr(
        vault_module.log, "warning", lambda event, **kw: logged.append((event, kw["field"]))
    )
    vault = Vault(topics)
    try:
        workspace = f"ws-{uuid.uuid4().hex[:8]}"
        event = Event(
            f"e-{uuid.uuid4().hex[:8]}", Kind.IDENTIFY, workspace, T0, T0,
            lead_id="L1", payload={"email": "ada@example.com", "phone": PHONE},
        )  # fmt: skip
        (sealed,) = vault.seal([event])
        email, phone = sealed.payload["email"], sealed.payload["phone"]
        assert email.startswith("enc:")
        assert phone.startswith("enc:")
        damaged = email[:-4] + ("AAAA" if not email.endswith("AAAA") else "BBBB")
        unknown = "enc:v2:0123456789abcdef:" + email.rsplit(":", 1)[1]
        changed = dataclasses.replace(
            sealed, payload={**sealed.payload, "email": damaged, "phone": unknown}
        )
        assert vault.counts() == {"pii_unknown_keys": 0, "pii_unopenable": 0}
        assert vault.open(sealed).payload["email"] == "ada@example.com"

        opened = vault.open(changed)

        assert (opened.payload["email"], opened.payload["phone"]) == (None, None)
        assert vault.counts() == {"pii_unknown_keys": 1, "pii_unopenable": 1}
        vault.open(changed)  # counted per value, logged once per key and reason
        assert vault.counts() == {"pii_unknown_keys": 2, "pii_unopenable": 2}
        assert sorted(logged) == [("pii.key_unknown", "phone"), ("pii.unopenable", "email")]
    finally:
        vault.close()
