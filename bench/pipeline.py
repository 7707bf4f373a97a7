"""Rows 1, 2, 3, 4 (CPU per process) and 6: the real pipeline on throwaway brokers.

Every scenario gets its own scratch broker (``streams.local_kafka.scratch_broker``) and a
temp data dir, and starts the same processes ``leadflow demo`` starts, with the demo's own
``Stack`` helper: ``leadflow collector``, ``leadflow worker`` (one or two), and the
projector (``bench.projector_host``: the real ``Projector`` plus a freshness poller).

1. baseline: ``bench.passthrough`` (aiokafka consume -> produce, acks=all) drains N
   simulated events that the bench produces straight to ``leadflow.events``;
2. catch-up: the same N events through worker(s) and projector, 1 and 2 workers;
3. end-to-end: N events POSTed to the collector as fast as it acks (one sender), through
   the worker and the projector; then a steady phase at ``--rate`` events/s with probe
   leads (identify + "Stage Changed" accept_mql, which makes them SQL) to time
   ack -> ``leadflow.lead-became-sql`` and ack -> row visible in ClickHouse. The steady
   phase stamps each message's ``timestamp`` as it is sent, as a tracker's SDK does
   (:func:`live_times`); ``--simulated-time`` keeps the simulator's own times, which pass
   180 days of event time in seconds, so every lead of the workspace is re-scored daily
   as its score decays: as many re-scores a second as ~10^9 leads make live
   (docs/benchmarks.md, session 14, "Live traffic");
4. the hand-off's floor: ``bench.txn_floor`` at the steady phase's rate (two empty
   transactional hops), printed as the baseline of the ack -> hand-off figures.

A run "ends" when the worker's and the projector's consumer groups have committed
everything (polled each second), so each throughput includes up to one commit interval.

    python -m bench.pipeline [--events 15000] [--rate 1000] [--seconds 60] [--quick]
                             [--simulated-time]
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import markers, txn_floor
from bench.common import (
    Figure,
    LagProbe,
    add_broker_config,
    broker_note,
    cpu_seconds,
    emit,
    jit_seconds,
    one_broker,
    parser,
    quantile,
)
from bench.query_load import QueryLoad
from leadflow.demo.run import Stack, wait_collector
from leadflow.demo.simulator.generator import Message, SimConfig, Simulation, iso
from leadflow.demo.simulator.send import kafka_sender, send_http, send_kafka
from leadflow.sinks.projector import DEFAULT_GROUP, PROJECTED_TOPICS
from leadflow.streams.engine.kafka import WORKER_GROUP
from leadflow.streams.local_kafka import BrokerProperties, LocalKafka, free_port
from leadflow.streams.settings import Settings, load_settings
from leadflow.streams.stages.lead import WAIT_REPORT_SECONDS
from leadflow.streams.topics import (
    EVENTS,
    EVENTS_BY_LEAD,
    LEAD_BECAME_SQL,
    WORKER_INPUTS,
    TopicSpec,
    create_topics,
)

WORKSPACE = "bench"
WARMUP_WORKSPACE = "bench-warmup"
PASSTHROUGH_REPEATS = 3
PROBE = "probe-"
MESSAGES_PER_PERSON = 9  # measured: the simulator emits ~9.2 messages per person


def simulated(n: int, seed: int) -> Iterator[Message]:
    """The first ``n`` messages of a seeded simulation (same seed, same messages)."""
    people = n // MESSAGES_PER_PERSON + 50
    return itertools.islice(Simulation(SimConfig(people=people, seed=seed)).messages(), n)


def live_times(
    messages: Iterable[Message], clock: Callable[[], float] = time.time
) -> Iterator[Message]:
    """``messages`` with ``timestamp`` set to the clock as each is taken, as an SDK stamps a call.

    ``send_http`` takes a batch's messages before it waits for the batch's pacing slot, so a
    stamp is at most one slot older than its request, like an SDK's queued calls.

    Example:
        >>> ticks = iter([1_796_000_000.0, 1_796_000_000.25])
        >>> [m["timestamp"] for m in live_times([{"n": 1}, {"n": 2}], lambda: next(ticks))]
        ['2026-11-30T00:53:20.000Z', '2026-11-30T00:53:20.250Z']
    """
    for message in messages:
        yield {**message, "timestamp": iso(int(clock() * 1000))}


# Where a scenario's Kafka comes from: one scratch broker (the default), or a cluster that
# ``bench.cluster`` keeps for several scenarios. Yields the broker processes and settings.
KafkaFactory = Callable[[Settings, Path], AbstractContextManager[tuple[list[LocalKafka], Settings]]]


@dataclass
class Running:
    """A started stack: settings, the stacks that own the children, and where things are."""

    brokers: list[LocalKafka]
    settings: Settings
    stacks: list[Stack]
    url: str
    projector: subprocess.Popen[bytes] | None = None
    projector_out: Path | None = None
    seen: dict[str, float] = field(default_factory=dict)
    probe: LagProbe | None = None

    def pids(self) -> dict[str, int]:
        """Process ids of every part, for CPU accounting."""
        out = {name: p.pid for s in self.stacks for name, p in s.children.items()}
        for n, broker in enumerate(self.brokers, start=1):
            if (pid := broker.pid()) is not None:
                out["broker" if len(self.brokers) == 1 else f"broker{n}"] = pid
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of every part (user + system)."""
        out = {}
        for name, pid in self.pids().items():
            with suppress(FileNotFoundError, ProcessLookupError):
                out[name] = cpu_seconds(pid)
        return out

    def check_alive(self) -> None:
        """Raise with a log tail if a child died."""
        for stack in self.stacks:
            stack.check_alive()

    def lag(self) -> int:
        """Records the worker group and the projector group have not committed yet."""
        if self.probe is None:
            inputs = [spec.name for spec in WORKER_INPUTS]
            groups = {WORKER_GROUP: inputs, DEFAULT_GROUP: list(PROJECTED_TOPICS)}
            self.probe = LagProbe(self.settings, groups)
        return self.probe.lag()


