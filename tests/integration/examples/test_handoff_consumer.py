"""The documented downstream consumer reads what leadflow writes, and skips repeats."""

from __future__ import annotations

import importlib.util
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
from leadflow.schemas.codec import SingleObjectCodec
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
    contact=Contact(company="Acme", title="VP Data", company_size=3000, country="US"),
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


def test_example_consumer_decodes_handoffs_and_skips_repeats(kafka: Settings) -> None:
    create_topics(kafka)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
    value = SingleObjectCodec().encode(HANDOFF)
    for _ in range(2):  # a re-emission after a crash carries the same transition id
        producer.produce(LEAD_BECAME_SQL.name, key=HANDOFF.lead_id.encode(), value=value)
    assert producer.flush(30) == 0

    lines: list[str] = []
    args = ["--bootstrap", kafka.bootstrap, "--group", "example-test",
            "--schema", str(ROOT / "schemas/avsc/derived/BecameSQL/v1.avsc")]  # fmt: skip
    example.main(args, out=lines.append)
    ours = [line for line in lines if "Acme" in line]
    assert ours == [
        "New SQL #1: Acme (VP Data), owner rep-ava, fit 80 / engagement 54, "
        "first touch paid_search, why: demo_request_icp"
    ]
