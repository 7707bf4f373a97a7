"""A workspace's scores never depend on another workspace's data.

Like the reports' isolation test: the same workspace alone and next to another one.
"""

import heapq

from leadflow.demo.model_eval import replay
from leadflow.demo.simulator.generator import SimConfig, Simulation
from leadflow.demo.simulator.send import message_to_event
from leadflow.processors.events import Event
from leadflow.processors.model import ModelRegistry
from leadflow.processors.policy_load import load_default_policy

P = load_default_policy()


def events(workspace: str, seed: int, world: str) -> list[Event]:
    sim = Simulation(SimConfig(people=250, days=75, seed=seed, world=world))
    return [message_to_event(m, workspace) for m in sim.messages()]


def scores(run_events: list[Event], workspace: str) -> dict[str, list[tuple[int, float | None]]]:
    registry = ModelRegistry(lambda _ws: P)
    run = replay(run_events, P, registry)
    return {
        lead: [(s.occurred_at, s.model_score) for s in scored]
        for lead, scored in run.scores.items()
        if scored[0].workspace_id == workspace
    }


def test_a_workspace_scores_the_same_with_or_without_another_one() -> None:
    a = events("acme", 11, "northwind")
    b = events("globex", 12, "harbor")
    mixed = list(heapq.merge(a, b, key=lambda e: e.occurred_at))
    alone = scores(a, "acme")
    together = scores(mixed, "acme")
    assert alone == together
    assert any(m is not None for scored in alone.values() for _, m in scored)
    # ...and the other workspace really taught its own model in the mixed run.
    registry = ModelRegistry(lambda _ws: P)
    replay(mixed, P, registry)
    assert registry.get("acme").n_learned > 0
    assert registry.get("globex").n_learned > 0
    assert registry.get("acme").n_learned == sum(
        1 for _ in replay(a, P, ModelRegistry(lambda _ws: P)).examples
    )
