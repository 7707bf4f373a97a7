"""The worker on a 3-broker cluster: the setup the worker fault tests share.

``test_worker_faults`` and ``test_worker_scaling`` each run the same feed through the real
collector, workers and projector on the module's 3-node cluster with faults while the feed
flows (:class:`ClusterRun`, fixture ``cluster_run``), and compare the outputs record by
record with a clean reference (fixture ``clean_single_broker``): the same feed on a fresh
single broker with one worker and no faults, computed once per session (it needs a Kafka
nobody else wrote to, so not the session's ``kafka`` broker, which other tests fill).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from leadflow.streams.engine.kafka import WORKER_GROUP
from leadflow.streams.kafka_cluster import KafkaCluster
from leadflow.streams.kafka_health import cluster_health
from leadflow.streams.local_kafka import scratch_broker
from leadflow.streams.settings import Settings
from leadflow.streams.topics import LEAD_SCORED
from tests.integration.pipeline.equivalence import (
    CLICKHOUSE_EVENT_IDS,
    Fault,
    Feed,
    Outputs,
    Proc,
    Run,
    run_pipeline,
)
from tests.integration.pipeline.test_crash_equivalence import (
    INBOUND_PARTITIONS,
    TIMING,
    with_snapshot_every,
)

# 150 simulated people (1,407 messages with recycles and hand-offs) at a steady 8 messages/s:
# slow enough that traffic flows through every fault of a run (each test checks it did).
# Both runs take a model snapshot every few examples as the crash test's do
# (``with_snapshot_every``) and switch after SWITCH_RECORDS records, so models switch
# mid-feed and the model fields are compared too: which snapshot scores a record is decided
# by the log (docs/architecture.md, the model switch). At the default gate (100) a by-lead
# partition of this feed (~125 records) released too few records after a snapshot's
# position for one to score (measured: 4 snapshots published, only the prior scored).
FEED = Feed(people=150, days=60.0, seed=7, rate=8.0)
SWITCH_RECORDS = 10


def switching(settings: Settings, home: Path) -> Settings:
    """``settings`` with the cluster runs' snapshot frequency and model switch gate."""
    return with_snapshot_every(settings, home).model_copy(
        update={"model_switch_records": SWITCH_RECORDS}
    )


