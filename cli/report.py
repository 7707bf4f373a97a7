"""``leadflow report ...`` and ``leadflow sql``: analytics from the terminal.

Thin glue: parse options, open the ClickHouse client from the settings, call
:mod:`leadflow.sinks.reports`, print. Every query lives in ``sinks/``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from leadflow.cli.options import settings_of, workspace_param
from leadflow.processors.errors import LeadflowError
from leadflow.processors.policy import Policy
from leadflow.processors.policy_load import load_default_policy, parse_policy
from leadflow.sinks import reports
from leadflow.sinks.clickhouse_http import served_url
from leadflow.sinks.migrations import DEFAULT_DATABASE, migrate, pending_migrations
from leadflow.sinks.reports import Report
from leadflow.sinks.tables import DdlError, check_identifier
from leadflow.streams.logs import get_logger
from leadflow.streams.security import clickhouse_options
from leadflow.streams.settings import Settings

console = Console()
log = get_logger(__name__)
FORMATS = ("table", "json", "csv")


class ClickHouseUnavailable(LeadflowError):
    """ClickHouse cannot be reached (server down, or the local engine locked by another process)."""


class QueryFailed(LeadflowError):
    """ClickHouse refused an ad-hoc query; the message is ClickHouse's reason on one line."""


def one_line(exc: Exception, limit: int = 400) -> str:
    """ClickHouse's reason for a failed query as one short line, without a stack trace.

    The driver's message may span lines (the query echoed back, or a server stack trace);
    the terminal gets the code and reason only, never the driver's Python traceback.

    Example:
        >>> one_line(ValueError("Code: 62. DB::Exception: Syntax error\n FORMAT Native.\n"
        ...                     "Stack trace:\n0. DB::Exception..."))
        'Code: 62. DB::Exception: Syntax error FORMAT Native.'
        >>> one_line(ValueError("Code: 62. Expected: " + "x, " * 99 + "end. (SYNTAX_ERROR)"), 50)
        'Code: 62. Expected: x, x, x, x, ... (SYNTAX_ERROR)'
    """
    text = " ".join(str(exc).split("Stack trace:", 1)[0].split())
    if len(text) <= limit:
        return text
    # ClickHouse ends its message with the error's name, e.g. "(SYNTAX_ERROR)": keep it.
    name = text[text.rfind(" (") :] if text.endswith(")") else ""
    return text[: limit - len(name) - 4] + " ..." + name


def clickhouse_client(settings: Settings) -> Any:
    """The clickhouse-connect client for ``settings.clickhouse_url`` (chdb or HTTP).

    Raises:
        ClickHouseUnavailable: one line saying why, instead of the driver's traceback.
    """
    from clickhouse_connect import get_client

    try:
        return get_client(**clickhouse_options(settings))
    except Exception as exc:  # refused, TLS, auth, or chdb's directory lock
        hint = (
            "; another process holds the embedded engine: a projector serves it over "
            "ClickHouse's HTTP interface (unless LEADFLOW_CLICKHOUSE_HTTP=false), other "
            "commands (replay, workspace views) need it stopped"
            if settings.clickhouse_url.startswith("chdb:")
            else ""
        )
        raise ClickHouseUnavailable(f"cannot open ClickHouse: {exc}{hint}") from None


def analytics_client(settings: Settings) -> tuple[Any, bool]:
    """The client ``report`` and ``sql`` read through, and whether it is the owner's endpoint.

    Locally the projector owns the embedded engine and serves ClickHouse's HTTP interface
    (read-only); when it runs, reads go there, so nobody has to stop it. Otherwise (no
    projector, or a ClickHouse server) this is :func:`clickhouse_client`.

    Raises:
        ClickHouseUnavailable: one line saying why.
    """
    from clickhouse_connect import get_client

    url = served_url(settings) if settings.clickhouse_url.startswith("chdb:") else None
    if url is None:
        return clickhouse_client(settings), False
    password = settings.clickhouse_http_password
    try:
        client = get_client(
            dsn=url,
            username=settings.clickhouse_http_user,
            password=password.get_secret_value() if password else "",
            autogenerate_session_id=False,
        )
    except Exception as exc:  # refused, wrong password: say where and why
        raise ClickHouseUnavailable(
            f"the projector serves the local engine at {url}, but it answered: {exc}"
        ) from None
    return client, True


