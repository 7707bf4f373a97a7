"""`leadflow demo` as a new user runs it (`make demo`): the installed command, a subprocess.

Nothing else in `make test` runs the demo, the first thing a fresh clone is asked to show:
a live pipeline, a report in the terminal, PNG charts and an HTML page, and nothing left
running afterwards. Each run starts its own broker, collector and worker under a temp data
dir, on the configured ports + 100 (demo/run.py), which are picked here to be free.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from leadflow.demo.run import Stack
from leadflow.sinks.reports import FUNNEL, MODELS
from leadflow.streams.local_kafka import free_port_run
from leadflow.streams.settings import load_settings
from tests.conftest import free_port

LEADFLOW = str(Path(sys.executable).parent / "leadflow")
# The smallest size whose report has every number filled in: 1,000 people over 90 days
# give about 120 leads, 20 hand-offs, won revenue, and over 100 labelled examples, so the
# worker publishes a model snapshot and the prequential AUC is there (it needs 100).
PEOPLE, DAYS, SEED = 1000, 90, 1
PNG = b"\x89PNG\r\n\x1a\n"
NUL = b"\0"
CHARTS = ("funnel", "time_in_stage", "attribution", "calibration")


def demo_env(data_dir: Path) -> dict[str, str]:
    """A fresh user's environment: no LEADFLOW_* settings but a data dir and free ports.

    The demo listens on the configured ports + 100, so the ports set here are 100 below a
    run of three free ones. LEADFLOW_CACHE_DIR stays: it says where the Kafka jars are.
    """
    base = free_port_run(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADFLOW_")}
    if "LEADFLOW_CACHE_DIR" in os.environ:
        env["LEADFLOW_CACHE_DIR"] = os.environ["LEADFLOW_CACHE_DIR"]
    return {
        **env,
        "LEADFLOW_DATA_DIR": str(data_dir),
        "LEADFLOW_KAFKA_PORT": str(base - 100),
        "LEADFLOW_KAFKA_CONTROLLER_PORT": str(base - 99),
        "LEADFLOW_COLLECTOR_PORT": str(base - 98),
    }


def run(env: dict[str, str], *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEADFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def table(output: str, title: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the rich table whose title starts with ``title``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title))
    top = next(i for i in range(start, len(lines)) if lines[i].startswith("┏"))
    header = [c.strip() for c in lines[top + 1].strip("┃").split("┃")]
    rows = []
    for line in lines[top + 3 :]:
        if line.startswith("└"):
            return header, rows
        rows.append([c.strip() for c in line.strip("│").split("│")])
    raise AssertionError(f"table {title!r} has no end")


def column(output: str, title: str, name: str) -> dict[str, str]:
    """One column of a table, by the row's first cell."""
    header, rows = table(output, title)
    return {row[0]: row[header.index(name)] for row in rows}


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def processes_of(data_dir: Path) -> list[str]:
    """Live processes that name ``data_dir`` in their command line or environment.

    The broker's JVM names its config file under the data dir; the collector and the worker
    get LEADFLOW_DATA_DIR from the demo. Zombies (exited, not yet reaped) do not count.
    """
    found = []
    needle = str(data_dir).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().split(") ")[-1].startswith("Z"):
                continue
            cmdline = (proc / "cmdline").read_bytes()
            if needle in cmdline or needle in (proc / "environ").read_bytes():
                found.append(f"{proc.name}: {cmdline.replace(NUL, b' ').decode()[:200]}")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # exited while we looked, or not ours
    return found


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG, f"{path} is not a PNG"
    # IHDR: width and height, big-endian, right after the signature and the chunk header.
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 400, f"{path}: {width}x{height}"
    assert height >= 300, f"{path}: {width}x{height}"
    assert len(data) > 10_000, f"{path}: {len(data)} bytes, an empty chart?"


