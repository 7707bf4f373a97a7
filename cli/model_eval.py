"""``leadflow model-eval``: the click command; the work is in ``demo/model_eval.py``.

Imported by ``cli/main.py`` at start, so it imports river and the processors lazily.
"""

from __future__ import annotations

import click
from rich.console import Console


@click.command("model-eval")
@click.option("--people", default=3000, show_default=True, help="Simulated people.")
@click.option("--days", default=180.0, show_default=True, help="Event-time span in days.")
@click.option("--seed", default=1, show_default=True, help="Simulation seed.")
@click.option(
    "--model",
    "kinds",
    multiple=True,
    help="Model kind(s) to compare side by side (default: the one the trainer uses).",
)
@click.option(
    "--partitions",
    default=0,
    show_default=True,
    help="Consume the logs as from this many partitions, 500 records each in turn "
    "(0: in event-time order), firing deadlines on the newest event time of any "
    "partition: an upper bound on premature negative labels.",
)
@click.option(
    "--refresh-every",
    default=0,
    show_default=True,
    help="Score with the newest model snapshot only every N lead events (0: at once), "
    "like workers polling leadflow.models.",
)
def model_eval_cmd(
    people: int,
    days: float,
    seed: int,
    kinds: tuple[str, ...],
    partitions: int,
    refresh_every: int,
) -> None:
    r"""Measure the lead model and the lead state size offline (no Kafka, no ClickHouse).

    Replays a seeded simulation through the pure identity and lead processors, trains
    the model on the training examples they emit, and prints prequential AUC, model vs
    rules vs best possible per-lead AUC (last score before SQL), examples per lead, the
    model's learn+predict cost and the lead state size. Same seed, same figures (except
    the cost in microseconds).

    \b
    Examples:
      leadflow model-eval                          # the demo's simulation
      leadflow model-eval --model logreg --model arf --people 1000
      leadflow model-eval --partitions 12 --refresh-every 2000   # worst-case arrival order
    """
    from leadflow.demo.model_eval import results_table, run_eval
    from leadflow.processors.model import DEFAULT_KIND
    from leadflow.processors.policy_load import load_default_policy

    policy = load_default_policy()
    results = {
        k: run_eval(
            people, days, seed, k, policy, partitions=partitions, refresh_every=refresh_every
        )
        for k in kinds or (DEFAULT_KIND,)
    }
    title = f"model-eval: {people:,} people, {days:g} days, seed {seed}"
    Console().print(results_table(title, results))