def prepare_schema(client: Any, database: str, settings: Settings, via_owner: bool) -> None:
    """Migrate (own engine or server), or check the owner did (read-only endpoint)."""
    if not via_owner:
        migrate(client, database, settings.clickhouse_cluster)
        return
    missing = pending_migrations(client, database)
    if missing:
        raise ClickHouseUnavailable(
            f"the running projector has not applied migrations {missing} to {database}; "
            "restart it (it migrates at start)"
        )


def _check_database(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_identifier(value, "database")
    except DdlError as exc:
        raise click.BadParameter(str(exc)) from None


def database_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--database``, refused at parse time unless it is a plain identifier.

    It is pasted into SQL, so a bad name must fail as a usage error before anything
    connects to ClickHouse (and, locally, before the embedded engine's directory is made).
    """
    return click.option(
        "--database", default=DEFAULT_DATABASE, show_default=True, callback=_check_database
    )(func)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def _as_json(report: Report) -> dict[str, Any]:
    return {
        "title": report.title,
        "rows": [{k: _cell(v) for k, v in r.items()} for r in report.as_dicts()],
        "notes": list(report.notes),
    }


def render(report: Report, fmt: str) -> str:
    """The report as text in ``fmt`` (``table``, ``json`` or ``csv``)."""
    if fmt == "json":
        return json.dumps(_as_json(report), indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(report.columns)
        writer.writerows([[_cell(v) for v in row] for row in report.rows])
        return buffer.getvalue().rstrip("\n")
    table = Table(*report.columns, title=report.title)
    for row in report.rows:
        table.add_row(*("" if v is None else str(_cell(v)) for v in row))
    capture = Console(width=200, record=True)
    with capture.capture() as out:
        capture.print(table)
        for note in report.notes:
            capture.print(note)
    return out.get().rstrip("\n")


def render_all(built: list[Report], fmt: str) -> str:
    """Several reports as one text; as JSON, one value (an array when there are several).

    Example:
        >>> r = Report("t", ("a",), [(1,)])
        >>> json.loads(render_all([r, r], "json"))[1]["rows"]
        [{'a': 1}]
    """
    if fmt == "json" and len(built) != 1:
        return json.dumps([_as_json(r) for r in built], indent=2)
    return "\n\n".join(render(r, fmt) for r in built)


def _dates(date_from: datetime | None, date_to: datetime | None) -> tuple[date | None, date | None]:
    """The period's bounds; a missing one is the data's first or last day (the report says so)."""
    if date_from is not None and date_to is not None and date_to <= date_from:
        raise click.UsageError(f"--to ({date_to:%Y-%m-%d}) must be after --from (exclusive end)")
    return (
        date_from.date() if date_from is not None else None,
        date_to.date() if date_to is not None else None,
    )


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")(func)
    func = click.option(
        "--to", "date_to", type=click.DateTime(["%Y-%m-%d"]),
        help="Exclusive (default: the day after the data's last).",
    )(func)  # fmt: skip
    func = click.option(
        "--from", "date_from", type=click.DateTime(["%Y-%m-%d"]),
        help="Default: the data's first day.",
    )(func)  # fmt: skip
    func = database_option(func)
    func = click.option(
        "--workspace", callback=workspace_param, help="Only this workspace (default: all)."
    )(func)
    return func


def _emit(
    ctx: click.Context, database: str, fmt: str, build: Callable[[Any], list[Report]]
) -> None:
    settings = settings_of(ctx)
    client, via_owner = analytics_client(settings)
    try:
        prepare_schema(client, database, settings, via_owner)
        text = render_all(build(client), fmt)
    finally:
        client.close()
    click.echo(text)


@click.group("report")
def report() -> None:
    """Analytics reports over ClickHouse (dates are UTC, --to is exclusive).

    \b
    leadflow report funnel --from 2026-01-01 --to 2026-02-01
    leadflow report attribution --model markov --conversion won --from ... --to ...
    """


@report.command("funnel")
@_common
@click.pass_context
def funnel_cmd(
    ctx: click.Context,
    workspace: str | None,
    database: str,
    date_from: datetime | None,
    date_to: datetime | None,
    fmt: str,
) -> None:
    """Counts and conversion per stage, the largest drop-off and its likely cause."""
    start, end = _dates(date_from, date_to)
    _emit(
        ctx,
        database,
        fmt,
        lambda c: [reports.funnel(c, database, date_from=start, date_to=end, workspace=workspace)],
    )


@report.command("velocity")
@_common
@click.option("--by", type=click.Choice(reports.DIMENSIONS), help="Split by this dimension.")
@click.pass_context
def velocity_cmd(
    ctx: click.Context,
    workspace: str | None,
    database: str,
    date_from: datetime | None,
    date_to: datetime | None,
    fmt: str,
    by: str | None,
) -> None:
    """Time in stage (mean/p50/p90), stage-to-stage conversion and sales cycle."""
    start, end = _dates(date_from, date_to)
    kw: dict[str, Any] = {"date_from": start, "date_to": end, "by": by, "workspace": workspace}
    _emit(
        ctx,
        database,
        fmt,
        lambda c: [
            reports.time_in_stage(c, database, **kw),
            reports.stage_conversion(c, database, **kw),
            reports.sales_cycle(c, database, **kw),
        ],
    )


@report.command("attribution")
@_common
@click.option("--model", type=click.Choice(reports.MODELS), default="linear", show_default=True)
@click.option(
    "--conversion", type=click.Choice(reports.CONVERSIONS), default="won", show_default=True
)
@click.option("--by", type=click.Choice(["channel", "campaign"]), default="channel")
@click.option("--lookback-days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.option("--half-life-days", type=click.FloatRange(0.01, 3650), default=7.0, show_default=True)
@click.option(
    "--order",
    type=click.IntRange(1, 4),
    default=1,
    show_default=True,
    help="Markov chain order (markov, markov_path).",
)
@click.option(
    "--learn-from",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Data-driven models: learn from journeys from this day (default: the period's start).",
)
@click.option(
    "--learn-to",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Data-driven models: ... up to this day, exclusive (default: the period's end).",
)
@click.pass_context
def attribution_cmd(
    ctx: click.Context,
    workspace: str | None,
    database: str,
    date_from: datetime | None,
    date_to: datetime | None,
    fmt: str,
    model: str,
    conversion: str,
    by: str,
    lookback_days: int,
    half_life_days: float,
    order: int,
    learn_from: datetime | None,
    learn_to: datetime | None,
) -> None:
    """Credit for conversions (and revenue) per channel or campaign under one model.

    Models (docs/analytics.md, "Attribution"): the rule models, and markov (removal effects,
    as ChannelAttribution), markov_path (removal effects split per path) and shapley, which
    learn from the period's journeys in each workspace (or --learn-from/--learn-to).
    """
    start, end = _dates(date_from, date_to)
    learn_start, learn_end = _dates(learn_from, learn_to)
    _emit(
        ctx,
        database,
        fmt,
        lambda c: [
            reports.attribution(
                c, database, model=model, conversion=conversion, date_from=start, date_to=end,
                by=by, lookback_days=lookback_days, half_life_days=half_life_days,
                workspace=workspace, order=order, learn_from=learn_start, learn_to=learn_end,
            )
        ],
    )  # fmt: skip


@report.command("kpis")
@_common
@click.pass_context
def kpis_cmd(
    ctx: click.Context,
    workspace: str | None,
    database: str,
    date_from: datetime | None,
    date_to: datetime | None,
    fmt: str,
) -> None:
    """CPL, cost per MQL/SQL, CAC, stage rates, revenue and LTV:CAC by source."""
    start, end = _dates(date_from, date_to)
    _emit(
        ctx,
        database,
        fmt,
        lambda c: [reports.kpis(c, database, date_from=start, date_to=end, workspace=workspace)],
    )


@report.command("lost")
@_common
@click.pass_context
def lost_cmd(
    ctx: click.Context,
    workspace: str | None,
    database: str,
    date_from: datetime | None,
    date_to: datetime | None,
    fmt: str,
) -> None:
    """Disqualification, recycle and loss reasons by stage, source and segment."""
    start, end = _dates(date_from, date_to)
    _emit(
        ctx,
        database,
        fmt,
        lambda c: [
            reports.lost_reasons(c, database, date_from=start, date_to=end, workspace=workspace)
        ],
    )


@report.command("experiments")
@_common
@click.option(
    "--conversion", type=click.Choice(reports.CONVERSIONS), default="lead", show_default=True
)
@click.pass_context
def experiments_cmd(
    ctx: click.Context,
    workspace: str | None,
    database: str,
    date_from: datetime | None,
    date_to: datetime | None,
    fmt: str,
    conversion: str,
) -> None:
    """Conversion per experiment variant with a two-proportion z-test."""
    start, end = _dates(date_from, date_to)
    _emit(
        ctx,
        database,
        fmt,
        lambda c: [
            reports.experiments(
                c,
                database,
                conversion=conversion,
                date_from=start,
                date_to=end,
                workspace=workspace,
            )
        ],
    )


def _policy(settings: Settings) -> Policy:
    """The policy the workers run (LEADFLOW_POLICY_FILE, else the packaged default)."""
    path = settings.policy_file
    if path is None:
        return load_default_policy()
    try:
        text = path.read_text()
    except OSError as exc:
        raise click.ClickException(
            f"cannot read LEADFLOW_POLICY_FILE {path}: {exc.strerror}"
        ) from None
    return parse_policy(text, str(path))


@report.command("model-health")
@click.option("--workspace", callback=workspace_param, help="Only this workspace (default: all).")
@database_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")
@click.option(
    "--window-days", type=click.IntRange(1, 3650), default=90, show_default=True,
    help="Sliding event-time window of scores whose labels are known.",
)  # fmt: skip
@click.option(
    "--refused-days", type=click.IntRange(1, 3650), default=7, show_default=True,
    help="Receive-time window of the refused-inputs share (inputs_refused above 50%).",
)  # fmt: skip
@click.pass_context
def model_health_cmd(
    ctx: click.Context,
    workspace: str | None,
    database: str,
    fmt: str,
    window_days: int,
    refused_days: int,
) -> None:
    """The model's label balance, AUC and ECE per workspace over a sliding window, warnings.

    Labels are the trainer's (the policy's labels.conversion within
    labels.negative_horizon_days); few_labels uses the policy's model.min_labels. Beside
    them the share of inbound messages refused (collector or worker dead letters) in the
    last --refused-days; inputs_refused above 50%. Each warning is also printed on stderr
    and logged (model.health).
    """
    settings = settings_of(ctx)
    policy = _policy(settings)
    client, via_owner = analytics_client(settings)
    try:
        prepare_schema(client, database, settings, via_owner)
        built = reports.model_health(
            client,
            database,
            window_days=window_days,
            horizon_days=max(1, round(policy.labels.negative_horizon_days)),
            min_labels=policy.model.min_labels,
            conversion=policy.labels.conversion,
            workspace=workspace,
            refused_days=refused_days,
        )
    finally:
        client.close()
    click.echo(render(built, fmt))
    for row in built.as_dicts():
        if row["warnings"]:
            log.warning(
                "model.health",
                source="clickhouse",
                workspace_id=row["workspace"],
                model=row["model"],
                examples=row["examples"],
                positives=row["positives"],
                negatives=row["negatives"],
                auc=row["auc"],
                inputs_refused=row["inputs_refused"],
                refused_share=row["refused_share"],
                warnings=row["warnings"],
            )
    for line in reports.health_warnings(built):
        click.echo(line, err=True)


@click.command("sql")
@click.argument("query")
@database_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")
@click.pass_context
def sql_cmd(ctx: click.Context, query: str, database: str, fmt: str) -> None:
    """Run one ad-hoc query (the default database is --database)."""
    client, _via_owner = analytics_client(settings_of(ctx))
    previous = client.database
    try:
        client.database = database  # the client's default database for this query
        try:
            result = client.query(query)
        except Exception as exc:  # any ClickHouse or driver error: one line, no traceback
            raise QueryFailed(f"query failed: {one_line(exc)}") from None
        rows = [tuple(r) for r in result.result_rows]
        columns = tuple(result.column_names)
    finally:
        # chdb keeps the last database current when set back to None: a later query in
        # the same engine would then run in a database that may have been dropped.
        client.database = previous or "default"
        client.close()
    click.echo(render(Report("sql", columns, rows), fmt))
