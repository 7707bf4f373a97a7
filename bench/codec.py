"""Measure encode/decode cost per event on the hot path: ``python -m bench.codec``.

Prints microseconds per event for a typical visit (full context, both codecs) and for the
largest derived event (the SQL hand-off). No assertions: numbers are for the reader.
"""

from __future__ import annotations

import timeit

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
from leadflow.processors.events import Context, Event, Kind
from leadflow.schemas.codec import Codec, ConfluentCodec, SingleObjectCodec

VISIT = Event(
    event_id="0b8f8a44-5d0e-4c1e-9b7a-3a4d2f1e6c11",
    kind=Kind.VISIT,
    workspace_id="acme",
    occurred_at=1_763_884_800_000,
    received_at=1_763_884_800_120,
    anonymous_id="anon-7f3c2a",
    lead_id=None,
    context=Context(
        url="https://acme.example/pricing?utm_source=google",
        path="/pricing",
        referrer="https://www.google.com/",
        title="Pricing - Acme",
        utm_source="google",
        utm_medium="cpc",
        utm_campaign="brand-q4",
        channel="paid_search",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
        ip="203.0.113.7",
    ),
    payload={"name": "Pricing", "category": "product", "search": "?utm_source=google"},
)

HANDOFF = BecameSQL(
    transition_id="t" * 32,
    workspace_id="acme",
    lead_id="lead-42",
    became_sql_at=1_763_884_800_000,
    reason="sales_accepted",
    sql_count=1,
    contact=Contact(email="ana@corp.example", first_name="Ana", company="Corp", company_size=250),
    segments=("icp_tier_1",),
    fit_score=42.0,
    engagement_score=37.5,
    top_rules=tuple(RuleHit(f"rule_{i}", float(i)) for i in range(5)),
    model_score=0.71,
    model_version="m-12",
    top_features=tuple(RuleHit(f"feature_{i}", 0.1 * i) for i in range(5)),
    qualification=Qualification("BANT", {"budget": "yes", "need": "crm"}, 0.5),
    owner_id="rep-3",
    team="emea",
    first_touch=Touch("e1", "ad_click", 1_763_000_000_000, "paid_search", "brand"),
    last_touch=Touch("e9", "demo_requested", 1_763_884_700_000, "direct"),
    engagement=EngagementSummary(visits=12, pricing_views=3, demo_requested=True),
    stage_history=(
        StageStep(Stage.LEAD, 1_763_000_000_000, "identified"),
        StageStep(Stage.MQL, 1_763_500_000_000, "score"),
        StageStep(Stage.SQL, 1_763_884_800_000, "sales_accepted"),
    ),
)


def _measure(codec: Codec, obj: object, number: int) -> tuple[float, float, int]:
    data = codec.encode(obj)  # type: ignore[arg-type]
    encode = min(timeit.repeat(lambda: codec.encode(obj), number=number, repeat=5))  # type: ignore[arg-type]
    decode = min(timeit.repeat(lambda: codec.decode(data), number=number, repeat=5))
    return encode / number * 1e6, decode / number * 1e6, len(data)


def main() -> None:
    """Print µs/event for encode and decode, per codec and record."""
    number = 20_000
    for codec in (SingleObjectCodec(), ConfluentCodec("mock://")):
        for label, obj in (("visit", VISIT), ("became_sql", HANDOFF)):
            enc, dec, size = _measure(codec, obj, number)
            print(
                f"{type(codec).__name__:18} {label:11} encode {enc:6.1f} µs  "
                f"decode {dec:6.1f} µs  {size} bytes"
            )


if __name__ == "__main__":
    main()
