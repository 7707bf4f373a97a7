"""The demo's report: terminal tables, PNG charts and one HTML page, from ClickHouse.

Every number comes from the analytics in ``sinks.reports`` (the same functions behind
``leadflow report``), scoped to the demo workspace; this module only lays them out.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from leadflow.demo.simulator.generator import LeadTruth
from leadflow.demo.simulator.truth import auc, best_possible_auc
from leadflow.sinks import reports
from leadflow.sinks.reports import Report
from leadflow.streams.settings import Settings

DB = "leadflow"
WORKSPACE = "demo"
# No dates: every report covers all the simulated data and its title names the real span.
FROM: date | None = None
TO: date | None = None
STAGES = ("visitor", "lead", "mql", "sql", "opportunity", "customer")
COLORS = ("#1d3557", "#457b9d", "#a8dadc", "#e63946", "#f4a261", "#2a9d8f", "#6d597a", "#b5838d")


@dataclass(frozen=True)
class ModelQuality:
    """How well each score ranks the leads that sales accepted (simulator ground truth)."""

    leads: int
    converted: int
    rule_auc: float | None
    rule_auc_model_leads: float | None  # the rule score on exactly the leads the model scored
    model_auc: float | None
    best_auc: float | None
    prequential: dict[str, Any]


def model_quality(settings: Settings, client: Any, truth: dict[str, LeadTruth]) -> ModelQuality:
    """Rule score and model score AUC (scores before SQL) next to the best possible."""
    from leadflow.processors.model import ScoreModel
    from leadflow.streams.model_feed import latest_snapshots
    from leadflow.streams.worker import model_key

    scores = reports.lead_scores(client, DB, workspace=WORKSPACE).rows
    labelled = [(truth[lead], rule, model) for lead, rule, model in scores if lead in truth]
    labels = [t.converted for t, _, _ in labelled]
    rule_auc = auc([r for _, r, _ in labelled], labels) if 0 < sum(labels) < len(labels) else None
    model_rows = [(t.converted, m) for t, _, m in labelled if m is not None]
    both = bool(model_rows) and 0 < sum(c for c, _ in model_rows) < len(model_rows)
    model_auc = auc([m for _, m in model_rows], [c for c, _ in model_rows]) if both else None
    # Leads scored before the first model snapshot have no model score; comparing the
    # rule score on all leads with the model on the rest would compare different leads.
    same = [(t.converted, r) for t, r, m in labelled if m is not None]
    rule_auc_model_leads = auc([r for _, r in same], [c for c, _ in same]) if both else None
    snapshot = latest_snapshots(settings).get(WORKSPACE.encode())
    prequential: dict[str, Any] = {}
    if snapshot is not None:
        health = ScoreModel.restore(snapshot, model_key(settings)).health()
        prequential = {
            "auc": health.window_auc,
            "n_learned": health.n_learned,
            "warnings": ", ".join(health.warnings) or "none",
        }
    return ModelQuality(
        leads=len(labelled),
        converted=sum(labels),
        rule_auc=rule_auc,
        rule_auc_model_leads=rule_auc_model_leads,
        model_auc=model_auc,
        best_auc=best_possible_auc(truth) if truth else None,
        prequential=prequential,
    )


def attribution_side_by_side(client: Any) -> Report:
    """Won revenue credited to each channel under every attribution model, side by side."""
    credit: dict[str, dict[str, float]] = {}
    for model in reports.MODELS:
        report = reports.attribution(
            client,
            DB,
            model=model,
            conversion="won",
            workspace=WORKSPACE,
            date_from=FROM,
            date_to=TO,
        )
        for channel, _conversions, revenue in report.rows:
            credit.setdefault(str(channel), {})[model] = float(revenue or 0.0)
    rows: list[tuple[Any, ...]] = sorted(
        ((ch, *(round(by.get(m, 0.0)) for m in reports.MODELS)) for ch, by in credit.items()),
        key=lambda row: -sum(by_model for by_model in row[1:]),
    )
    return Report(
        "won revenue by channel, every attribution model", ("channel", *reports.MODELS), rows
    )


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def narrow(report: Report, columns: tuple[str, ...]) -> Report:
    """The same report with only ``columns`` (for the terminal; the HTML keeps them all)."""
    index = [report.columns.index(c) for c in columns]
    rows = [tuple(row[i] for i in index) for row in report.rows]
    return Report(report.title, columns, rows, report.notes)


TERMINAL_COLUMNS = {
    "KPIs": ("source", "cost", "leads", "mqls", "sqls", "customers", "revenue", "cpl",
             "cost_per_sql", "cac", "ltv_cac"),
    "latest hand-offs to sales": ("became_sql", "company", "size", "owner", "why", "fit",
                                  "engagement", "model", "first_touch", "qualified"),
}  # fmt: skip


def print_report(console: Console, report: Report) -> None:
    """One report as a rich table, with its notes under it."""
    for prefix, columns in TERMINAL_COLUMNS.items():
        if report.title.startswith(prefix):
            report = narrow(report, columns)
    table = Table(*report.columns, title=report.title, title_justify="left")
    for row in report.rows:
        table.add_row(*(_fmt(v) for v in row))
    console.print(table)
    for note in report.notes:
        console.print(f"  [yellow]{note}[/]")


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def chart_funnel(funnel: Report, path: Path) -> Path:
    """Horizontal funnel: count per stage, with the step conversion rate."""
    stages = [str(r[0]) for r in funnel.rows]
    counts = [int(r[1]) for r in funnel.rows]
    figure, axis = plt.subplots(figsize=(8, 4))
    bars = axis.barh(stages[::-1], counts[::-1], color=COLORS[1])
    for bar, row in zip(bars, funnel.rows[::-1], strict=True):
        rate = f"  {row[2]:.0%} of previous" if isinstance(row[2], float) else ""
        axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {row[1]:,}{rate}",
                  va="center", fontsize=9)  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("people (log scale)")
    axis.set_title("Funnel: how far people got")
    axis.spines[["top", "right"]].set_visible(False)
    return _save(figure, path)


def chart_time_in_stage(velocity: Report, path: Path) -> Path:
    """Median and p90 days in each stage."""
    rows = sorted(velocity.rows, key=lambda r: STAGES.index(r[0]) if r[0] in STAGES else 99)
    stages = [str(r[0]) for r in rows]
    figure, axis = plt.subplots(figsize=(8, 4))
    positions = range(len(stages))
    axis.bar(
        [p - 0.2 for p in positions], [r[4] for r in rows], 0.4, label="median", color=COLORS[1]
    )
    axis.bar([p + 0.2 for p in positions], [r[5] for r in rows], 0.4, label="p90", color=COLORS[3])
    axis.set_xticks(list(positions), stages)
    axis.set_ylabel("days")
    axis.set_title("Time in stage (event time)")
    axis.legend(frameon=False)
    axis.spines[["top", "right"]].set_visible(False)
    return _save(figure, path)


def chart_attribution(side_by_side: Report, path: Path) -> Path:
    """Grouped bars: revenue credit per channel under each model."""
    channels = [str(r[0]) for r in side_by_side.rows]
    models = side_by_side.columns[1:]
    width = 0.8 / max(len(models), 1)
    figure, axis = plt.subplots(figsize=(11, 4.5))
    for i, model in enumerate(models):
        values = [float(r[1 + i]) / 1000 for r in side_by_side.rows]
        axis.bar([c + i * width - 0.4 + width / 2 for c in range(len(channels))], values, width,
                 label=model, color=COLORS[i % len(COLORS)])  # fmt: skip
    axis.set_xticks(range(len(channels)), channels, rotation=20)
    axis.set_ylabel("won revenue credited (k$)")
    axis.set_title("Attribution: which channels produced revenue, under each model")
    axis.legend(ncols=4, frameon=False, fontsize=8)
    axis.spines[["top", "right"]].set_visible(False)
    return _save(figure, path)


def chart_calibration(
    client: Any, truth: dict[str, LeadTruth], quality: ModelQuality, path: Path
) -> Path:
    """Observed acceptance rate per score decile, for the rule score and the model score."""
    rows = [r for r in reports.lead_scores(client, DB, workspace=WORKSPACE).rows if r[0] in truth]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, index, name, value in (
        (axes[0], 1, "rule score (fit + engagement)", quality.rule_auc),
        (axes[1], 2, "model score", quality.model_auc),
    ):
        scored = sorted((r[index], truth[r[0]].converted) for r in rows if r[index] is not None)
        if len(scored) >= 10:
            size = len(scored) // 10
            deciles = [scored[i * size : (i + 1) * size] for i in range(10)]
            means = [sum(s for s, _ in d) / len(d) for d in deciles]
            rates = [sum(c for _, c in d) / len(d) for d in deciles]
            axis.plot(range(1, 11), rates, marker="o", color=COLORS[3])
            axis.set_xticks(range(1, 11))
            for x, (mean, rate) in enumerate(zip(means, rates, strict=True), start=1):
                if x in (1, 10):
                    label = f"avg {mean:.2f}" if abs(mean) < 10 else f"avg {mean:.0f}"
                    axis.annotate(label, (x, rate), textcoords="offset points",
                                  xytext=(0, 8), fontsize=8, ha="center")  # fmt: skip
        auc_text = f"AUC {value:.3f}" if value is not None else "AUC n/a"
        axis.set_title(f"{name}\n{auc_text}", fontsize=10)
        axis.set_xlabel("score decile (1 = lowest)")
        axis.set_ylabel("accepted by sales")
        axis.set_ylim(0, 1)
        axis.spines[["top", "right"]].set_visible(False)
    figure.suptitle("Score calibration: do higher scores convert more?")
    return _save(figure, path)


def _learned(settings: Settings, quality: ModelQuality) -> str:
    if quality.prequential:
        return (
            f"the model learned from {quality.prequential['n_learned']} labelled examples, "
            f"health warnings: {quality.prequential['warnings']}"
        )
    # Without a snapshot the count and the warnings are unknown, not 0 and "none": the
    # worker publishes one per workspace only every snapshot_every examples it learns.
    from leadflow.streams.worker import load_policy

    every = load_policy(settings).model.snapshot_every
    return (
        f"no model snapshot yet (the worker publishes one every {every} labelled examples), "
        "so no prequential AUC"
    )


def _html_table(report: Report) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in report.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in report.rows
    )
    notes = "".join(f"<p class=note>{html.escape(n)}</p>" for n in report.notes)
    return f"<h2>{html.escape(report.title)}</h2><table><tr>{head}</tr>{body}</table>{notes}"


def write_report(
    settings: Settings, client: Any, truth: dict[str, LeadTruth], out: Path, console: Console
) -> Path:
    """Print the demo report, write the charts and the HTML page; return the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    funnel = reports.funnel(client, DB, workspace=WORKSPACE, date_from=FROM, date_to=TO)
    velocity = reports.time_in_stage(client, DB, workspace=WORKSPACE, date_from=FROM, date_to=TO)
    side_by_side = attribution_side_by_side(client)
    kpis = reports.kpis(client, DB, workspace=WORKSPACE, date_from=FROM, date_to=TO)
    handoffs = reports.latest_handoffs(client, DB, workspace=WORKSPACE)
    quality = model_quality(settings, client, truth)
    quality_report = Report(
        "model quality: ranking the leads sales accepted",
        ("score", "AUC"),
        [
            ("rule score (fit + engagement), before SQL", quality.rule_auc),
            ("rule score, the leads the model scored", quality.rule_auc_model_leads),
            ("model score, before SQL", quality.model_auc),
            ("model, prequential (scored before learning)", quality.prequential.get("auc")),
            ("best possible (true propensity)", quality.best_auc),
        ],
        (
            f"{quality.leads} leads, {quality.converted} accepted by sales; "
            f"{_learned(settings, quality)}. 'Best possible' ranks by what was knowable at "
            "capture; scores that see later buying signals can beat it.",
        ),
    )
    sections = (funnel, velocity, side_by_side, kpis, handoffs, quality_report)
    for section in sections:
        print_report(console, section)
    charts = [
        chart_funnel(funnel, out / "funnel.png"),
        chart_time_in_stage(velocity, out / "time_in_stage.png"),
        chart_attribution(side_by_side, out / "attribution.png"),
        chart_calibration(client, truth, quality, out / "calibration.png"),
    ]
    page = out / "report.html"
    images = "".join(f'<img src="{c.name}" alt="{c.stem}">' for c in charts)
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>leadflow demo report</title><style>"
        "body{font-family:system-ui;margin:2rem;color:#1d2433}table{border-collapse:collapse;"
        "margin-bottom:1rem}td,th{border:1px solid #ccd;padding:.25rem .5rem;font-size:.85rem}"
        "img{max-width:100%;display:block;margin:1rem 0}.note{color:#a05a00}</style>"
        "<h1>leadflow demo report</h1>" + images + "".join(_html_table(s) for s in sections)
    )
    console.print(f"\nCharts: {', '.join(str(c) for c in charts)}\nReport: {page}")
    return page
