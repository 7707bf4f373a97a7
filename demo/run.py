"""``leadflow demo``: the whole pipeline on simulated traffic, then a report people look at.

The demo runs its own stack under ``<data dir>/demo`` on its own ports, so it never
disturbs a stack started with ``leadflow kafka start``: a real Kafka broker, the collector
and a worker as child processes, and the projector in this process (it owns the embedded
ClickHouse, which allows one process per data directory). The simulator posts every event
through the collector's HTTP API, so the demo exercises the real ingest path.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from leadflow.processors.errors import LeadflowError
from leadflow.streams.local_kafka import LocalKafka
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.topics import create_topics
from leadflow.streams.worker import worker_lag

log = get_logger(__name__)
# Wide enough for the report's tables when the output is a file or a CI log.
console = Console(width=None if sys.stdout.isatty() else 160)

WORKSPACE = "demo"


class DemoError(LeadflowError):
    """A part of the demo stack did not come up or did not finish in time."""


def demo_settings(settings: Settings) -> Settings:
    """The demo's own corner: its data dir and ports, and collector limits for bulk sending."""
    return settings.model_copy(
        update={
            "data_dir": (settings.data_dir / "demo").resolve(),
            "kafka_port": settings.kafka_port + 100,
            "kafka_controller_port": settings.kafka_controller_port + 100,
            "collector_port": settings.collector_port + 100,
            "collector_rate_per_second": 100_000.0,
            "collector_rate_burst": 100_000.0,
            "log_format": "json",
        }
    )


@dataclass
class Stack:
    """The demo's child processes (collector, worker), with logs and pid files in one place."""

    settings: Settings
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        """Where logs and pid files go."""
        return self.settings.data_dir / "run"

    def spawn(self, name: str, *args: str) -> Path:
        """Start ``leadflow <args>`` with the demo settings; return its log file."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.run_dir / f"{name}.log"
        process = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "leadflow", *args],
            env={**os.environ, **self.settings.to_env()},
            stdout=log_file.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children[name] = process
        (self.run_dir / f"{name}.pid").write_text(str(process.pid))
        return log_file

    def wait_for(self, name: str, ready: str, log_file: Path, timeout: float = 120.0) -> None:
        """Wait until ``ready`` appears in the child's log."""
        deadline = time.monotonic() + timeout
        process = self.children[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_file.read_text(errors="replace")[-2000:]
                raise DemoError(f"{name} exited with {process.returncode}:\n{tail}")
            if ready.encode() in log_file.read_bytes():
                return
            time.sleep(0.25)
        raise DemoError(f"{name} was not ready within {timeout:.0f}s (log: {log_file})")

    def check_alive(self) -> None:
        """Raise with the child's log tail if any child has died."""
        for name, process in self.children.items():
            if process.poll() is not None:
                tail = (self.run_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise DemoError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Stop every child started by this or an earlier demo run (pid files), and wait.

        Returns the names of those that were running.
        """
        named: dict[str, int] = {}
        for pid_file in sorted(self.run_dir.glob("*.pid")) if self.run_dir.exists() else []:
            with suppress(ValueError):
                named[pid_file.stem] = int(pid_file.read_text())
            pid_file.unlink(missing_ok=True)
        running = [name for name, group in named.items() if _alive(group)]
        groups = list(named.values())
        for group in groups:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for group in groups:
            while _alive(group) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(group):
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
        return running


def _alive(pid: int) -> bool:
    # An exited child of this process stays a zombie, which kill(pid, 0) still finds, until
    # it is reaped. `leadflow demo` stops its children with a fresh Stack that holds no
    # Popen for them, so it reaps them here, or it waited out the whole timeout (30 s of
    # every run). Another process's pid (demo --stop after --keep) is reaped by its parent.
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_collector(url: str, timeout: float = 60.0) -> None:
    """Wait until the collector says it is ready (Kafka reachable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise DemoError(f"the collector at {url} did not become ready")


def wait_drained(stack: Stack, timeout: float = 600.0) -> None:
    """Wait until the worker has caught up (lag 0 twice in a row), with a progress line."""
    settings = stack.settings
    deadline = time.monotonic() + timeout
    zeros = 0
    with console.status("worker catching up...") as status:
        while zeros < 2:
            stack.check_alive()
            if time.monotonic() > deadline:
                raise DemoError("the worker did not catch up in time")
            lag = worker_lag(settings)
            zeros = zeros + 1 if lag == 0 else 0
            status.update(f"worker catching up: {lag:,} records to go")
            time.sleep(1.5)


@contextmanager
def projector_thread(settings: Settings, client: Any) -> Iterator[None]:
    """Project into ClickHouse live while the demo runs; catch up fully on exit."""
    from leadflow.sinks.projector import Projector

    stop = threading.Event()
    live = Projector(settings, client, "leadflow")
    thread = threading.Thread(target=live.run, args=(stop,), name="projector", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)
        live.close()
    Projector(settings, client, "leadflow").run_until_idle(max_seconds=300)


def run_demo(settings: Settings, people: int, days: float, seed: int, out: Path) -> None:
    """Start the stack, simulate, wait for the pipeline, write and print the report."""
    from clickhouse_connect import get_client

    from leadflow.demo.report import write_report
    from leadflow.demo.simulator.generator import SimConfig, Simulation
    from leadflow.demo.simulator.send import send_http
    from leadflow.streams.collector.app import keys_path
    from leadflow.streams.collector.keys import KeyStore

    started = time.monotonic()
    stack = Stack(settings)
    broker = LocalKafka.from_settings(settings)
    broker.stop()
    stack.stop()
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    settings.data_dir.mkdir(parents=True)

    with console.status("starting Kafka..."):
        broker = LocalKafka.from_settings(settings)
        broker.start()
        create_topics(settings)
    console.print(f"[green]✓[/] Kafka {settings.kafka_version} on {broker.bootstrap}")

    write_key = KeyStore(keys_path(settings)).create(WORKSPACE, now=lambda: datetime.now(UTC))
    url = f"http://{settings.collector_host}:{settings.collector_port}"
    with console.status("starting the collector and the worker..."):
        stack.spawn("collector", "collector")
        worker_log = stack.spawn("worker", "worker")
        wait_collector(url)
        stack.wait_for("worker", "worker.ready", worker_log)
    console.print(f"[green]✓[/] collector on {url}, worker ready (logs in {stack.run_dir})")

    client = get_client(dsn=settings.clickhouse_url)
    simulation = Simulation(SimConfig(people=people, days=days, seed=seed))
    with projector_thread(settings, client):
        progress = Progress(
            TextColumn("simulating {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        with progress:
            task = progress.add_task(f"{people:,} people, {days:.0f} days", total=None)
            report = send_http(
                simulation.messages(),
                collector_url=url,
                write_key=write_key,
                on_sent=lambda n, _message: progress.advance(task, n),
            )
        console.print(
            f"[green]✓[/] {report.sent:,} events acknowledged by the collector (in Kafka)"
        )
        wait_drained(stack)
    console.print("[green]✓[/] worker and projector caught up")

    truth = simulation.ground_truth()
    write_report(settings, client, truth, out, console)
    console.print(f"\nDemo took {time.monotonic() - started:.0f}s.")
