"""The documented downstream consumer reads what leadflow writes, and skips repeats.

It opens a sealed contact with the keys on ``leadflow.pii-keys`` (sealed by leadflow's own
Vault here), reads it as withheld once the person's keys are shredded, and handles plain
contacts (PII encryption off) without the key topic.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import uuid
from pathlib import Path

from confluent_kafka import Producer

from leadflow.processors.derived import (
    BecameSQL,
    Contact,
    EngagementSummary,
    Qualification,
    RuleHit,
    Stage,
    StageStep,
    Touch,
)
from leadflow.processors.events import Event, Kind
from leadflow.schemas.codec import SingleObjectCodec
from leadflow.streams.pii.vault import Vault
from leadflow.streams.settings import Settings
from leadflow.streams.topics import LEAD_BECAME_SQL, create_topics

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location(
    "handoff_consumer", ROOT / "examples/handoff_consumer.py"
)
assert spec is not None
assert spec.loader is not None
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)

HANDOFF = BecameSQL(
    transition_id="t-example-1",
    workspace_id="ws-example",
    lead_id="lead-example",
    became_sql_at=1_767_225_600_000,
    reason="demo_request_icp",
    sql_count=1,
    contact=Contact(
        email="ada@acme.io",
        first_name="Ada",
        last_name="Lovelace",
        company="Acme",
        title="VP Data",
        company_size=3000,
        country="US",
    ),
    segments=("size:enterprise",),
    fit_score=80.0,
    engagement_score=54.5,
    top_rules=(RuleHit("demo_request", 30.0),),
    model_score=0.71,
    model_version="logreg-120",
    top_features=(RuleHit("pricing_views", 0.4),),
    qualification=Qualification("bant", {"budget": "100k"}, 0.25),
    owner_id="rep-ava",
    team="enterprise-na",
    first_touch=Touch("e1", "visit", 1_767_000_000_000, "paid_search", "spring"),
    last_touch=Touch("e9", "demo_requested", 1_767_225_600_000, "direct"),
    engagement=EngagementSummary(visits=4, pricing_views=3, demo_requested=True),
    stage_history=(StageStep(Stage.LEAD, 1_767_100_000_000, "identified"),),
)


SCHEMA = str(ROOT / "schemas/avsc/derived/BecameSQL/v1.avsc")


def publish(settings: Settings, handoff: BecameSQL, times: int = 1) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap, "acks": "all"})
    value = SingleObjectCodec().encode(handoff)
    for _ in range(times):
        producer.produce(LEAD_BECAME_SQL.name, key=handoff.lead_id.encode(), value=value)
    assert producer.flush(30) == 0


def run_example(settings: Settings, company: str) -> list[str]:
    """The example's alert lines for our hand-offs (other tests share the topic)."""
    lines: list[str] = []
    args = ["--bootstrap", settings.bootstrap, "--group", f"example-{uuid.uuid4().hex}",
            "--schema", SCHEMA]  # fmt: skip
    example.main(args, out=lines.append)
    return [line for line in lines if f" at {company} (" in line]


def test_example_consumer_decodes_handoffs_and_skips_repeats(kafka: Settings) -> None:
    create_topics(kafka)
    company = f"Acme-{uuid.uuid4().hex[:6]}"  # plain contact: PII encryption off
    handoff = dataclasses.replace(
        HANDOFF, contact=dataclasses.replace(HANDOFF.contact, company=company)
    )
    publish(kafka, handoff, times=2)  # a re-emission after a crash: the same transition id

    assert run_example(kafka, company) == [
        f"New SQL #1: Ada Lovelace <ada@acme.io> at {company} (VP Data), owner rep-ava, "
        "fit 80 / engagement 54, first touch paid_search, why: demo_request_icp"
    ]


def test_example_consumer_opens_sealed_contacts_until_erasure(kafka: Settings) -> None:
    create_topics(kafka)
    ws, lead = f"ws-ex-{uuid.uuid4().hex[:8]}", f"lead-{uuid.uuid4().hex[:8]}"
    company = f"Sealed-{uuid.uuid4().hex[:6]}"
    person = {"email": "ada@acme.io", "first_name": "Ada", "last_name": "Lovelace",
              "phone": "+1 555 0100"}  # fmt: skip
    vault = Vault(kafka)
    try:
        # As the collector seals a form and the worker carries the values into the hand-off.
        (form,) = vault.seal([Event("f1", Kind.IDENTIFY, ws, 1, 1, lead_id=lead, payload=person)])
        # The seal also writes the email's lead id (email_lead_id, for identity): not contact.
        fields = {name: form.payload[name] for name in person}
        sealed = Contact(**fields, company=company, title="VP Data")
        assert all(str(v).startswith("enc:v2:") for v in fields.values())
        handoff = dataclasses.replace(
            HANDOFF, transition_id=f"t-{lead}", workspace_id=ws, lead_id=lead, contact=sealed
        )
        publish(kafka, handoff)
        # The example and leadflow's own helper open it to the same plaintext.
        assert run_example(kafka, company) == [
            f"New SQL #1: Ada Lovelace <ada@acme.io> at {company} (VP Data), owner rep-ava, "
            "fit 80 / engagement 54, first touch paid_search, why: demo_request_icp"
        ]
        assert vault.open_handoff(handoff).contact == dataclasses.replace(sealed, **person)

        assert vault.shred(ws, lead).keys == 1  # what `leadflow erase` does first
        assert run_example(kafka, company) == [
            f"New SQL #1: contact withheld at {company} (VP Data), owner rep-ava, "
            "fit 80 / engagement 54, first touch paid_search, why: demo_request_icp"
        ]
        gone = vault.open_handoff(handoff).contact
        assert (gone.email, gone.first_name, gone.last_name, gone.phone) == (None,) * 4
        assert gone.company == company
    finally:
        vault.close()
