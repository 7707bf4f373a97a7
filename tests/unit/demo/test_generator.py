"""The generator: deterministic, time-ordered, lazy, valid Segment, and realistic enough."""

from __future__ import annotations

import itertools
import statistics
import tracemalloc
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.demo.simulator import model
from leadflow.demo.simulator.generator import (
    CUSTOM_EVENTS,
    TRACKING_PLAN,
    SimConfig,
    Simulation,
    SimulationError,
    arrival_times,
    iso,
    seeded,
    simulate,
)
from leadflow.demo.simulator.send import message_to_event
from leadflow.demo.simulator.truth import best_possible_auc
from leadflow.processors.events import TOUCH_KINDS, Kind

SMALL = SimConfig(people=300, days=90, seed=11)


@pytest.fixture(scope="module")
def big() -> Simulation:
    """2,000 people over 180 days, iterated once for the realism tests."""
    sim = Simulation(SimConfig(people=2_000, days=180, seed=5))
    sim.ground_truth()
    return sim


@pytest.fixture(scope="module")
def small_messages() -> list[dict]:
    return list(simulate(SMALL))


def test_same_seed_gives_identical_messages(small_messages: list[dict]) -> None:
    assert list(simulate(SMALL)) == small_messages


def test_different_seed_gives_different_messages(small_messages: list[dict]) -> None:
    other = list(simulate(SimConfig(people=300, days=90, seed=12)))
    assert other != small_messages
    assert not {m["messageId"] for m in other} & {m["messageId"] for m in small_messages}


def test_message_ids_are_unique(small_messages: list[dict]) -> None:
    ids = [m["messageId"] for m in small_messages]
    assert len(ids) == len(set(ids))


def test_messages_are_sorted_by_event_time_within_the_span(small_messages: list[dict]) -> None:
    stamps = [m["timestamp"] for m in small_messages]
    assert stamps == sorted(stamps)
    assert stamps[0] >= iso(SMALL.start_ms)
    assert stamps[-1] < iso(SMALL.end_ms)