@pytest.fixture(scope="session")
def clean_single_broker(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Outputs:
    """One worker on a fresh single broker, no faults."""
    home = tmp_path_factory.mktemp("clean-single-broker")
    base = switching(base_settings, home)
    with scratch_broker(base, home / "kafka") as (_broker, settings):
        clean = run_pipeline(settings, home, FEED, inbound_partitions=INBOUND_PARTITIONS)
    assert clean.problems() == [], "\n".join(clean.log)
    return clean


# A worker blocked in a client call this long exits 70 for its supervisor (the harness
# plays the supervisor). The default is 120 s. librdkafka's send_offsets_to_transaction can
# wait for a group coordinator that died (librdkafka #5456/#5511) until a connection of the
# producer closes, which its idle close does after 30 s (``WORKER_CONNECTIONS_MAX_IDLE_MS``;
# measured: 36.7 s blocked, then the call returned); 60 s lets that path end such a stall
# and keeps the runs short if it does not.
HUNG_CALL_SECONDS = 60.0


def group_coordinator(settings: Settings, group: str = WORKER_GROUP) -> int:
    """The node coordinating ``group`` (its commits, and the transactions' offsets)."""
    admin = AdminClient(settings.kafka_client_config())
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return int(description.coordinator.id)


def busiest_node(settings: Settings) -> int:
    """The node leading the most partitions (internal topics included: the transaction
    and group coordinators live there)."""
    leaders = cluster_health(settings).leaders()
    return max(sorted(leaders), key=lambda broker: leaders[broker])


class Flowing:
    """Wraps fault actions; records which of them did not run entirely while the feed
    was still being sent (a fault after the feed ended proves nothing about traffic)."""

    def __init__(self) -> None:
        self.late: list[str] = []
        self.took: dict[str, float] = {}

    def __call__(self, name: str, action: Callable[[Run], None]) -> Callable[[Run], None]:
        def wrapped(run: Run) -> None:
            assert run.sender is not None
            started = time.monotonic()
            before = run.sender.done.is_set()
            action(run)
            self.took[name] = time.monotonic() - started
            if before or run.sender.done.is_set():
                self.late.append(name)

        return wrapped


def check_against_clean(
    run: Outputs, clean: Outputs, exclude: Mapping[str, frozenset[str]] = TIMING
) -> dict[str, int]:
    """Nothing lost, every acknowledged event once in Kafka and in ClickHouse as in the
    clean run, every derived id and value as in the clean run (except ``exclude``). Returns
    the counts."""
    assert run.problems() == [], "\n".join(run.log)
    twice = sorted(eid for eid, values in run.inbound.items() if len(values) > 1)
    assert twice == [], f"{len(twice)} acknowledged events twice on leadflow.events: {twice[:5]}"
    in_clickhouse = set(run.reports[CLICKHOUSE_EVENT_IDS])
    assert in_clickhouse <= set(run.inbound)
    not_projected = set(run.inbound) - in_clickhouse
    clean_not_projected = set(clean.inbound) - set(clean.reports[CLICKHOUSE_EVENT_IDS])
    assert not_projected == clean_not_projected, (
        f"{len(not_projected)} inbound events not in ClickHouse "
        f"(clean run: {len(clean_not_projected)})"
    )
    differences = run.compare(clean, exclude)
    assert differences == [], "\n".join([*differences, "-- run log:", *run.log])
    return {
        "acknowledged": run.fed,
        "in ClickHouse": len(in_clickhouse),
        "derived ids": sum(len(ids) for ids in run.topics.values()),
    }


def model_versions(run: Outputs) -> int:
    """How many model versions scored the run's leads (the prior counts as one)."""
    return len({f.get("model_version") for f in run.fields[LEAD_SCORED.name].values()})


def restarts(run: Outputs) -> int:
    """How many times the harness restarted a worker that exited 70."""
    return sum("restarted, as a supervisor would" in line for line in run.log)


class ClusterRun:
    """One run of :data:`FEED` on the module's 3-node cluster with faults while it flows.

    :meth:`at` makes the faults (each recorded by :class:`Flowing`), :meth:`stop` and
    :meth:`scale_down` are the actions both tests use, :meth:`run` runs the pipeline and
    :meth:`check` asserts what both tests assert and returns the counts line for
    ``counts_checked``.
    """

    def __init__(
        self, cluster: KafkaCluster, settings: Settings, clean: Outputs, home: Path
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.clean = clean
        self.home = home
        self.flowing = Flowing()
        self.exits: list[int] = []  # of the SIGTERMed workers

    def at(self, percent: int, name: str, action: Callable[[Run], None]) -> Fault:
        """``action`` once ``percent`` % of the feed was acknowledged."""
        return Fault(len(FEED.messages()) * percent // 100, name, self.flowing(name, action))

    def stop(self, run: Run, worker: Proc) -> None:
        """SIGTERM ``worker`` and record its exit code (one that already exited is only
        noted)."""
        if not worker.alive():
            run.note(f"{worker.name} had already exited ({worker.exits[-1:]})")
            return
        worker.stop()
        self.exits.append(worker.exits[-1])

    def scale_down(self, run: Run) -> None:
        """SIGTERM every worker but the first: the group scales to one."""
        for worker in run.workers[1:]:
            self.stop(run, worker)
            run.workers.remove(worker)
        run.note(f"scaled to {len(run.workers)} worker")

    def run(self, workers: int, faults: Sequence[Fault]) -> Outputs:
        """The pipeline on the cluster, ``workers`` workers at the start, ``faults``."""
        settings = switching(self.settings, self.home)
        return run_pipeline(
            settings.model_copy(update={"worker_hung_call_seconds": HUNG_CALL_SECONDS}),
            self.home,
            FEED,
            workers=workers,
            faults=list(faults),
            inbound_partitions=INBOUND_PARTITIONS,
        )

    def check(self, run: Outputs) -> str:
        """Every fault while the feed flowed, every SIGTERMed worker exited 0, and
        :func:`check_against_clean`; the counts as a line."""
        log = "\n".join(run.log)
        late = self.flowing.late
        assert late == [], f"faults not entirely while traffic flowed: {late}\n{log}"
        assert set(self.exits) <= {0}, f"SIGTERMed workers exited {self.exits}\n{log}"
        counts = check_against_clean(run, self.clean)
        took = ", ".join(f"{k} {v:.0f}s" for k, v in self.flowing.took.items())
        return (
            f"{restarts(run)} exits 70 restarted by the supervisor: "
            f"{counts['acknowledged']} acknowledged, each once on leadflow.events, "
            f"{counts['in ClickHouse']} in ClickHouse, {counts['derived ids']} derived ids "
            f"equal to the clean single-broker run's (model versions scored: "
            f"{model_versions(run)}); {run.summary()}; faults took {took}; "
            f"log: {'; '.join(run.log)}"
        )


@pytest.fixture
def cluster_run(
    kafka_cluster: tuple[KafkaCluster, Settings],
    clean_single_broker: Outputs,
    tmp_path: Path,
) -> ClusterRun:
    """A :class:`ClusterRun` on the module's cluster, compared with the clean run."""
    cluster, settings = kafka_cluster
    return ClusterRun(cluster, settings, clean_single_broker, tmp_path)
