"""``leadflow model-eval``: the click command; the work is in ``demo/model_eval.py``.

Imported by ``cli/main.py`` at start, so it imports river and the processors lazily.
"""

from __future__ import annotations

import tempfile

import click
from rich.console import Console

from leadflow.processors.evolve import evolve


@click.command("model-eval")
@click.option("--people", default=3000, show_default=True, help="Simulated people.")
@click.option("--days", default=180.0, show_default=True, help="Event-time span in days.")
@click.option("--seed", "seeds", multiple=True, type=int, help="Simulation seed(s) (default: 1).")
@click.option(
    "--world",
    "worlds",
    multiple=True,
    help="Simulated market(s): northwind (the demo's, default) or harbor (a differently "
    "shaped market the default policy was not written for).",
)
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
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also fit the batch gradient-boosted baseline (needs scikit-learn, a dev dependency).",
)
@click.option(
    "--later-snapshots",
    type=click.IntRange(0, 6),
    default=None,
    help="Override the policy's labels.later_snapshots (later feature snapshots per open "
    "label window; default: the policy's, 0).",
)
@click.option(
    "--clickhouse/--no-clickhouse",
    default=False,
    show_default=True,
    help="Also project each run into a throw-away embedded ClickHouse and print what its "
    "model_health view shows (ch_* rows).",
)
def model_eval_cmd(
    people: int,
    days: float,
    seeds: tuple[int, ...],
    worlds: tuple[str, ...],
    kinds: tuple[str, ...],
    partitions: int,
    refresh_every: int,
    baseline: bool,
    later_snapshots: int | None,
    clickhouse: bool,
) -> None:
    """Measure the lead model against the rules and a batch baseline, offline.

    Replays a seeded simulation through the pure identity and lead processors (no Kafka;
    ClickHouse only with --clickhouse), trains each workspace's model on the examples
    they emit, and every
    14 days of event time (after a 45-day warm-up) ranks the open leads by the score they
    hold: model, rule score, a weekly-retrained gradient-boosted baseline and the true
    propensity, against "becomes SQL within 30 days". Prints AUCs, calibration error
    (ECE, 10 bins), the model's health (label balance, window AUC/ECE, warnings), score
    age, examples per lead, costs and the lead state size. Same seed, same figures
    (except the costs in microseconds).

    \b
    Examples:
      leadflow model-eval                          # the demo's simulation
      leadflow model-eval --seed 1 --seed 2 --seed 3 --world northwind --world harbor
      leadflow model-eval --model linear --model arf --people 1000
      leadflow model-eval --partitions 12 --refresh-every 2000   # worst-case arrival order
      leadflow model-eval --no-baseline --clickhouse  # + what the model_health view shows
      leadflow model-eval --later-snapshots 3      # label windows sampled weekly
    """
    from leadflow.cli.options import fail
    from leadflow.demo.model_eval import results_table, run_eval
    from leadflow.processors.errors import LeadflowError
    from leadflow.processors.model import DEFAULT_KIND
    from leadflow.processors.policy_load import load_default_policy

    policy = load_default_policy()
    if later_snapshots is not None:
        labels = evolve(policy.labels, later_snapshots=later_snapshots)
        policy = evolve(policy, labels=labels)
    results = {}
    engine = tempfile.TemporaryDirectory(prefix="leadflow-model-eval-") if clickhouse else None
    client = None
    if engine is not None:
        from clickhouse_connect import get_client

        client = get_client(dsn=f"chdb://{engine.name}")
    for world in worlds or ("northwind",):
        for seed in seeds or (1,):
            for kind in kinds or (DEFAULT_KIND,):
                column = f"{world} {seed} {kind}"
                try:
                    results[column] = run_eval(
                        people,
                        days,
                        seed,
                        kind,
                        policy,
                        world=world,
                        partitions=partitions,
                        refresh_every=refresh_every,
                        baseline=baseline,
                        clickhouse=None if client is None else (client, "model_eval"),
                    )
                except LeadflowError as exc:
                    fail(str(exc))
                _warn(column, results[column])
    if client is not None and engine is not None:
        client.close()
        engine.cleanup()
    title = f"model-eval: {people:,} people, {days:g} days"
    Console().print(results_table(title, results))


def _warn(column: str, figures: dict[str, float | int | str | None]) -> None:
    # Loud, not only a cell in the table: what the model learns from is suspect.
    warnings = figures.get("health_warnings")
    if warnings and warnings != "none":
        click.echo(f"warning: {column}: model health: {warnings}", err=True)
    in_clickhouse = figures.get("ch_warnings")
    if in_clickhouse and in_clickhouse != "none":
        click.echo(f"warning: {column}: model health in ClickHouse: {in_clickhouse}", err=True)
    refused = figures.get("refused_share")
    if isinstance(refused, float) and refused > 0.5:
        click.echo(
            f"warning: {column}: {refused:.0%} of the inbound messages were refused", err=True
        )
