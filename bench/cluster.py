"""Row 7: throughput on a 3-broker cluster with 1, 2 and 3 workers, and the pass-through on it.

One scratch cluster (``streams.kafka_cluster.scratch_cluster``: 3 KRaft nodes, 3 copies per
partition, ``min.insync.replicas=2``, 384 MB heaps) serves every scenario, so each ratio
compares runs on the same brokers. Between scenarios every topic and consumer group is
deleted, so each starts as empty as a fresh broker would. The scenarios are those of
``bench.pipeline``: the raw pass-through, then catch-up (N simulated events produced
straight to ``leadflow.events``, drained by the worker group and the projector) with 1, 2
and 3 ``leadflow worker`` processes in one consumer group.

All of it shares the machine's 2 cores with the three broker JVMs: more workers cannot
add cores here, so read the scaling ratios together with the CPU per event (the figure the
sizing in docs/operations.md is built on).

Each figure is printed (and appended to ``--json``) as soon as its scenario ends, so a
run that fails later keeps the rows it measured. ``--workers 2`` measures the pass-through
and the 2-worker catch-up only (one row per run, e.g. one turn of a shared machine's lock);
each run starts its own cluster, so its ratio is to its own pass-through.

    python -m bench.cluster [--events 10000] [--workers 1,2,3] [--quick] [--json PATH]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from bench.common import Figure, cpu_seconds, emit, parser
from bench.pipeline import KafkaFactory, catch_up, passthrough
from leadflow.streams.kafka_cluster import KafkaCluster, scratch_cluster
from leadflow.streams.local_kafka import LocalKafka
from leadflow.streams.settings import Settings, load_settings

BROKERS = 3


def reset(settings: Settings, timeout: float = 120.0) -> None:
    """Delete every topic and consumer group, and wait until no broker knows them."""
    admin = AdminClient(settings.kafka_client_config())
    deadline = time.monotonic() + timeout
    groups = [g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid]
    while groups:
        # A stopped worker's membership lasts until its session times out (NON_EMPTY_GROUP).
        failed = []
        for group, future in admin.delete_consumer_groups(groups).items():
            try:
                future.result(timeout=30)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.NON_EMPTY_GROUP:
                    raise
                failed.append(group)
        if failed and time.monotonic() > deadline:
            raise RuntimeError(f"consumer groups {failed} still have members")
        groups = failed
        time.sleep(1.0 if failed else 0)
    topics = [t for t in admin.list_topics(timeout=30).topics if not t.startswith("__")]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result(timeout=30)
    for broker in admin.list_topics(timeout=30).brokers.values():
        # A name still being deleted on one broker would make create_topics say "exists".
        one = AdminClient(
            {**settings.kafka_client_config(), "bootstrap.servers": f"{broker.host}:{broker.port}"}
        )
        while set(topics) & set(one.list_topics(timeout=30).topics):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics not deleted on broker {broker.id} in {timeout:.0f} s")
            time.sleep(0.5)


def idle_cores(cluster: KafkaCluster, seconds: float = 5.0) -> float:
    """Cores the brokers burn with nothing to do (heartbeats, quorum fetches)."""
    pids = [pid for node in cluster.nodes if (pid := node.pid())]
    before = sum(cpu_seconds(pid) for pid in pids)
    time.sleep(seconds)
    return (sum(cpu_seconds(pid) for pid in pids) - before) / seconds


def on(cluster: KafkaCluster) -> KafkaFactory:
    """A scenario's Kafka: this cluster, emptied first."""

    @contextmanager
    def factory(base: Settings, _home: Path) -> Iterator[tuple[list[LocalKafka], Settings]]:
        settings = cluster.settings_for(base).model_copy(update={"topic_replication": None})
        reset(settings)
        yield list(cluster.nodes), settings

    return factory


def run(events: int, workers: Sequence[int] = (1, 2, 3), out: Path | None = None) -> list[Figure]:
    """Pass-through, then catch-up with each of ``workers`` worker counts, all on one cluster.

    Each figure is emitted (printed, appended to ``out``) as soon as it is measured.
    """
    base = load_settings(log_level="INFO")
    cmd = f"python -m bench.cluster --events {events} --workers {','.join(map(str, workers))}"
    n = f"{events:,} simulated events, 12 partitions x 3 copies, min.insync.replicas 2"
    figures: list[Figure] = []
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-cluster-") as tmp:
        home = Path(tmp)
        with scratch_cluster(base, home / "kafka", brokers=BROKERS) as (cluster, _):
            idle = idle_cores(cluster)
            kafka = on(cluster)
            # No warm-up pass: the cluster serves every scenario in turn, so only the
            # pass-through meets cold brokers (row 7's figures were taken this way).
            raw = passthrough(base, home / "pass", events, 0, kafka)
            print(f"pass-through on {BROKERS} brokers: {raw}", flush=True)
            figures.append(
                Figure("7", f"cluster baseline: raw aiokafka pass-through, {BROKERS} brokers",
                       raw["per_second"], "events/s", command=cmd,
                       notes=f"{n}; pass-through CPU {raw['cpu_us']:.0f} µs/event, brokers "
                       f"together {raw['broker_us']:.0f} µs/event, brokers idle {idle:.2f} cores")
            )  # fmt: skip
            emit(figures[-1:], out)
            for count in workers:
                result = catch_up(base, home / f"w{count}", events, count, 0, kafka)
                print(f"catch-up, {count} worker(s): {result}", flush=True)
                rates[count] = result["per_second"]
                figures.append(_catch_up_figure(result, count, events, raw, idle, rates, cmd, n))
                emit(figures[-1:], out)
    return figures


def _catch_up_figure(
    result: dict[str, Any],
    workers: int,
    events: int,
    raw: dict[str, float],
    idle: float,
    rates: dict[int, float],
    cmd: str,
    n: str,
) -> Figure:
    cpu = result["cpu"]
    worker_us = sum(v for k, v in cpu.items() if k.startswith("worker")) / events * 1e6
    brokers = sum(v for k, v in cpu.items() if k.startswith("broker"))
    broker_us = (brokers - idle * result["seconds"]) / events * 1e6
    projector_us = cpu.get("projector", 0.0) / events * 1e6
    scaling = (
        f"{result['per_second'] / rates[1]:.2f}x the 1-worker rate of this run; "
        if 1 in rates and workers != 1
        else ""
    )
    return Figure(
        "7", f"cluster catch-up: worker + projector, {workers} worker(s)",
        result["per_second"], "events/s", baseline=raw["per_second"],
        baseline_name=f"pass-through on the same {BROKERS} brokers", command=cmd,
        notes=f"{n}; {scaling}{result['seconds']:.1f} s; CPU per event: workers "
        f"{worker_us:.0f} µs, brokers {broker_us:.0f} µs (minus their idle {idle:.2f} cores; "
        f"JIT {result['broker_jit'] / events * 1e6:.0f} µs), projector {projector_us:.0f} µs; "
        "2 cores for all",
    )  # fmt: skip


def main() -> None:
    """Parse arguments, run, print and record."""
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--events", type=int, default=None)
    p.add_argument(
        "--workers", default="1,2,3", help="worker counts to measure, comma-separated (1,2,3)"
    )
    args = p.parse_args()
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    run(args.events or (1_000 if args.quick else 10_000), counts, args.json)


if __name__ == "__main__":
    main()