def test_start_moves_the_whole_simulation() -> None:
    later = SimConfig(people=50, days=30, seed=3, start=datetime(2026, 6, 1, tzinfo=UTC))
    messages = list(simulate(later))
    assert messages
    assert all("2026-06-01" <= m["timestamp"] < "2026-07-02" for m in messages)


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(SimulationError):
        SimConfig(days=0)
    with pytest.raises(SimulationError):
        SimConfig(people=-1)
    with pytest.raises(SimulationError):
        SimConfig(start=datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose


def test_segment_shapes(small_messages: list[dict]) -> None:
    kinds = set()
    for m in small_messages:
        assert m["type"] in {"page", "track", "identify"}
        assert datetime.fromisoformat(m["timestamp"]) <= datetime.fromisoformat(m["sentAt"])
        assert m["timestamp"].endswith("Z")
        assert len(m["timestamp"]) == 24
        assert isinstance(m["context"]["library"]["name"], str)
        if m["type"] == "track":
            assert m["event"] in TRACKING_PLAN | CUSTOM_EVENTS
            assert isinstance(m["properties"], dict)
            kinds.add(m["event"])
            if m["event"] != "Campaign Cost":
                assert m.get("anonymousId") or m.get("userId")
        elif m["type"] == "identify":
            assert m["userId"]
            assert "@" in m["traits"]["email"]
        else:
            page = m["context"]["page"]
            assert page["url"].startswith(model.SITE + page["path"])
            assert m.get("anonymousId")
    # The tracking plan names the simulation exercises in a small run.
    assert {
        "Form Submitted",
        "Email Sent",
        "Email Opened",
        "Campaign Cost",
        "Ad Clicked",
        "Content Downloaded",
        "Stage Changed",
    } <= kinds


def test_every_message_maps_with_the_collector(small_messages: list[dict]) -> None:
    for m in small_messages:
        event = message_to_event(m, "ws-test")
        assert event.event_id == m["messageId"]
        assert iso(event.occurred_at) == m["timestamp"]


def test_form_submit_identifies_the_same_device(small_messages: list[dict]) -> None:
    forms = [
        m
        for m in small_messages
        if m.get("event") == "Form Submitted" and m["properties"]["form_id"].startswith("lp-")
    ]
    assert forms
    for form in forms:
        assert form["userId"].startswith("lead-")
        assert form["anonymousId"].startswith("anon-")
        assert "@" in form["properties"]["email"]
        earlier = [
            m
            for m in small_messages
            if m.get("anonymousId") == form["anonymousId"] and m["timestamp"] < form["timestamp"]
        ]
        assert any(m["type"] == "page" and "userId" not in m for m in earlier)


def test_first_touch_channel_groups_to_the_acquiring_channel(big: Simulation) -> None:
    truth = big.ground_truth()
    first: dict[str, str | None] = {}
    for m in big.messages():
        person = m.get("anonymousId") or m.get("userId")
        if person is None or person in first:
            continue
        event = message_to_event(m, "ws")
        if event.kind in TOUCH_KINDS:
            first[person] = event.context.channel
    checked = 0
    for lead in truth.values():
        key = lead.anonymous_id or lead.lead_id
        assert first[key] == lead.channel, (lead.campaign, first[key])
        checked += 1
    assert checked > 100


def test_experiment_variant_rides_on_landing_pages(small_messages: list[dict]) -> None:
    landing = [
        m
        for m in small_messages
        if m["type"] == "page" and m["context"]["page"]["path"].startswith("/lp/")
    ]
    assert landing
    assert {m["properties"]["experiment"] for m in landing} == {model.EXPERIMENT}
    assert {m["properties"]["variant"] for m in landing} == {"A", "B"}
    assert message_to_event(landing[0], "ws").context.variant in {"A", "B"}


def test_daily_costs_for_every_paid_campaign(small_messages: list[dict]) -> None:
    costs = [m for m in small_messages if m.get("event") == "Campaign Cost"]
    paid = [c for c in model.CAMPAIGNS if c.cost_per_visit > 0 or c.fixed_daily > 0]
    assert len(costs) == len(paid) * 90
    assert all(m["properties"]["amount"] > 0 for m in costs)
    assert len({m["properties"]["date"] for m in costs}) == 90
    event = message_to_event(costs[0], "ws")
    assert event.kind is Kind.CAMPAIGN_COST
    assert event.person_id.startswith("cost:")


def test_funnel_is_realistic(big: Simulation) -> None:
    tally = big.tally
    web_people = sum(n for ch, n in tally.people.items() if ch != model.EVENTS)
    web_leads = sum(n for ch, n in tally.leads.items() if ch != model.EVENTS)
    assert 0.01 <= web_leads / web_people <= 0.30
    assert set(tally.people) == set(model.CHANNELS)
    assert 0 < tally.late_reviews < tally.reviews * 0.5  # some reviews breach the 24 h SLA
    assert tally.accepted > 0
    assert tally.rejected > 0
    assert tally.won > 0
    assert tally.lost > 0
    assert tally.revenue > 0
    assert tally.recycled > 0
    assert tally.disqualified > 0
    assert tally.unsubscribed > 0
    assert tally.opportunities >= tally.won + tally.lost
    assert tally.accepted < sum(tally.leads.values()) * 0.6


def test_late_reviews_breach_the_sla_in_event_time(big: Simulation) -> None:
    reviews_late = 0
    demand: dict[str, str] = {}
    for m in big.messages():
        if m.get("event") in {"Demo Requested"} and m.get("userId"):
            demand.setdefault(m["userId"], m["timestamp"])
        if m.get("event") == "Stage Changed" and m["userId"] in demand:
            start = datetime.fromisoformat(demand.pop(m["userId"]))
            if (datetime.fromisoformat(m["timestamp"]) - start).total_seconds() > 86_400:
                reviews_late += 1
    assert reviews_late > 0


def test_true_propensity_ranks_outcomes(big: Simulation) -> None:
    truth = big.ground_truth()
    assert best_possible_auc(truth) > 0.7
    converted = [t.fit for t in truth.values() if t.converted]
    others = [t.fit for t in truth.values() if not t.converted]
    assert statistics.mean(converted) > statistics.mean(others) + 0.05


def test_wins_follow_opportunities_and_carry_revenue(big: Simulation) -> None:
    truth = big.ground_truth()
    won = [t for t in truth.values() if t.won]
    assert won
    assert all(t.opportunity and t.converted and t.revenue > 0 for t in won)
    assert sum(t.revenue for t in won) == pytest.approx(big.tally.revenue)


def test_iteration_is_lazy() -> None:
    """The first messages of a million-person simulation come without building the rest."""
    tracemalloc.start()
    try:
        head = list(itertools.islice(simulate(SimConfig(people=1_000_000, seed=2)), 2_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(head) == 2_000
    assert peak < 30 * 1024 * 1024


def test_ground_truth_without_iterating_first() -> None:
    sim = Simulation(SimConfig(people=200, days=60, seed=4))
    truth = sim.ground_truth()
    assert truth
    assert all(0 < t.propensity < 1 for t in truth.values())
    again = Simulation(SimConfig(people=200, days=60, seed=4))
    list(again.messages())
    assert again.ground_truth() == truth


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    start=st.integers(0, 10**12),
    width=st.integers(1, 10**10),
    seed=st.integers(0, 10**6),
)
def test_arrival_times_are_sorted_and_in_range(n: int, start: int, width: int, seed: int) -> None:
    times = list(arrival_times(seeded(seed, "a"), n, start, start + width))
    assert len(times) == n
    assert times == sorted(times)
    assert all(start <= t < start + width for t in times)


def test_arrivals_spread_over_the_span() -> None:
    times = list(arrival_times(seeded(1, "a"), 10_000, 0, 1_000_000))
    quarters = [sum(1 for t in times if q * 250_000 <= t < (q + 1) * 250_000) for q in range(4)]
    assert all(2_200 < q < 2_800 for q in quarters)
