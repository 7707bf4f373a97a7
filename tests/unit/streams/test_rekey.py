"""What ``leadflow replay rekey`` does with each kind of record of an old inbound log."""

from __future__ import annotations

import doctest

import pytest

from leadflow.processors.derived import Stage
from leadflow.processors.events import Event, Kind
from leadflow.schemas.codec import SingleObjectCodec
from leadflow.streams import rekey
from leadflow.streams.rekey import HEARTBEAT, Outcome, RekeyStats, decide

CODEC = SingleObjectCodec()
VISIT = Event("e1", Kind.VISIT, "ws", 1, 1, anonymous_id="a1")
CRM = Event("e2", Kind.DEAL_WON, "ws", 1, 1, lead_id="L1", payload={"amount": 5.0})
COST = Event(
    "e3", Kind.CAMPAIGN_COST, "ws", 1, 1,
    payload={"date": "2026-01-01", "channel": "c", "campaign": "x", "amount": 5.0},
)  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "headers", "outcome", "reason", "new_key"),
    [
        (b"a1", CODEC.encode(VISIT), [], Outcome.REKEYED, "raw_id", b'["ws","a1"]'),
        (b"L1", CODEC.encode(CRM), [], Outcome.REKEYED, "raw_id", b'["ws","L1"]'),
        # Campaign costs were keyed cost:<channel>:<campaign>, their "person".
        (b"cost:c:x", CODEC.encode(COST), [], Outcome.REKEYED, "raw_id", b'["ws","cost:c:x"]'),
        (b'["ws","a1"]', CODEC.encode(VISIT), [], Outcome.KEPT, "person_key", b'["ws","a1"]'),
        (b"b2", CODEC.encode(VISIT), [], Outcome.DEAD, "wrong_key", None),
        (b'["other","a1"]', CODEC.encode(VISIT), [], Outcome.DEAD, "wrong_key", None),
        (None, CODEC.encode(VISIT), [], Outcome.DEAD, "missing_key", None),
        (b"a1", b"", [], Outcome.DEAD, "empty", None),
        (b"a1", b"junk", [], Outcome.DEAD, "bad_magic", None),
        (b"a1", CODEC.encode(Event("e4", Kind.VISIT, "ws", 1, 1)), [], Outcome.DEAD,
         "no_person", None),
        (None, b"", [(HEARTBEAT, b"17")], Outcome.SKIPPED, "heartbeat", None),
    ],
)  # fmt: skip
def test_each_record_gets_one_outcome_and_reason(
    key: bytes | None,
    value: bytes,
    headers: list[tuple[str, bytes | None]],
    outcome: Outcome,
    reason: str,
    new_key: bytes | None,
) -> None:
    decision = decide(key, value, headers, CODEC)
    assert (decision.outcome, decision.reason, decision.key) == (outcome, reason, new_key)
    if outcome is Outcome.DEAD:
        assert decision.error


def test_a_derived_record_on_the_inbound_log_is_dead_lettered() -> None:
    from leadflow.processors.derived import LeadScored

    scored = LeadScored("s", "ws", "L1", 1, 0.0, 0.0, None, None, (), "e", Stage.LEAD)
    assert decide(b"L1", CODEC.encode(scored), [], CODEC).reason == "wrong_record_type"


def test_counts_per_outcome_and_reason() -> None:
    stats = RekeyStats()
    stats.counts[(Outcome.REKEYED, "raw_id")] += 3
    stats.counts[(Outcome.DEAD, "bad_magic")] += 1
    stats.counts[(Outcome.DEAD, "wrong_key")] += 2
    assert (stats.of(Outcome.REKEYED), stats.of(Outcome.DEAD), stats.of(Outcome.KEPT)) == (3, 3, 0)
    assert [" ".join(line.split()) for line in stats.lines()] == [
        "dead-lettered bad_magic 1",
        "dead-lettered wrong_key 2",
        "rekeyed raw_id 3",
    ]


def test_doctests() -> None:
    assert doctest.testmod(rekey, optionflags=doctest.ELLIPSIS).failed == 0


def test_its_dead_letters_are_projected_as_the_rekeys() -> None:
    from leadflow.sinks.projection import dead_letter_rows

    headers = [("reason", b"wrong_key"), ("stage", b"rekey"), ("group", b"leadflow-rekey.a.b"),
               ("source.topic", b"leadflow.events")]  # fmt: skip
    row = dead_letter_rows(0, 1, b"a1", headers, 5, 10).by_table["dead_letters"][0]
    assert row[1:6] == ("", 5, "rekey", "wrong_key", "leadflow.events")