@pytest.mark.slow
@pytest.mark.timeout(600)  # about 1 minute on two shared cores; a JVM start and a report
def test_demo_prints_every_section_writes_the_charts_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    data_dir = (tmp_path / "data").resolve()
    out = tmp_path / "reports"
    env = demo_env(data_dir)
    done = run(
        env, "demo", "--people", str(PEOPLE), "--days", str(DAYS), "--seed", str(SEED),
        "--out", str(out),
    )  # fmt: skip
    output = done.stdout
    words = " ".join(output.split())  # rich wraps long lines at 160 columns
    assert done.returncode == 0, f"{output[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in output + done.stderr

    # The live pipeline: every event acknowledged by the collector reached the report.
    sent = re.search(r"✓ ([\d,]+) events acknowledged by the collector", output)
    assert sent is not None, output[:3000]
    assert number(sent[1]) > PEOPLE
    assert "✓ worker and projector caught up" in output

    funnel = {stage: number(n) for stage, n in column(output, "funnel:", "count").items()}
    assert list(funnel) == list(FUNNEL)
    assert funnel["visitor"] == PEOPLE  # each simulated person, through collector and worker
    for stage in ("lead", "sql", "customer"):
        assert funnel[stage] >= 1, funnel
    assert "largest drop-off:" in output

    stays = column(output, "time in stage (days)", "stays")
    p50 = column(output, "time in stage (days)", "p50_days")
    assert {"lead", "sql"} <= set(stays), stays
    assert all(number(p50[stage]) >= 0 for stage in stays)

    header, rows = table(output, "won revenue by channel, every attribution model")
    assert header == ["channel", *MODELS]
    for model in MODELS:  # every model shares out the same won revenue, all of it credited
        assert sum(number(row[header.index(model)]) for row in rows) > 0, model

    kpis = column(output, "KPIs", "sqls")
    assert number(kpis["total"]) >= 1, kpis

    header, handoffs = table(output, "latest hand-offs to sales")
    assert handoffs, "no hand-off in the report"
    for row in handoffs:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d.*", row[0]), row
        assert row[header.index("company")], row
        assert row[header.index("why")], row

    quality = column(output, "model quality:", "AUC")
    assert len(quality) == 5
    for score, auc in quality.items():
        assert 0 < number(auc) <= 1, (score, auc)
    note = re.search(r"(\d+) leads, (\d+) accepted by sales; the model learned from (\d+)", words)
    assert note is not None, output[-2000:]
    assert all(int(n) > 0 for n in note.groups()), note[0]

    for chart in CHARTS:
        assert_png(out / f"{chart}.png")
    page = (out / "report.html").read_text()
    for chart in CHARTS:
        assert f'<img src="{chart}.png"' in page
    assert "latest hand-offs to sales" in page
    assert "model quality" in page
    assert f"Report: {out / 'report.html'}" in output

    # Nothing left: no pid file, no process of this run.
    assert "The demo stack is stopped" in output
    assert not list((data_dir / "demo").rglob("*.pid"))
    assert processes_of(data_dir) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_keep_leaves_a_working_stack_and_stop_stops_it(tmp_path: Path) -> None:
    data_dir = (tmp_path / "data").resolve()
    env = demo_env(data_dir)
    # Tiny: this is about what stays running, not the report.
    done = run(env, "demo", "--people", "60", "--days", "20", "--keep", "--out", str(tmp_path))
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    try:
        assert "The stack keeps running" in done.stdout
        running = processes_of(data_dir)
        assert len(running) == 3, running  # the broker, the collector, the worker
        collector = int(env["LEADFLOW_COLLECTOR_PORT"]) + 100
        assert httpx.get(f"http://127.0.0.1:{collector}/ready", timeout=10).status_code == 200
        # No model snapshot at this size: the note says so rather than "learned from 0".
        assert "no model snapshot yet" in " ".join(done.stdout.split()), done.stdout[-1500:]

        # What it prints to do next works as printed (the exports, then the two commands).
        exports = re.search(r"export (LEADFLOW_\S+=\S+(?: LEADFLOW_\S+=\S+)*)", done.stdout)
        assert exports is not None, done.stdout[-1500:]
        kept = {
            **env,
            **dict(pair.split("=", 1) for pair in exports[1].split()),
            "LEADFLOW_CLICKHOUSE_HTTP_PORT": str(free_port()),
        }
        projected = run(kept, "projector", "--until-idle", "--max-seconds", "120")
        assert projected.returncode == 0, projected.stderr[-3000:]
        funnel = run(kept, "report", "funnel", "--workspace", "demo")
        assert funnel.returncode == 0, funnel.stderr[-3000:]
        assert column(funnel.stdout, "funnel:", "count")["visitor"] == "60", funnel.stdout

        # `leadflow demo --stop` in that shell would look under <demo dir>/demo: it says
        # it found nothing there instead of "stopped".
        wrong = run(kept, "demo", "--stop", timeout=120)
        assert wrong.returncode == 0, wrong.stderr
        assert "no demo stack was running" in wrong.stdout, wrong.stdout
        assert len(processes_of(data_dir)) == 3
    finally:
        stopped = run(env, "demo", "--stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert "demo stack stopped" in stopped.stdout, stopped.stdout
    assert processes_of(data_dir) == []
    assert not list((data_dir / "demo").rglob("*.pid"))


def test_stopping_exited_children_does_not_wait_out_the_timeout(tmp_path: Path) -> None:
    # `leadflow demo` stops its own children with a fresh Stack (cli/demo.py), which holds
    # no Popen for them: their zombies read as alive and every run waited 30 s more.
    stack = Stack(load_settings(data_dir=tmp_path))
    stack.run_dir.mkdir(parents=True)
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    (stack.run_dir / "child.pid").write_text(str(child.pid))
    started = time.monotonic()
    try:
        Stack(stack.settings).stop(timeout=20)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert time.monotonic() - started < 10
    assert not Path(f"/proc/{child.pid}").exists()  # stopped and reaped
