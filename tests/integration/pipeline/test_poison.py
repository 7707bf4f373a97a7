"""Poison records in front of a real `leadflow worker`: each goes to the dead-letter topic
with its reason, the partition moves on, and the lead's derived events are exactly those of
the same journey without poison.

The poison shares the journey's Kafka key, so it sits on the same partition between the
journey's events: the journey finishing proves the worker's offsets moved past every bad
record.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer

from leadflow.processors.derived import LeadScored, Stage, StageChanged
from leadflow.processors.events import Context, Event, Kind, scoped_key
from leadflow.schemas.codec import SINGLE_OBJECT_MAGIC
from leadflow.streams.settings import Settings
from leadflow.streams.topics import (
    DLQ,
    EVENTS,
    EVENTS_BY_LEAD,
    LEAD_BECAME_SQL,
    LEAD_STAGE_CHANGED,
)

from .conftest import CODEC, WorkerProcess, read, send
from .journeys import T0, Journey


def _event(workspace: str, kind: Kind, **fields: object) -> Event:
    envelope: dict[str, object] = {
        "event_id": f"{workspace}-{uuid.uuid4().hex[:8]}",
        "kind": kind,
        "workspace_id": workspace,
        "occurred_at": T0,
        "received_at": T0,
        "anonymous_id": None,
        "lead_id": None,
        "context": Context(),
        "payload": {},
    }
    envelope.update(fields)
    return Event(**envelope)  # type: ignore[arg-type]


NO_KEY = b"<no key>"  # produced without a key


def poison_corpus(workspace: str) -> dict[str, tuple[bytes | None, bytes, str]]:
    """``case: (key, value, what the leadflow.reason header must contain)``.

    Values are unique per run (the workspace is), so the dead letters can be told apart
    from other tests' on the shared broker.
    """
    tag = workspace.encode()
    good = CODEC.encode(_event(workspace, Kind.VISIT, anonymous_id="p-anon"))
    scored = LeadScored(
        f"{workspace}-s", workspace, "L1", T0, 1.0, 2.0, None, None, (), "e", Stage.LEAD
    )
    return {
        "garbage bytes": (None, b"not avro at all " + tag, "bad_magic"),
        "empty value": (None, b"", "empty"),
        "wrong fingerprint": (
            None,
            SINGLE_OBJECT_MAGIC + uuid.uuid4().bytes[:8] + good[10:] + tag,
            "unknown_fingerprint",
        ),
        "truncated avro": (None, good[: len(good) // 2], "DecodeError"),
        "valid avro, wrong kind for the topic": (
            None,
            CODEC.encode(scored),
            "LeadScored is not an Event",
        ),
        "event with no person": (
            None,
            CODEC.encode(_event(workspace, Kind.VISIT)),
            "neither lead_id nor anonymous_id",
        ),
        "unknown sales action (processor invariant)": (
            scoped_key(workspace, "poison-lead").encode(),
            CODEC.encode(
                _event(
                    workspace,
                    Kind.STAGE_CHANGED,
                    lead_id="poison-lead",
                    payload={"action": "promote", "reason": None, "actor": None, "answers": {}},
                )
            ),
            "unknown stage_changed action 'promote'",
        ),
        "valid event without a key": (
            NO_KEY,
            CODEC.encode(_event(workspace, Kind.VISIT, anonymous_id=f"{workspace}-nokey")),
            "missing key",
        ),
        "valid event keyed by another person": (
            b"someone-else",
            CODEC.encode(_event(workspace, Kind.VISIT, anonymous_id=f"{workspace}-wrongkey")),
            "not by its person key",
        ),
        # Issue 19: absurd amounts produced to Kafka without the collector (which refuses
        # them) are dead letters before any state or report sees them.
        "absurd deal amount (bounds)": (
            scoped_key(workspace, "poison-deal").encode(),
            CODEC.encode(
                _event(
                    workspace,
                    Kind.DEAL_WON,
                    lead_id="poison-deal",
                    payload={"deal_id": None, "amount": 1.7e308, "currency": "USD"},
                )
            ),
            "out of bounds: amount 1.7e+308 is above the maximum",
        ),
        "negative campaign cost (bounds)": (
            scoped_key(workspace, f"cost:ads:{workspace}").encode(),
            CODEC.encode(
                _event(
                    workspace,
                    Kind.CAMPAIGN_COST,
                    payload={
                        "date": "2026-01-01",
                        "channel": "ads",
                        "campaign": workspace,
                        "amount": -5e300,
                        "currency": "USD",
                    },
                )
            ),
            "out of bounds: amount -5e+300 is below the minimum 0",
        ),
        "accept_mql for a disqualified lead (processor invariant)": (
            scoped_key(f"{workspace}-inv", "poison-lead-2").encode(),
            CODEC.encode(
                _event(
                    f"{workspace}-inv",
                    Kind.STAGE_CHANGED,
                    lead_id="poison-lead-2",
                    occurred_at=T0 + 1000,
                    payload={"action": "accept_mql", "reason": None, "actor": None, "answers": {}},
                )
            ),
            "InvalidTransition: lead poison-lead-2: accept_mql while disqualified",
        ),
    }


def setup_for_invariants(workspace: str) -> list[Event]:
    """A lead disqualified by sales: accepting it later breaks the funnel's invariant.

    Its own workspace, so the poisoned journey's derived events stay comparable.
    """
    return [
        _event(
            f"{workspace}-inv", Kind.STAGE_CHANGED, lead_id="poison-lead-2",
            payload={"action": "disqualify", "reason": "student", "actor": None, "answers": {}},
        )
    ]  # fmt: skip


def dead_letters(
    settings: Settings, sources: dict[str, tuple[str, int, int]], by_lead: dict[str, bytes]
) -> dict[str, list[dict]]:
    """The worker's dead letters per case, waiting until every case has one.

    A record refused on the inbound log is found by its source coordinates (an empty value
    is not unique); one refused after identity, on ``events.by-lead``, by its value (its
    by-lead offset is the worker's, unknown here; the values are unique to this run).
    """
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"poison-{uuid.uuid4()}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe([DLQ.name])
    found: dict[str, list[dict]] = {case: [] for case in [*sources, *by_lead]}
    where = {source: case for case, source in sources.items()}
    what = {value: case for case, value in by_lead.items()}
    deadline = time.monotonic() + 90
    settle: float | None = None
    try:
        while time.monotonic() < (settle or deadline):
            for message in consumer.consume(200, timeout=0.5):
                headers = {k: v for k, v in (message.headers() or []) if v is not None}
                if message.error() is not None or "leadflow.source.topic" not in headers:
                    continue
                topic = headers["leadflow.source.topic"].decode()
                source = (
                    topic,
                    int(headers["leadflow.source.partition"]),
                    int(headers["leadflow.source.offset"]),
                )
                case = where.get(source)
                if case is None and topic == EVENTS_BY_LEAD.name:
                    case = what.get(message.value())
                if case is not None:
                    found[case].append({"key": message.key(), "value": message.value(), **headers})
            if settle is None and all(found.values()):
                settle = time.monotonic() + 3.0  # keep reading: a duplicate would show
    finally:
        consumer.close()
    return found


def transitions(settings: Settings, workspace: str, expect: int) -> list[tuple[str, str]]:
    records = read(settings, LEAD_STAGE_CHANGED.name, workspace, expect=expect)
    assert all(isinstance(r, StageChanged) for r in records)
    return sorted(
        (str(r.from_stage), str(r.to_stage))  # type: ignore[union-attr]
        for r in records
    )


def test_poison_goes_to_the_dlq_with_its_reason_and_the_journey_is_unchanged(
    topics: Settings, worker: WorkerProcess, counts_checked: Callable[[str], None]
) -> None:
    run = uuid.uuid4().hex[:6]
    control, poisoned = Journey(f"ws-clean-{run}"), Journey(f"ws-poison-{run}")
    corpus = poison_corpus(poisoned.workspace)
    clean_phase = control.to_sql_twice()[0]
    send(topics, clean_phase)

    # The poisoned journey: its first two events, every poison record on the journey's
    # partition (its device key) unless the case has its own key, then the rest.
    phase = poisoned.to_sql_twice()[0]
    send(topics, phase[:2])
    send(topics, setup_for_invariants(poisoned.workspace))
    producer = Producer({**topics.kafka_client_config(), "acks": "all"})
    sources: dict[str, tuple[str, int, int]] = {}
    for case, (key, value, _reason) in corpus.items():

        def delivered(err: object, msg: Any, case: str = case) -> None:
            assert err is None, err
            sources[case] = (msg.topic(), msg.partition(), msg.offset())

        real_key = (
            None if key == NO_KEY else key or scoped_key(poisoned.workspace, poisoned.anon).encode()
        )
        producer.produce(EVENTS.name, key=real_key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    send(topics, phase[2:])

    # Both journeys end in an SQL hand-off (the last event): once each has it, every
    # transition before it is out too.
    for journey in (control, poisoned):
        assert len(read(topics, LEAD_BECAME_SQL.name, journey.workspace, expect=1)) == 1
    clean = transitions(topics, control.workspace, expect=4)
    assert transitions(topics, poisoned.workspace, expect=len(clean)) == clean

    # The two sales actions pass identity and fail in the lead agent, on events.by-lead.
    after_identity = {c: corpus[c][1] for c in corpus if "processor invariant" in c}
    letters = dead_letters(
        topics, {c: s for c, s in sources.items() if c not in after_identity}, after_identity
    )
    assert {case: len(found) for case, found in letters.items()} == dict.fromkeys(corpus, 1)
    for case, (key, value, reason) in corpus.items():
        [letter] = letters[case]
        assert letter["value"] == value, case
        assert reason in letter["leadflow.reason"].decode(), (case, letter)
        assert letter["key"] == (
            None if key == NO_KEY else key or scoped_key(poisoned.workspace, poisoned.anon).encode()
        ), case
    counts_checked(
        f"{len(corpus)} poison records -> exactly one dead letter each, reasons checked; "
        f"journey transitions {clean} identical to the clean run; 1 hand-off each"
    )
