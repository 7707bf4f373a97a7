"""``leadflow policy suggest-weights``: fit rule points from labelled history.

The fit is in ``processors/policy_fit.py``; the history comes from a workspace's ClickHouse
data (``sinks/policy_history.py``) or from a simulated market (``--world``).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from leadflow.cli.options import settings_of, workspace_param
from leadflow.cli.report import _policy, analytics_client, database_option, prepare_schema
from leadflow.processors.derived import Contact
from leadflow.processors.errors import LeadflowError
from leadflow.processors.policy import Policy
from leadflow.processors.policy_fit import (
    LabelledLead,
    Suggestion,
    suggest_fit_weights,
    yaml_diff,
)

CONVERSION_RANKS = {"sql": 3, "won": 5}


@click.group("policy")
def policy() -> None:
    """Work with the scoring policy (LEADFLOW_POLICY_FILE, else the packaged default)."""


def _from_clickhouse(
    ctx: click.Context, policy: Policy, database: str, workspace: str
) -> list[LabelledLead]:
    from leadflow.sinks.policy_history import labelled_leads

    settings = settings_of(ctx)
    client, via_owner = analytics_client(settings)
    try:
        prepare_schema(client, database, settings, via_owner)
        rows = labelled_leads(
            client,
            database,
            workspace,
            conversion_rank=CONVERSION_RANKS[policy.labels.conversion],
            horizon_days=max(1, round(policy.labels.negative_horizon_days)),
        )
    finally:
        client.close()
    return [
        LabelledLead(
            Contact(
                title=title or None,
                seniority=policy.seniority_of(title or None),
                company_size=size,
                industry=industry or None,
                country=country or None,
            ),
            None,
            converted,
        )
        for _lead, title, size, industry, country, converted in rows
    ]


def _table(s: Suggestion) -> Table:
    table = Table("fit rule", "points now", "suggested", "leads hit", "converted", "rate")
    for r in s.rules:
        table.add_row(
            r.name,
            f"{r.current:g}",
            "kept (not in the history)" if r.suggested is None else f"{r.suggested:g}",
            str(r.hits),
            str(r.conversions),
            f"{r.conversions / r.hits:.1%}" if r.hits else "-",
        )
    return table


@policy.command("suggest-weights")
@click.option(
    "--workspace",
    callback=workspace_param,
    help="Fit to this workspace's labelled leads in ClickHouse.",
)
@database_option
@click.option("--world", help="Fit to a simulated market instead (northwind, harbor).")
@click.option("--seed", default=1, show_default=True, help="Simulation seed (with --world).")
@click.option("--people", default=3000, show_default=True, help="Simulated people (--world).")
@click.option("--days", default=180.0, show_default=True, help="Simulated days (--world).")
@click.option(
    "--l2",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Pull towards the current points (log-odds units); larger keeps more of them.",
)
@click.pass_context
def suggest_weights_cmd(
    ctx: click.Context,
    workspace: str | None,
    database: str,
    world: str | None,
    seed: int,
    people: int,
    days: float,
    l2: float,
) -> None:
    """Suggest fit-rule points from labelled history; print them and a YAML diff.

    A lead is labelled by whether it ever reached the policy's labels.conversion stage;
    leads younger than labels.negative_horizon_days are left out. The points are the
    coefficients of a logistic regression on the rules that fire, in the model prior's
    scale (1 / model.prior.per_point points per unit of log-odds), pulled towards the
    current points by --l2. Compare the cross-validated AUC before applying the diff.

    \b
    Examples:
      leadflow policy suggest-weights --workspace acme           # ClickHouse history
      leadflow policy suggest-weights --world harbor --seed 1    # a simulated market
      leadflow policy suggest-weights --workspace acme > fit.diff && git apply fit.diff
    """
    settings = settings_of(ctx)
    policy = _policy(settings)
    if (workspace is None) == (world is None):
        raise click.UsageError("give --workspace (ClickHouse history) or --world (simulated)")
    try:
        if world is not None:
            from leadflow.demo.model_eval import labelled_history

            history = labelled_history(people, days, seed, world, policy)
            unobservable: frozenset[str] = frozenset()
            source = f"simulated {world}, seed {seed}"
        else:
            assert workspace is not None
            history = _from_clickhouse(ctx, policy, database, workspace)
            unobservable = frozenset({"email_domain"})  # not kept in ClickHouse
            source = f"ClickHouse {database}, workspace {workspace}"
        suggestion = suggest_fit_weights(policy, history, l2=l2, unobservable=unobservable)
    except LeadflowError as exc:
        raise click.ClickException(str(exc)) from None
    err = Console(stderr=True)
    err.print(_table(suggestion))
    err.print(
        f"{source}: {suggestion.leads} labelled leads, {suggestion.conversions} converted; "
        f"{suggestion.points_per_logodds:g} points per unit of log-odds (model.prior.per_point)"
    )
    err.print(
        f"fit-score AUC on this history: current {suggestion.auc_current}, suggested "
        f"{suggestion.auc_suggested} (in-sample); cross-validated (5 folds): current "
        f"{suggestion.cv_auc_current}, suggested {suggestion.cv_auc_suggested}"
    )
    if suggestion.cv_folds_skipped:
        err.print(
            f"[yellow]warning:[/] {suggestion.cv_folds_skipped} of 5 folds had one outcome only "
            "in their training part: not fitted, their leads left out of the cross-validated AUCs"
        )
    path = settings.policy_file
    if path is None:
        from importlib import resources

        text = resources.files("leadflow.infra").joinpath("policy/default.yaml").read_text("utf-8")
        name = "infra/policy/default.yaml"
    else:
        text, name = Path(path).read_text(), str(path)
    click.echo(yaml_diff(text, suggestion, name), nl=False)
