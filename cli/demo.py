"""``leadflow demo``: the whole pipeline on simulated traffic (the work is in ``demo/run.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from leadflow.cli.options import FiniteFloatRange, settings_of
from leadflow.demo.run import Stack, console, demo_settings, run_demo
from leadflow.streams.local_kafka import LocalKafka


@click.command("demo")
@click.option(
    "--people",
    type=click.IntRange(min=1),
    default=3000,
    show_default=True,
    help="Simulated people.",
)
@click.option(
    "--days",
    type=FiniteFloatRange(min=0, min_open=True, max=3650),
    default=180.0,
    show_default=True,
    help="Event-time span in days.",
)
@click.option("--seed", default=1, show_default=True, help="Simulation seed (same seed, same run).")
@click.option(
    "--out",
    default=Path("reports"),
    type=click.Path(path_type=Path),
    show_default=True,
    help="Where the charts and the HTML report go.",
)
@click.option("--keep", is_flag=True, help="Leave the stack running afterwards.")
@click.option("--stop", "stop_only", is_flag=True, help="Stop a stack left by --keep and exit.")
@click.pass_context
def demo_cmd(
    ctx: click.Context, people: int, days: float, seed: int, out: Path, keep: bool, stop_only: bool
) -> None:
    """Run the whole pipeline on simulated B2B traffic and show what it found.

    Starts a real Kafka broker, the collector, a worker and the ClickHouse projector under
    LEADFLOW_DATA_DIR/demo (ports: the configured ones + 100), simulates PEOPLE prospects
    over DAYS of event time through the collector's HTTP API, waits for the pipeline to
    catch up, then prints the funnel, velocity, attribution under every model, KPIs, the
    latest hand-offs and model quality, and writes PNG charts and an HTML report to OUT.

    \b
    Examples:
      leadflow demo                      # about 1.5 minutes on 2 cores
      leadflow demo --people 500 --days 90
      leadflow demo --keep               # then: leadflow report funnel, leadflow site ...
      leadflow demo --stop
    """
    settings = demo_settings(settings_of(ctx))
    if stop_only:
        broker = LocalKafka.from_settings(settings)
        stopped = Stack(settings).stop()
        if broker.pid() is not None:
            broker.stop()
            stopped.append("kafka")
        if stopped:
            console.print(f"demo stack stopped: {', '.join(stopped)}")
        else:
            # Said, not "stopped": run with the exports printed by --keep, --stop looks
            # in <that dir>/demo and the stack would keep running unnoticed.
            console.print(f"no demo stack was running under {settings.data_dir}")
        return
    try:
        run_demo(settings, people, days, seed, out)
    finally:
        if not keep:
            Stack(settings).stop()
            LocalKafka.from_settings(settings).stop()
    if keep:
        exports = " ".join(
            f"{name}={settings.to_env()[name]}"
            for name in ("LEADFLOW_DATA_DIR", "LEADFLOW_KAFKA_PORT", "LEADFLOW_COLLECTOR_PORT")
        )
        console.print(
            f"The stack keeps running: Kafka {settings.bootstrap}, collector port "
            f"{settings.collector_port}, a worker. ClickHouse projection stopped with the demo;\n"
            f"to project and query again:  export {exports}\n"
            "  leadflow projector --until-idle && leadflow report funnel --workspace demo\n"
            "Stop it with: leadflow demo --stop (in a shell without those exports)"
        )
    else:
        console.print("The demo stack is stopped; run with --keep to leave it running.")