def _stack_settings(scratch: Settings, home: Path) -> Settings:
    return scratch.model_copy(
        update={
            "data_dir": home / "stack",
            "collector_port": free_port(),
            "collector_keys_file": home / "keys.json",
            "clickhouse_http_port": free_port(),
            "collector_rate_per_second": 1e9,
            "collector_rate_burst": 1e9,
            "log_format": "json",
        }
    )


@contextmanager
def stack(
    base: Settings,
    home: Path,
    *,
    workers: int,
    collector: bool,
    probes: int = 0,
    kafka: KafkaFactory = one_broker,
) -> Iterator[Running]:
    """Kafka, topics, and the pipeline's processes; everything stopped after."""
    with kafka(base, home) as (brokers, scratch):
        settings = _stack_settings(scratch, home)
        create_topics(settings)
        main = Stack(settings)
        running = Running(brokers, settings, [main], f"http://127.0.0.1:{settings.collector_port}")
        try:
            if collector:
                main.spawn("collector", "collector")
            logs = [(main, "worker0", main.spawn("worker0", "worker"))]
            for i in range(1, workers):
                extra = Stack(settings.model_copy(update={"data_dir": home / f"worker{i}"}))
                running.stacks.append(extra)
                logs.append((extra, f"worker{i}", extra.spawn(f"worker{i}", "worker")))
            running.projector_out = home / "seen.json"
            _spawn_projector(main, running.projector_out, probes)
            if collector:
                wait_collector(running.url)
            for owner, name, log in logs:
                owner.wait_for(name, "worker.ready", log, timeout=180)
            main.wait_for("projector", "projector host ready", main.run_dir / "projector.log")
            yield running
        finally:
            for owner in running.stacks:
                owner.stop()
            if running.projector_out is not None and running.projector_out.exists():
                running.seen = json.loads(running.projector_out.read_text())["seen"]


def _spawn_projector(main: Stack, out: Path, probes: int) -> None:
    main.run_dir.mkdir(parents=True, exist_ok=True)
    log = main.run_dir / "projector.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.projector_host", "--out", str(out),
         "--probe-prefix", PROBE, "--probes", str(probes)],
        env={**os.environ, **main.settings.to_env()},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    main.children["projector"] = process
    (main.run_dir / "projector.pid").write_text(str(process.pid))


