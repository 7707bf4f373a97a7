"""``leadflow identity-eval``: the click command; the work is in ``demo/identity_eval.py``."""

from __future__ import annotations

import click


@click.command("identity-eval")
@click.option("--people", default=3000, show_default=True, help="Simulated people.")
@click.option("--days", default=180.0, show_default=True, help="Event-time span in days.")
@click.option("--seed", default=1, show_default=True, help="Simulation seed.")
@click.option(
    "--form-first",
    default=0.0,
    show_default=True,
    help="Share of people who submit the form before they log in (issue 14's split).",
)
@click.option("--partitions", default=12, show_default=True, help="Partitions per topic.")
def identity_eval_cmd(
    people: int, days: float, seed: int, form_first: float, partitions: int
) -> None:
    """Count leads before and after identity merges, and what event-time order costs.

    Replays a seeded simulation through the pure identity and lead stages in-process
    (no Kafka, no ClickHouse), once in event-time order and once in arrival order (as the
    old faust worker applied records), and prints leads before/after merges, merges
    by reason, how many lead histories arrival order changed, partition holds, and the wait
    each allowed lateness would add.

    \b
    Examples:
      leadflow identity-eval                      # the demo's simulation
      leadflow identity-eval --form-first 0.3     # 30% submit the form before login
    """
    from leadflow.demo.identity_eval import evaluate, report

    figures = evaluate(people, days, seed, form_first, partitions)
    click.echo(
        f"identity-eval: {people:,} people, {days:g} days, seed {seed}, "
        f"form first {form_first:g}, {partitions} partitions"
    )
    for line in report(figures):
        click.echo("  " + line)
