"""``leadflow simulate``: seeded B2B traffic into the collector (default) or Kafka."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from leadflow.cli.options import settings_of
from leadflow.demo.simulator.generator import (
    DEFAULT_START,
    LeadTruth,
    Message,
    SimConfig,
    Simulation,
    Tally,
)
from leadflow.demo.simulator.send import SendReport, send_http, send_kafka
from leadflow.demo.simulator.truth import TruthError, best_possible_auc, write_truth

console = Console()


def parse_start(value: str) -> datetime:
    """An ISO-8601 start; a value without a zone is read as UTC.

    Example:
        >>> parse_start("2026-03-01T00:00Z").isoformat()
        '2026-03-01T00:00:00+00:00'
    """
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO-8601 time: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def summary_tables(
    tally: Tally, truth: Mapping[str, LeadTruth], truth_auc: float | None
) -> list[Table]:
    """The dry-run summary: events per kind, the funnel per channel, the outcomes."""
    kinds = Table("event", "count", title="Events per kind")
    for kind, count in tally.events.most_common():
        kinds.add_row(kind, f"{count:,}")
    kinds.add_row("[bold]total", f"[bold]{sum(tally.events.values()):,}")
    channels = Table(
        "channel",
        "people",
        "leads",
        "visitor→lead",
        "SQL",
        "won",
        "revenue",
        title="Acquisition by channel (first touch)",
    )
    for channel, people in tally.people.most_common():
        leads = tally.leads[channel]
        mine = [t for t in truth.values() if t.channel == channel]
        channels.add_row(
            channel,
            f"{people:,}",
            f"{leads:,}",
            f"{leads / people:.1%}",
            f"{sum(t.converted for t in mine):,}",
            f"{sum(t.won for t in mine):,}",
            f"${sum(t.revenue for t in mine):,.0f}",
        )
    people, leads = sum(tally.people.values()), sum(tally.leads.values())
    outcomes = Table("measure", "value", title="Funnel outcomes (event time, within the span)")
    rows = [
        ("people", f"{people:,}"),
        ("leads", f"{leads:,} ({leads / people:.1%} of people)" if people else "0"),
        ("demo requests", f"{tally.demo_requests:,}"),
        ("sales reviews", f"{tally.reviews:,}"),
        ("  reviewed after the 24 h SLA", f"{tally.late_reviews:,}"),
        ("  accepted (SQL)", f"{tally.accepted:,}"),
        ("  rejected", f"{tally.rejected:,}"),
        ("recycled", f"{tally.recycled:,}"),
        ("disqualified", f"{tally.disqualified:,}"),
        ("opportunities", f"{tally.opportunities:,}"),
        ("deals won", f"{tally.won:,}"),
        ("deals lost", f"{tally.lost:,}"),
        ("revenue won", f"${tally.revenue:,.0f}"),
        ("campaign spend", f"${tally.spend:,.0f}"),
        ("unsubscribed", f"{tally.unsubscribed:,}"),
        (
            "best possible AUC (true propensity)",
            f"{truth_auc:.3f}" if truth_auc is not None else "n/a",
        ),
    ]
    for name, value in rows:
        outcomes.add_row(name, value)
    return [kinds, channels, outcomes]


@click.command("simulate")
@click.option(
    "--people",
    default=2_000,
    show_default=True,
    type=click.IntRange(0, None),
    help="Distinct people arriving over the span.",
)
@click.option(
    "--days",
    default=180.0,
    show_default=True,
    type=click.FloatRange(0, None, min_open=True),
    help="Event-time span in days.",
)
@click.option("--seed", default=1, show_default=True, type=int, help="The only randomness.")
@click.option(
    "--start",
    "start_text",
    default=DEFAULT_START.isoformat(),
    show_default=True,
    help="Event time of the span's start (ISO-8601; UTC if no zone).",
)
@click.option(
    "--via",
    type=click.Choice(["http", "kafka"]),
    default="http",
    show_default=True,
    help="Collector HTTP API, or straight to leadflow.events for bulk volume.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, None, min_open=True),
    default=None,
    help="At most this many events per second (default: as fast as allowed).",
)
@click.option("--write-key", default=None, help="Collector write key (required for --via http).")
@click.option(
    "--collector-url",
    default=None,
    help="Collector base URL [default: http://LEADFLOW_COLLECTOR_HOST:PORT].",
)
@click.option(
    "--workspace",
    default="default",
    show_default=True,
    help="Workspace id of the events (--via kafka only; HTTP takes it from the key).",
)
@click.option("--dry-run", is_flag=True, help="Generate only and print a summary.")
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the ground truth (lead -> propensity, outcome) as JSON.",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    people: int,
    days: float,
    seed: int,
    start_text: str,
    via: str,
    rate: float | None,
    write_key: str | None,
    collector_url: str | None,
    workspace: str,
    dry_run: bool,
    truth_path: Path | None,
) -> None:
    """Simulate B2B lead-generation traffic and send it into leadflow.

    Seeded and deterministic: the same options give the same messages (ids included).
    People arrive over --days of event time through eight channels, read blogs and
    pricing, fill lead-magnet forms, get nurture emails, attend webinars, request
    demos; sales accepts or rejects them (sometimes after the 24 h SLA), opens
    opportunities and wins or loses deals. Event time is compressed: everything is
    sent as fast as the collector allows.

    \b
    Examples:
      leadflow simulate --dry-run --people 5000 --truth truth.json
      leadflow simulate --write-key lfw_... --people 3000
      leadflow simulate --via kafka --people 100000 --workspace acme
    """
    settings = settings_of(ctx)
    config = SimConfig(people=people, days=days, seed=seed, start=parse_start(start_text))
    sim = Simulation(config)
    if not dry_run and via == "http" and not write_key:
        raise click.UsageError("--write-key is required with --via http (or use --dry-run)")
    url = collector_url or f"http://{settings.collector_host}:{settings.collector_port}"
    report: SendReport | None = None
    span = config.end_ms - config.start_ms
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("event time", total=span // 86_400_000, rate="")
        counted = 0

        def on_sent(count: int, last: Message) -> None:
            nonlocal counted
            counted += count
            moment = datetime.fromisoformat(str(last["timestamp"]).replace("Z", "+00:00"))
            elapsed = progress.tasks[task].elapsed or 0.0
            progress.update(
                task,
                completed=(int(moment.timestamp() * 1000) - config.start_ms) // 86_400_000,
                description=f"{'generating' if dry_run else 'sending'} {moment:%Y-%m-%d}",
                rate=f"{counted:,} events, {counted / elapsed if elapsed else 0:,.0f}/s",
            )

        messages = sim.messages()
        if dry_run:
            batch = 0
            for message in messages:
                batch += 1
                if batch == 2_000:
                    on_sent(batch, message)
                    batch = 0
        elif via == "http":
            assert write_key is not None
            report = send_http(
                messages, collector_url=url, write_key=write_key, rate=rate, on_sent=on_sent
            )
        else:
            report = send_kafka(
                messages, settings=settings, workspace_id=workspace, rate=rate, on_sent=on_sent
            )
        progress.update(task, completed=span // 86_400_000)
    truth = sim.ground_truth()
    try:
        ceiling: float | None = best_possible_auc(truth)
    except TruthError:
        ceiling = None
    if dry_run:
        for table in summary_tables(sim.tally, truth, ceiling):
            console.print(table)
    total = sum(sim.tally.events.values())
    if report is not None:
        console.print(
            f"sent {report.sent:,} events via {via} in {report.seconds:.1f}s "
            f"({report.per_second:,.0f}/s, {report.retries} retries)"
        )
    console.print(
        f"{total:,} events from {people:,} people "
        f"({total / people if people else 0:.1f} per person), seed {seed}, "
        f"{sum(sim.tally.leads.values()):,} leads, {sim.tally.accepted:,} SQLs, "
        f"{sim.tally.won:,} won"
    )
    if truth_path is not None:
        write_truth(truth_path, truth)
        console.print(f"ground truth of {len(truth):,} leads written to {truth_path}")