def wait_drained(running: Running, timeout: float, every: float = 0.25) -> float:
    """Block until both groups have committed everything (twice in a row).

    Returns when the first of the two zero readings was taken (the second only confirms
    it), so the figure carries at most one polling interval of detection delay.
    """
    deadline = time.monotonic() + timeout
    first_zero: float | None = None
    while True:
        running.check_alive()
        lag = running.lag()
        taken = time.time()
        if lag == 0:
            if first_zero is not None:
                return first_zero
            first_zero = taken
        else:
            first_zero = None
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pipeline did not drain in {timeout:.0f} s (lag {lag})")
        time.sleep(every)


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The JSON lines of ``event`` in a process's log, in order.

    A line that does not parse is skipped: the process may be writing it while it is read
    (the next read gets it whole), or it is not structlog's.
    """
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def release_waits(log: Path, since: float, until: float) -> list[dict[str, Any]]:
    """The worker's ``lead.release_wait`` lines whose whole window lies in ``[since, until]``.

    Each line covers one by-lead partition's records released in the
    ``WAIT_REPORT_SECONDS`` before it (streams/stages/lead.py): the time they waited in the
    release buffer for event-time order, the ordering's own cost (issue 14).

    Example:
        >>> import tempfile
        >>> line = ('{"event": "lead.release_wait", "timestamp": "2026-12-04T10:00:40Z", '
        ...         '"p50_ms": 20.5, "p99_ms": 61.0, "released": 90}')
        >>> with tempfile.TemporaryDirectory() as d:
        ...     log = Path(d) / "worker0.log"
        ...     _ = log.write_text(line + "\\n" + "not json\\n")
        ...     t = datetime(2026, 12, 4, 10, 0, tzinfo=UTC).timestamp()
        ...     inside, late = release_waits(log, t, t + 60), release_waits(log, t + 20, t + 60)
        >>> [w["p50_ms"] for w in inside], late
        ([20.5], [])
    """
    found = []
    for row in log_events(log, "lead.release_wait"):
        at = datetime.fromisoformat(row["timestamp"]).timestamp()
        if since + WAIT_REPORT_SECONDS <= at <= until and row.get("p50_ms") is not None:
            found.append(row)
    return found


# -- scenarios ---------------------------------------------------------------------------


def passthrough(
    base: Settings, home: Path, events: int, warmup: int, kafka: KafkaFactory = one_broker
) -> dict[str, Any]:
    """The baseline: events/s of a raw aiokafka pass-through over ``events`` records.

    With ``warmup``, that many records go through first and are measured apart (``cold``).
    A pass of 5,000 records lasts about a second, and single passes ranged from 2,490 to
    6,736 events/s between runs (session 10): the figure is the median of
    ``PASSTHROUGH_REPEATS`` passes.
    """
    with kafka(base, home) as (brokers, settings):
        create_topics(settings, [EVENTS, TopicSpec("bench.passthrough", "key", "baseline")])
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.passthrough", "--count", str(events),
             "--warmup", str(warmup), "--repeat", str(PASSTHROUGH_REPEATS)],
            env={**os.environ, **settings.to_env()},
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        passes = []
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("the pass-through did not start")
            pids = [pid for b in brokers if (pid := b.pid())]
            sender = kafka_sender(settings)  # warm after the first pass (kafka_sender)
            again = [(WORKSPACE, events)] * (PASSTHROUGH_REPEATS - 1)
            for workspace, count in _passes(events, warmup) + again:
                broker_cpu = -sum(cpu_seconds(pid) for pid in pids)
                broker_jit = -sum(jit_seconds(pid) for pid in pids)
                started = time.time()
                send_kafka(simulated(count, 1), settings=settings, workspace_id=workspace,
                           producer=sender)  # fmt: skip
                result = json.loads(child.stdout.readline())
                broker_cpu += sum(cpu_seconds(pid) for pid in pids)
                broker_jit += sum(jit_seconds(pid) for pid in pids)
                seconds = result["last"] - started
                passes.append({
                    "per_second": count / seconds,
                    "seconds": seconds,
                    "cpu_us": result["cpu"] / count * 1e6,
                    "broker_us": broker_cpu / count * 1e6,
                    "broker_jit_us": broker_jit / count * 1e6,
                })  # fmt: skip
        finally:
            child.kill()
            child.wait()
    runs = sorted(passes[1:] if warmup else passes, key=lambda r: r["per_second"])
    median = runs[len(runs) // 2]
    return {**median, "runs": [round(r["per_second"]) for r in runs],
            "cold": passes[0] if warmup else None}  # fmt: skip


def loop_counts(running: Running, name: str = "worker0", timeout: float = 10.0) -> dict[str, int]:
    """A worker's loop counters now, from the ``worker.dump`` it logs on ``kill -USR1``."""
    owner = next(s for s in running.stacks if name in s.children)
    log_file = owner.run_dir / f"{name}.log"
    before = len(log_events(log_file, "worker.dump"))
    os.kill(owner.children[name].pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(found := log_events(log_file, "worker.dump")) > before:
            return {k: v for k, v in found[-1].items() if isinstance(v, int)}
        time.sleep(0.05)
    raise RuntimeError(f"{name} logged no worker.dump within {timeout:.0f} s ({log_file})")


def wall_notes(loop: dict[str, int]) -> str:
    """Where a worker's wall time went over a pass, from two :func:`loop_counts`' difference.

    Waiting for records includes the pass's start (until the sender's first records are
    read) and the drain's last looks. A held transaction committed while the worker was
    idle, and the loop's housekeeping, count in neither.

    Example:
        >>> wall_notes({"batch_ms": 3000, "batch_cpu_ms": 2000, "commit_ms": 500,
        ...             "send_offsets_ms": 100, "poll_ms": 900})
        '; worker loop: batches 3.00 s (its CPU 2.00 s, ending transactions 0.60 s, waiting for a core 0.40 s), waiting for records 0.90 s'
    """  # noqa: E501
    if not loop:
        return ""
    ending = loop["commit_ms"] + loop["send_offsets_ms"]
    starved = max(loop["batch_ms"] - loop["batch_cpu_ms"] - ending, 0)
    return (
        f"; worker loop: batches {loop['batch_ms'] / 1000:.2f} s (its CPU "
        f"{loop['batch_cpu_ms'] / 1000:.2f} s, ending transactions {ending / 1000:.2f} s, "
        f"waiting for a core {starved / 1000:.2f} s), "
        f"waiting for records {loop['poll_ms'] / 1000:.2f} s"
    )


def machine_notes(
    cpu: dict[str, float], jit: float, bench: float, seconds: float, cores: int
) -> str:
    """How much of the machine a pass used: each process's CPU against the pass's cores.

    ``cpu`` is :meth:`Running.cpu`'s difference over the pass, ``jit`` the broker's JIT
    threads' share of it, ``bench`` this process's own CPU (the sender's produce loop and
    its client threads, the drain's lag checks). A sum near ``seconds * cores`` says the
    pass was bound by the cores rather than by one process waiting for another.

    Example:
        >>> machine_notes({"worker0": 2.0, "projector": 1.2, "broker": 3.5}, jit=1.5,
        ...               bench=0.4, seconds=4.0, cores=2)
        '; machine: 7.10 of 8.00 core-seconds (89 %): worker0 2.00 s, projector 1.20 s, broker 3.50 s (JIT 1.50 s), bench process 0.40 s'
    """  # noqa: E501
    parts = [
        f"{name} {used:.2f} s" + (f" (JIT {jit:.2f} s)" if name == "broker" else "")
        for name, used in cpu.items()
    ]
    used = sum(cpu.values()) + bench
    available = seconds * cores
    share = round(100 * used / available)
    return f"; machine: {used:.2f} of {available:.2f} core-seconds ({share} %): " + ", ".join(
        [*parts, f"bench process {bench:.2f} s"]
    )


def _passes(events: int, warmup: int) -> list[tuple[str, int]]:
    """(workspace, events) of each pass: the warm-up's own workspace first, if any.

    A scratch broker is a fresh JVM: over a first catch-up its JIT compiler threads took
    a quarter to half of its CPU, and its request threads ran interpreted code (broker
    1,860 µs per event without the JIT threads cold, 490 µs in a second pass through the
    same stack; docs/benchmarks.md, session 10). A long-running broker pays neither, so
    the figures are taken on a second pass, the first reported beside them as ``cold``.
    The warm-up's events are the same simulated people in a workspace of their own: they
    share no state with the measured pass.
    """
    return [(WARMUP_WORKSPACE, warmup), (WORKSPACE, events)] if warmup else [(WORKSPACE, events)]


def catch_up(
    base: Settings,
    home: Path,
    events: int,
    workers: int,
    warmup: int,
    kafka: KafkaFactory = one_broker,
) -> dict[str, Any]:
    """Events/s of worker(s) + projector over ``events`` records produced straight to Kafka.

    With ``warmup``, that many records go through first and are measured apart (``cold``).
    """
    passes = []
    with stack(base, home, workers=workers, collector=False, kafka=kafka) as running:
        brokers = [pid for name, pid in running.pids().items() if name.startswith("broker")]
        sender = kafka_sender(running.settings)  # warm after the first pass (kafka_sender)
        for workspace, count in _passes(events, warmup):
            jit = -sum(jit_seconds(pid) for pid in brokers)
            loop_before = loop_counts(running)
            cpu_before, bench_before = running.cpu(), time.process_time()
            started = time.time()
            send_kafka(simulated(count, 1), settings=running.settings, workspace_id=workspace,
                       producer=sender)  # fmt: skip
            ended = wait_drained(running, timeout=max(600.0, count / 20))
            cpu = {k: v - cpu_before.get(k, 0.0) for k, v in running.cpu().items()}
            bench_cpu = time.process_time() - bench_before
            jit += sum(jit_seconds(pid) for pid in brokers)
            # The drain's confirming look and this call count as waiting for records.
            loop = {k: v - loop_before.get(k, 0) for k, v in loop_counts(running).items()}
            seconds = ended - started
            passes.append({"per_second": count / seconds, "seconds": seconds, "cpu": cpu,
                           "broker_jit": jit, "loop": loop, "bench_cpu": bench_cpu})  # fmt: skip
    return {**passes[-1], "cold": passes[0] if warmup else None}


@dataclass
class Probes:
    """Probe leads interleaved with simulated traffic, and when each was acknowledged."""

    every: int
    first: int = 0  # number of the first probe (a second phase continues the numbering)
    positions: dict[int, int] = field(default_factory=dict)  # stream index -> probe number
    acked: dict[int, float] = field(default_factory=dict)
    sent: int = 0

    def stream(self, messages: Iterator[Message], limit: int) -> Iterator[Message]:
        """Simulated messages with an identify + accept_mql pair after every ``every``."""
        index = 0
        probe = self.first
        last = "2026-01-01T00:00:00.000Z"
        for n, message in enumerate(messages):
            if index >= limit:
                return
            last = str(message.get("timestamp", last))
            yield message
            index += 1
            if n % self.every == self.every - 1:
                lead = f"{PROBE}lead-{probe}"
                yield {
                    "type": "identify", "userId": lead, "messageId": f"{PROBE}id-{probe}",
                    "timestamp": last,
                    "traits": {"email": f"{lead}@bench.example", "title": "VP Sales"},
                }  # fmt: skip
                yield {
                    "type": "track", "event": "Stage Changed", "userId": lead,
                    "messageId": f"{PROBE}{probe}", "timestamp": last,
                    "properties": {"action": "accept_mql", "reason": "bench", "actor": "bench"},
                }  # fmt: skip
                self.positions[index + 1] = probe
                index += 2
                probe += 1

    def on_sent(self, count: int, _last: Message) -> None:
        """Note the ack time of every probe in the batch just acknowledged."""
        now = time.time()
        first = self.sent
        self.sent += count
        for position in range(first, self.sent):
            if position in self.positions:
                self.acked[self.positions[position]] = now


class SqlWatcher(threading.Thread):
    """Notes when each probe lead's hand-off arrives on ``leadflow.lead-became-sql``.

    It also watches ``leadflow.events.by-lead`` (when the identity agent has forwarded the
    probe's ``Stage Changed``: the second record keyed by the probe lead, after its
    identify; deadline ticks for the lead come later) and keeps the
    hand-off's Kafka CreateTime, so the latency splits into identity hop, lead hop and
    delivery to this consumer.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="sql-watcher", daemon=True)
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self.consumer = Consumer(
            {**settings.kafka_client_config(), "group.id": "bench-sql", "enable.auto.commit": False}
        )
        assignment = []
        for topic in (LEAD_BECAME_SQL.name, EVENTS_BY_LEAD.name):
            partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assignment += [TopicPartition(topic, p, OFFSET_END) for p in partitions]
        self.consumer.assign(assignment)
        self.seen: dict[int, float] = {}
        self.created: dict[int, float] = {}
        self.by_lead: dict[int, list[float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        """Poll until stopped."""
        prefix = f"{PROBE}lead-".encode()
        while not self.stop.is_set():
            message = self.consumer.poll(0.05)
            if message is None or message.error() is not None:
                continue
            key = message.key() or b""
            if key.startswith(b"["):  # by-lead keys are lead_key(): '["ws","lead"]'
                with suppress(ValueError, IndexError, TypeError):
                    key = str(json.loads(key)[-1]).encode()
            if not key.startswith(prefix):
                continue
            probe = int(key[len(prefix) :])
            if message.topic() == EVENTS_BY_LEAD.name:
                self.by_lead.setdefault(probe, []).append(time.time())
            elif probe not in self.seen:
                self.seen[probe] = time.time()
                self.created[probe] = message.timestamp()[1] / 1000
        self.consumer.close()


def end_to_end(
    base: Settings,
    home: Path,
    events: int,
    warmup: int,
    rate: float | None,
    seconds: float,
    simulated_time: bool = False,
    kafka: KafkaFactory = one_broker,
) -> dict[str, Any]:
    """Max-rate run through the collector, then a steady phase with latency probes.

    With ``warmup``, that many events go through the collector first (``cold_per_second``).
    The steady phases' messages are stamped as they are sent (:func:`live_times`) unless
    ``simulated_time``.
    """
    from leadflow.streams.collector.app import keys_path
    from leadflow.streams.collector.keys import KeyStore

    stamped: Callable[[Iterable[Message]], Iterable[Message]] = (
        (lambda messages: messages) if simulated_time else live_times
    )

    steady_events = int((rate or 1000) * seconds)
    probe_every = max(int((rate or 1000) / 4), 10)  # ~4 probe leads per second
    probes = Probes(every=probe_every)
    max_probes = steady_events // probe_every + 1
    out: dict[str, Any] = {}
    # Two steady phases: the second with analysts querying the projector's HTTP interface.
    with stack(
        base, home, workers=1, collector=True, probes=2 * max_probes, kafka=kafka
    ) as running:
        keys = KeyStore(keys_path(running.settings))
        key = keys.create(WORKSPACE, now=lambda: datetime.now(UTC))
        if warmup:
            started = time.time()
            send_http(
                simulated(warmup, 1),
                collector_url=running.url,
                write_key=keys.create(WARMUP_WORKSPACE, now=lambda: datetime.now(UTC)),
            )
            out["cold_per_second"] = warmup / (wait_drained(running, 600.0) - started)
        idle = running.cpu().get("broker", 0.0)
        time.sleep(5)  # the broker's own idle CPU (KRaft, GC), subtracted below
        out["broker_idle"] = (running.cpu().get("broker", 0.0) - idle) / 5
        brokers = [pid for name, pid in running.pids().items() if name.startswith("broker")]
        jit = -sum(jit_seconds(pid) for pid in brokers)
        cpu_before = running.cpu()
        sender_before = time.process_time()
        started = time.time()
        report = send_http(simulated(events, 1), collector_url=running.url, write_key=key)
        out["ingest_per_second"] = report.per_second
        ended = wait_drained(running, timeout=max(600.0, events / 20))
        out["cpu"] = {k: v - cpu_before.get(k, 0.0) for k, v in running.cpu().items()}
        out["broker_jit"] = jit + sum(jit_seconds(pid) for pid in brokers)
        out["sender_cpu"] = time.process_time() - sender_before
        out["per_second"] = events / (ended - started)
        out["seconds"] = ended - started
        steady = rate or min(1000.0, 0.5 * out["per_second"])
        out["rate"] = steady
        probes.every = max(int(steady / 4), 10)
        watcher = SqlWatcher(running.settings)
        watcher.start()
        steady_started = time.time()
        steady_since = markers.ends(running.settings)  # a request per partition: ~1-2 s
        census_started = time.time()
        phase = send_http(
            stamped(probes.stream(simulated(int(steady * seconds), 2), int(steady * seconds))),
            collector_url=running.url,
            write_key=key,
            rate=steady,
            on_sent=probes.on_sent,
        )
        out["steady_achieved"] = phase.per_second
        out["lag_after_steady"] = running.lag()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(watcher.seen) < len(probes.acked):
            time.sleep(0.5)
        time.sleep(3)  # let the freshness poller see the last rows
        out["steady_seconds"] = time.time() - census_started
        steady_until = markers.ends(running.settings)
        # The same phase again while analysts query: freshness with and without the load.
        loaded = Probes(every=probes.every, first=max_probes)
        load = QueryLoad(f"http://127.0.0.1:{running.settings.clickhouse_http_port}")
        load.start()
        send_http(
            stamped(loaded.stream(simulated(int(steady * seconds), 3), int(steady * seconds))),
            collector_url=running.url,
            write_key=key,
            rate=steady,
            on_sent=loaded.on_sent,
        )
        time.sleep(3)
        out["load"] = load.stop()
        watcher.stop.set()
        watcher.join(10)
        worker_log = running.stacks[0].run_dir / "worker0.log"
        out["release_waits"] = release_waits(worker_log, steady_started, time.time())
        # Every transaction of the run (warm-up, bulk, both steady phases), from the log.
        out["markers"] = markers.count(running.settings)
        # The first steady phase alone (probes and their tail): what the traffic asks of
        # the worker at that rate, without the bulk pass's large batches.
        out["steady_markers"] = markers.count(
            running.settings, since=steady_since, until=steady_until
        )
    seen = running.seen
    out["fresh_loaded_ms"] = sorted(
        (seen[f"{PROBE}{p}"] - t) * 1000 for p, t in loaded.acked.items() if f"{PROBE}{p}" in seen
    )
    out["sql_ms"] = sorted(
        (watcher.seen[p] - t) * 1000 for p, t in probes.acked.items() if p in watcher.seen
    )
    out["fresh_ms"] = sorted(
        (seen[f"{PROBE}{p}"] - t) * 1000 for p, t in probes.acked.items() if f"{PROBE}{p}" in seen
    )
    out["probes"] = len(probes.acked)
    acked = probes.acked
    # The Stage Changed is the probe lead's second record on by-lead (after its identify);
    # later ones are the lead agent's own deadline ticks for that lead.
    out["identity_hop_ms"] = sorted(
        (t[1] - acked[p]) * 1000 for p, t in watcher.by_lead.items() if p in acked and len(t) > 1
    )
    out["lead_hop_ms"] = sorted(
        (watcher.created[p] - t[1]) * 1000
        for p, t in watcher.by_lead.items()
        if p in watcher.created and len(t) > 1
    )
    out["delivery_ms"] = sorted((watcher.seen[p] - c) * 1000 for p, c in watcher.created.items())
    return out


# -- figures -----------------------------------------------------------------------------


def release_wait_figures(windows: list[dict[str, Any]], steady: str, cmd: str) -> list[Figure]:
    """The event-time order's wait in the steady phases (none if no window fit in them)."""
    if not windows:
        print("release wait: no lead.release_wait window fit in the steady phases (each "
              f"covers {WAIT_REPORT_SECONDS:.0f} s; give --seconds >= 20)", flush=True)  # fmt: skip
        return []
    p50s = sorted(float(w["p50_ms"]) for w in windows)
    p99s = sorted(float(w["p99_ms"]) for w in windows)
    released = sum(int(w.get("released", 0)) for w in windows)
    markers = max(int(w.get("forward_markers") or 0) for w in windows)
    where = (f"{len(windows)} partition windows of {WAIT_REPORT_SECONDS:.0f} s, {released:,} "
             f"records released; {steady}")  # fmt: skip
    return [
        Figure("2", "  of which release wait for event-time order, p50 (median of windows)",
               quantile(p50s, 0.5), "ms", command=cmd,
               notes=f"window p50s {p50s[0]:.1f}-{p50s[-1]:.1f} ms; {where}"),
        Figure("2", "  of which release wait for event-time order, p99 (median of windows)",
               quantile(p99s, 0.5), "ms", command=cmd,
               notes=f"window p99s {p99s[0]:.1f}-{p99s[-1]:.1f} ms; forward-marker records "
               f"sent by the worker since its start: {markers:,}"),
    ]  # fmt: skip


def transaction_figures(
    counts: markers.LogCounts, widths: dict[int, float], cmd: str
) -> list[Figure]:
    """Partitions per worker transaction over the end-to-end run, and what they cost.

    ``widths``: ``bench.txn_floor.widths``' median transaction per partitions written.
    """
    total, parts = markers.per_transaction(counts.markers)
    if not parts:
        return []
    transactions = counts.markers[markers.OFFSETS_TOPIC]
    largest = sorted(parts.items(), key=lambda item: -item[1])[:6]
    by_lead = sorted(
        ((kind, n / transactions) for (topic, kind), n in counts.control.items()
         if topic == EVENTS_BY_LEAD.name),
        key=lambda item: -item[1],
    )  # fmt: skip
    return [
        Figure("2", "  partitions written per worker transaction", total, "partitions",
               command=cmd, notes=f"{transactions:,} transactions over the end-to-end run "
               "(warm-up, bulk, both steady phases), counted from the markers in the log "
               "(bench/markers.py); largest: "
               + ", ".join(f"{topic} {n:.2f}" for topic, n in largest)
               + "; leadflow's promise records on by-lead per transaction: "
               + ", ".join(f"{kind} {n:.2f}" for kind, n in by_lead)),
        *_width_cost(total, widths, cmd),
    ]  # fmt: skip


def steady_census_figures(counts: markers.LogCounts, seconds: float, cmd: str) -> list[Figure]:
    """The worker's transactions and every record written, in the first steady phase.

    Per inbound event (a record on ``leadflow.events`` that is not a heartbeat): how many
    transactions the worker commits and how many records the pipeline writes, by topic and
    by kind of control record. At a low rate the promise rounds, not the events, set the
    worker's pace (docs/benchmarks.md, session 22).

    Example:
        >>> counts = markers.LogCounts(
        ...     markers={markers.OFFSETS_TOPIC: 30, "leadflow.events.by-lead": 120},
        ...     control={("leadflow.events", "heartbeat"): 24,
        ...              ("leadflow.events.by-lead", "identity"): 60},
        ...     records={"leadflow.events": 34, "leadflow.events.by-lead": 70})
        >>> [figure] = steady_census_figures(counts, 10.0, "cmd")
        >>> figure.value
        3.0
        >>> figure.notes.split(";")[0]
        '30 in 10 s for 10 inbound events (3.00 per event), 5.0 partitions each'
        >>> figure.notes.split(": ")[-1]
        'identity on leadflow.events.by-lead 6.00, heartbeat on leadflow.events 2.40'
    """
    transactions = counts.markers.get(markers.OFFSETS_TOPIC, 0)
    heartbeats = counts.control.get((EVENTS.name, "heartbeat"), 0)
    inbound = counts.records.get(EVENTS.name, 0) - heartbeats
    if not transactions or inbound <= 0 or seconds <= 0:
        return []
    total, _ = markers.per_transaction(counts.markers)
    written = sorted(counts.records.items(), key=lambda item: -item[1])
    control = sorted(counts.control.items(), key=lambda item: -item[1])
    return [
        Figure("2", "  worker transactions in the steady phase", transactions / seconds,
               "per s", command=cmd,
               notes=f"{transactions:,} in {seconds:.0f} s for {inbound:,} inbound events "
               f"({transactions / inbound:.2f} per event), {total:.1f} partitions each; "
               f"records written per inbound event: {sum(counts.records.values()) / inbound:.1f} "
               "(" + ", ".join(f"{topic} {n / inbound:.2f}" for topic, n in written[:8])
               + "); control records per inbound event: "
               + ", ".join(f"{kind} on {topic} {n / inbound:.2f}" for (topic, kind), n in control)),
    ]  # fmt: skip


def _width_cost(partitions: float, widths: dict[int, float], cmd: str) -> list[Figure]:
    """What the partitions a worker transaction writes add to it, on the floor's broker."""
    if len(widths) < 2:
        return []
    one = min(widths)
    per = txn_floor.slope(widths)
    sizes = ", ".join(f"{size}: {ms:.1f}" for size, ms in sorted(widths.items()))
    return [
        Figure("2", "  what those partitions add to each transaction (bench.txn_floor widths)",
               per * (partitions - one), "ms", baseline=widths[one],
               baseline_name=f"a transaction writing {one}", command=cmd,
               notes=f"{per * 1000:.0f} µs per partition (least squares); median "
               f"transaction back to back by partitions written, ms: {sizes}")
    ]  # fmt: skip


def _cold_notes(
    base_line: dict[str, Any], one: dict[str, Any], e2e: dict[str, Any], warmup: int
) -> dict[str, str]:
    """The warm-up passes' own figures (a fresh broker JVM), for the notes of each row."""
    keys = ("e2e", "catch_up", "pass", "worker", "broker")
    if not warmup:
        return dict.fromkeys(keys, "")
    pass_cold, one_cold = base_line["cold"], one["cold"]
    worker = one_cold["cpu"].get("worker0", float("nan")) / warmup * 1e6
    broker = (one_cold["cpu"].get("broker", float("nan")) - one_cold["broker_jit"]) / warmup * 1e6
    ratio = one_cold["per_second"] / pass_cold["per_second"]
    return {
        "e2e": f"; warm-up pass {e2e['cold_per_second']:.0f} ev/s "
        f"(ratio {e2e['cold_per_second'] / pass_cold['per_second']:.3f} of its pass-through's)",
        "catch_up": f"; warm-up pass {one_cold['per_second']:.0f} ev/s (ratio {ratio:.3f} of "
        f"its pass-through's {pass_cold['per_second']:.0f})",
        "pass": f"; warm-up pass {pass_cold['per_second']:.0f} ev/s, broker "
        f"{pass_cold['broker_us'] - pass_cold['broker_jit_us']:.0f} µs/event without its JIT",
        "worker": f"; warm-up pass {worker:.0f} µs",
        "broker": f"; warm-up pass {broker:.0f} µs without the JIT threads, "
        f"{one_cold['broker_jit'] / warmup * 1e6:.0f} µs in them",
    }


def run(
    events: int,
    warmup: int,
    rate: float | None,
    seconds: float,
    two_workers: bool,
    simulated_time: bool = False,
    overrides: BrokerProperties = (),
) -> list[Figure]:
    """Every scenario, each on its own broker, then the figures.

    ``overrides``: properties of every scenario's scratch broker (``--broker-config``).
    """
    base = load_settings(log_level="INFO")
    cmd = f"python -m bench.pipeline --events {events} --warmup {warmup} --seconds {seconds:g}"
    if simulated_time:
        cmd += " --simulated-time"
    cmd += broker_note(overrides)
    kafka = functools.partial(one_broker, overrides=overrides)
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as tmp:
        home = Path(tmp)
        base_line = passthrough(base, home / "pass", events, warmup, kafka)
        print(f"pass-through: {base_line}", flush=True)
        one = catch_up(base, home / "one", events, 1, warmup, kafka)
        print(f"catch-up, 1 worker: {one}", flush=True)
        two = catch_up(base, home / "two", events, 2, warmup, kafka) if two_workers else None
        print(f"catch-up, 2 workers: {two}", flush=True)
        e2e = end_to_end(
            base, home / "e2e", events, warmup, rate, seconds, simulated_time, kafka=kafka
        )
        print(f"end-to-end: { {k: v for k, v in e2e.items() if not k.endswith('_ms')} }")
        # What two empty transactional hops cost at the same rate: the hand-off's floor.
        floor_warmup = min(15.0, seconds)
        floors, widths = txn_floor.floor(
            base,
            home / "floor",
            (e2e["rate"],),
            seconds,
            floor_warmup,
            txn_floor.WIDTHS,
            overrides=overrides,
        )
        floor = floors[0]
    raw = base_line["per_second"]
    n = f"{events:,} simulated events, 12 partitions"
    if warmup:
        n += f", after {warmup:,} warm-up events through the same stack"
    cold = _cold_notes(base_line, one, e2e, warmup)
    # Issue 17's targets: catch-up >= 0.25 and end-to-end >= 0.2 of the pass-through;
    # CPU per inbound event over the catch-up: worker <= 500 µs, broker <= 400 µs.
    worker_us = one["cpu"].get("worker0", float("nan")) / events * 1e6
    broker_all_us = one["cpu"].get("broker", float("nan")) / events * 1e6
    broker_us = broker_all_us - one["broker_jit"] / events * 1e6
    base_broker_us = base_line["broker_us"] - base_line["broker_jit_us"]
    cores = len(os.sched_getaffinity(0))
    machine = machine_notes(one["cpu"], one["broker_jit"], one["bench_cpu"], one["seconds"], cores)
    figures = [
        Figure("1", "end-to-end: collector -> Kafka -> worker -> ClickHouse", e2e["per_second"],
               "events/s", baseline=raw, baseline_name="raw aiokafka pass-through",
               target="ratio >= 0.2", met=e2e["per_second"] >= 0.2 * raw, command=cmd,
               notes=f"{n}; HTTP ingest alone {e2e['ingest_per_second']:.0f} ev/s (one sender)"
               f"{cold['e2e']}"),
        Figure("1", "catch-up from Kafka: worker + projector (1 worker)", one["per_second"],
               "events/s", baseline=raw, baseline_name="raw aiokafka pass-through",
               target="ratio >= 0.25", met=one["per_second"] >= 0.25 * raw, command=cmd,
               notes=f"{n}{cold['catch_up']}{wall_notes(one['loop'])}{machine}"),
        Figure("1", "baseline: raw aiokafka pass-through (acks=all)", raw, "events/s",
               command=cmd, notes=f"{n}; median of passes at "
               f"{' / '.join(map(str, base_line['runs']))} ev/s; "
               f"pass-through CPU {base_line['cpu_us']:.0f} µs/event, "
               f"broker {base_line['broker_us']:.0f} µs/event{cold['pass']}"),
        Figure("4", "CPU per inbound event over the catch-up: worker", worker_us, "µs/event",
               baseline=base_line["cpu_us"], baseline_name="pass-through process",
               target="<= 500 µs", met=worker_us <= 500, command=cmd,
               notes=f"{one['cpu'].get('worker0', 0):.2f} s / {events:,} events{cold['worker']}"),
        Figure("4", "CPU per inbound event over the catch-up: broker, without its JIT compiler "
               "threads", broker_us, "µs/event", baseline=base_broker_us,
               baseline_name="broker during the pass-through, same", target="<= 400 µs",
               met=broker_us <= 400, command=cmd,
               notes=f"{one['cpu'].get('broker', 0):.2f} s / {events:,} events, idle included; "
               f"with the JIT threads ({one['broker_jit']:.2f} s, a fresh JVM's warm-up) "
               f"{broker_all_us:.0f} µs (pass-through {base_line['broker_us']:.0f} µs)"
               f"{cold['broker']}"),
    ]  # fmt: skip
    if two is not None:
        figures.append(
            Figure("6", "catch-up, 2 workers (same consumer group)", two["per_second"],
                   "events/s", baseline=one["per_second"], baseline_name="1 worker",
                   command=cmd, notes=f"{n}; 2 cores for everything")
        )  # fmt: skip
    sql, fresh = e2e["sql_ms"], e2e["fresh_ms"]
    steady = (
        f"steady {e2e['rate']:.0f} ev/s asked, {e2e['steady_achieved']:.0f} sent, "
        f"{e2e['probes']} probes, "
        f"{'simulated event times' if simulated_time else 'stamped as sent'}; "
        f"lag after the phase {e2e['lag_after_steady']}"
    )
    empty = floor[txn_floor.HOPS[2]]
    floor_name = "two empty transactional hops, same rate (bench.txn_floor)"
    floor_notes = f"; floor: {txn_floor.notes(floor, floor_warmup)}"
    figures += [
        Figure("2", "ack -> lead-became-sql p50", quantile(sql, 0.5), "ms", target="< 50 ms",
               met=bool(sql) and quantile(sql, 0.5) < 50, command=cmd, baseline=empty["p50"],
               baseline_name=floor_name,
               notes=f"{steady}; {len(sql)} hand-offs seen{floor_notes}"),
        Figure("2", "ack -> lead-became-sql p99", quantile(sql, 0.99), "ms", target="< 200 ms",
               met=bool(sql) and quantile(sql, 0.99) < 200, command=cmd, baseline=empty["p99"],
               baseline_name=floor_name, notes=f"{steady}{floor_notes}"),
        *(
            Figure("2", f"  of which {label} p50", quantile(e2e[key], 0.5), "ms", command=cmd,
                   notes=f"p99 {quantile(e2e[key], 0.99):.0f} ms; {len(e2e[key])} probes")
            for key, label in (
                ("identity_hop_ms", "ack -> Stage Changed on events.by-lead (identity hop)"),
                ("lead_hop_ms", "by-lead -> hand-off produced (lead hop, CreateTime)"),
                ("delivery_ms", "hand-off produced -> received by a consumer"),
            )
        ),
        *release_wait_figures(e2e["release_waits"], steady, cmd),
        *transaction_figures(e2e["markers"], widths, cmd),
        *steady_census_figures(e2e["steady_markers"], e2e["steady_seconds"], cmd),
        Figure("3", "ack -> row in ClickHouse p50", quantile(fresh, 0.5), "ms", command=cmd,
               notes=f"{steady}; {len(fresh)} rows seen; poll every 50 ms"),
        Figure("3", "ack -> row in ClickHouse p99", quantile(fresh, 0.99), "ms", target="< 2 s",
               met=bool(fresh) and quantile(fresh, 0.99) < 2000, command=cmd, notes=steady),
    ]  # fmt: skip
    loaded = e2e["fresh_loaded_ms"]
    if fresh and loaded:
        figures.append(
            Figure("3", "ack -> row in ClickHouse p99 under analyst query load",
                   quantile(loaded, 0.99), "ms", baseline=quantile(fresh, 0.99),
                   baseline_name="same phase without queries", target="ratio <= 1.5",
                   met=quantile(loaded, 0.99) <= 1.5 * quantile(fresh, 0.99), command=cmd,
                   notes=f"{len(loaded)} rows seen; load: {e2e['load']}")
        )  # fmt: skip
    cpu = e2e["cpu"]
    parts = {
        "collector": "collector",
        "worker0": "worker (identity + lead + trainer agents)",
        "projector": "projector",
        "broker": "broker",
    }
    if "broker" in cpu:
        # Not "minus its idle": right after the start the broker is warming up and serving
        # the collector's heartbeats, so its "idle" reading (5 s before the run) was above
        # its CPU per second in the run and made this figure negative (session 9).
        cpu["broker"] -= e2e["broker_jit"]
        parts["broker"] = (f"broker, without its JIT compiler threads ({e2e['broker_jit']:.2f} s; "
                           f"{e2e['broker_idle']:.2f} cores busy before the run)")  # fmt: skip
    for name, label in parts.items():
        if name in cpu:
            figures.append(
                Figure("4", f"CPU per event: {label}", cpu[name] / events * 1e6, "µs/event",
                       command=cmd, notes=f"process CPU over the end-to-end run / {events:,} "
                       "inbound events")
            )  # fmt: skip
    figures.append(
        Figure("4", "CPU per event: HTTP sender (load generator)", e2e["sender_cpu"] / events
               * 1e6, "µs/event", command=cmd, notes="competes for the same 2 cores")
    )  # fmt: skip
    return figures


def main() -> None:
    """Parse arguments, run, print and record."""
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--events", type=int, default=None)
    p.add_argument("--rate", type=float, default=None, help="steady phase; default min(1000, "
                   "0.5 x measured end-to-end)")  # fmt: skip
    p.add_argument("--seconds", type=float, default=None, help="length of the steady phase")
    p.add_argument("--one-worker", action="store_true", help="skip the 2-worker run")
    p.add_argument("--warmup", type=int, default=None, help="events sent through each "
                   "scenario's stack first, in a workspace of their own, and reported apart "
                   "(a fresh broker JVM compiles and interprets; default: as many as --events; "
                   "0: measure the cold stack)")  # fmt: skip
    p.add_argument("--simulated-time", action="store_true", help="steady phases keep the "
                   "simulator's event times (180 days in seconds: every lead re-scored daily "
                   "as it decays) instead of stamping each message as it is sent")  # fmt: skip
    add_broker_config(p)
    args = p.parse_args()
    events = args.events or (1_000 if args.quick else 10_000)
    warmup = events if args.warmup is None else args.warmup
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    two = not (args.one_worker or args.quick)
    overrides = tuple(args.broker_config)
    emit(run(events, warmup, args.rate, seconds, two, args.simulated_time, overrides), args.json)


if __name__ == "__main__":
    main()
