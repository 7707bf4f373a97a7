"""``leadflow identity-eval``: identity merges and event-time order on a simulation, offline.

Replays a seeded simulation (``--form-first``: the share of people who submit the form
before they log in, issue 14's split) through the pure pipeline of
:mod:`leadflow.demo.inprocess` twice: with the lead stage ordered (release buffers, holds
for merges) and applying records as they arrive (as the old faust worker did). Reports:

- leads: lead ids that got events (the "before merges" count), merges with history
  (adopted or combined) and silent ones (an id with no history), live leads after merges,
  and the people the simulation's truth knows, so a split person shows;
- order: how many leads got a different history from arrival order than from event-time
  order, partitions held for a merge (each one lead-stage hop), and the wait the allowed
  lateness adds per event for a few values of D.

Nothing reads the wall clock except the run time it prints.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from leadflow.demo.inprocess import InProcess, Result
from leadflow.demo.simulator.generator import SimConfig, Simulation
from leadflow.demo.simulator.send import message_to_event
from leadflow.processors.events import Event
from leadflow.processors.ordering import added_wait
from leadflow.processors.policy_load import load_default_policy
from leadflow.schemas.codec import SingleObjectCodec

WORKSPACE = "demo"
LATENESS_SHOWN = (0, 500, 2_000, 10_000)
ARRIVAL_BATCH = 100  # records a consumer takes from one partition before the next


@dataclass(frozen=True)
class IdentityEval:
    """The figures of one run (see the module doc)."""

    events: int
    people_known: int
    lead_ids: int
    merges_with_history: Counter[str]
    adopted: int
    silent_merges: int
    live_leads: int
    split_people: int
    histories_changed: int
    holds: int
    released: int
    waits: dict[int, tuple[float, float, int]]
    seconds: float


def simulated_events(
    people: int, days: float, seed: int, form_first: float
) -> tuple[list[Event], set[str]]:
    """The simulation's events in collector order (by receive time) and its known people."""
    sim = Simulation(SimConfig(people=people, days=days, seed=seed, form_first=form_first))
    events = [message_to_event(m, WORKSPACE) for m in sim.messages()]
    events.sort(key=lambda e: e.received_at)  # stable: the collector's log order
    return events, set(sim.ground_truth())


def _histories(result: Result) -> dict[str, list[bytes]]:
    codec = SingleObjectCodec()
    return {lead: [codec.encode(d) for d in ds] for lead, ds in result.by_lead().items()}


def evaluate(
    people: int, days: float, seed: int, form_first: float, partitions: int
) -> IdentityEval:
    """Run the simulation both ways and count (see the module doc)."""
    started = time.perf_counter()
    events, known = simulated_events(people, days, seed, form_first)
    policy = load_default_policy()
    ordered = InProcess(policy, partitions).run(events)
    turns = itertools.cycle([p for p in range(partitions) for _ in range(ARRIVAL_BATCH)])
    arrival = InProcess(policy, partitions, ordered=False).run(events, turns)
    merges = [m for m in ordered.merged() if m.reason != "redirect"]
    before = {s.lead_id for s in ordered.states.values() if s.seen}
    live = ordered.live_leads()
    mine, theirs = _histories(ordered), _histories(arrival)
    changed = sum(1 for lead in live if mine.get(lead) != theirs.get(lead))
    waits = {}
    for lateness in LATENESS_SHOWN:
        added = [added_wait(e.received_at, e.occurred_at, lateness) for e in events]
        waits[lateness] = (
            statistics.median(added) if added else 0.0,
            statistics.quantiles(added, n=10)[-1] if len(added) > 1 else 0.0,
            max(added, default=0),
        )
    return IdentityEval(
        events=len(events),
        people_known=len(known),
        lead_ids=len(before),
        merges_with_history=Counter(m.reason for m in merges),
        adopted=sum(m.adopted_history for m in merges),
        silent_merges=len(ordered.redirects()) - len(merges),
        live_leads=len(live),
        split_people=len(live - known),
        histories_changed=changed,
        holds=ordered.held,
        released=sum(ordered.released.values()),
        waits=waits,
        seconds=time.perf_counter() - started,
    )


def report(figures: IdentityEval) -> list[str]:
    """The figures as printable lines."""
    f = figures
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(f.merges_with_history.items())) or "none"
    lines = [
        f"inbound events {f.events:,}; people who identified (simulation truth) {f.people_known:,}",
        f"lead ids with events (before merges) {f.lead_ids:,}",
        f"merges with history {sum(f.merges_with_history.values()):,} ({reasons}; "
        f"adopted {f.adopted:,}); silent merges of ids without history {f.silent_merges:,}",
        f"live leads (after merges) {f.live_leads:,}; "
        f"leads that are no known person {f.split_people:,}",
        "leads whose history differs in arrival order (the old faust worker's, partitions read "
        f"{ARRIVAL_BATCH} records in turn) {f.histories_changed:,}",
        f"records released in order {f.released:,}; partition holds for a merge {f.holds:,} "
        "(one lead-stage hop each)",
    ]
    for lateness, (p50, p90, top) in f.waits.items():
        lines.append(
            f"allowed lateness D={lateness:,} ms: added wait per event p50 {p50:,.0f} ms, "
            f"p90 {p90:,.0f} ms, max {top:,} ms"
        )
    lines.append(f"(ran in {f.seconds:.1f} s)")
    return lines
