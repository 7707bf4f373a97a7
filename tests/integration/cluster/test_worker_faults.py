"""The worker on a 3-broker cluster: a broker killed -9 and back, a rolling restart of the
workers and scaling 3 -> 1, all while traffic flows through the collector; the outputs
compared record by record with a clean single-broker run of the same input.

Issue 18. One fixed simulated input (150 people, 1,407 messages) is POSTed to the real
collector at 8 messages/s; three real ``leadflow worker`` processes and the projector run
against a 3-node KRaft cluster (replication 3, ``min.insync.replicas=2``). While the feed
flows:

1. the node coordinating the worker group is killed with -9 (the worker's transactions and
   the collector's acks=all produce ride out its fencing on 2 in-sync copies; a worker
   whose client call hangs on the dead coordinator exits 70 and the harness, as its
   supervisor, starts it again);
2. it is started again and the cluster settles (every partition back in sync);
3. the workers are restarted one by one (SIGTERM, wait for exit 0, start, wait ready);
4. two of the three are stopped (SIGTERM): the group scales to one worker.

Every acknowledged event must be on ``leadflow.events`` exactly once and in ClickHouse as
in the clean run, and every derived record id and value (minus the model fields that
depend on timing, :data:`TIMING` of the crash-equivalence test, and the decay re-scores
whose presence follows them; this input publishes no model snapshot, so there are none)
must equal the clean run's. Each fault must start and end while the feed is still being
sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from leadflow.streams.kafka_cluster import KafkaCluster
from leadflow.streams.settings import Settings
from tests.integration.cluster.conftest import (
    FEED,
    Flowing,
    busiest_node,
    check_against_clean,
    group_coordinator,
    on_cluster,
    restarts,
    stop,
)
from tests.integration.pipeline.equivalence import Fault, Outputs, Run, run_pipeline
from tests.integration.pipeline.test_crash_equivalence import INBOUND_PARTITIONS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@dataclass
class Faulted:
    """The faulted run's outputs and what its faults saw."""

    outputs: Outputs
    victim: int
    exits: list[int]
    late: list[str]
    took: dict[str, float]


@pytest.fixture(scope="module")
def faulted(
    kafka_cluster: tuple[KafkaCluster, Settings], tmp_path_factory: pytest.TempPathFactory
) -> Faulted:
    cluster, settings = kafka_cluster
    n = len(FEED.messages())
    flowing = Flowing()
    victim: list[int] = []
    exits: list[int] = []

    def kill_coordinator(run: Run) -> None:
        busiest = busiest_node(settings)
        victim.append(group_coordinator(settings))
        cluster.kill(victim[0])
        run.note(f"node {victim[0]} (the worker group's coordinator) killed -9; busiest {busiest}")

    def broker_back(run: Run) -> None:
        cluster.restart(victim[0])
        run.note(f"node {victim[0]} serving again")
        cluster.wait_settled(settings, timeout=240)
        run.note("cluster settled (every partition in sync)")

    def rolling_restart(run: Run) -> None:
        for worker in run.workers:
            run.supervise()  # one that exited 70 meanwhile is running again
            stop(run, worker, exits)
            worker.start(wait=True)
            run.note(f"{worker.name} restarted, ready")

    def scale_down(run: Run) -> None:
        for worker in run.workers[1:]:
            stop(run, worker, exits)
            run.workers.remove(worker)
        run.note(f"scaled to {len(run.workers)} worker")

    faults = [
        Fault(n * 5 // 100, "kill -9 the coordinator", flowing("kill", kill_coordinator)),
        Fault(n * 12 // 100, "broker back", flowing("back", broker_back)),
        Fault(n * 35 // 100, "rolling restart of 3 workers", flowing("roll", rolling_restart)),
        Fault(n * 65 // 100, "scale 3 -> 1", flowing("scale", scale_down)),
    ]
    outputs = run_pipeline(
        on_cluster(settings),
        tmp_path_factory.mktemp("faulted"),
        FEED,
        workers=3,
        faults=faults,
        inbound_partitions=INBOUND_PARTITIONS,
    )
    return Faulted(outputs, victim[0], exits, flowing.late, flowing.took)


def test_broker_kill_rolling_restart_and_scale_down_derive_what_a_clean_run_derives(
    faulted: Faulted, clean_single_broker: Outputs, counts_checked: Callable[[str], None]
) -> None:
    run = faulted.outputs
    log = "\n".join(run.log)
    assert faulted.late == [], f"faults not entirely while traffic flowed: {faulted.late}\n{log}"
    assert set(faulted.exits) <= {0}, f"SIGTERMed workers exited {faulted.exits}\n{log}"
    counts = check_against_clean(run, clean_single_broker)
    took = ", ".join(f"{k} {v:.0f}s" for k, v in faulted.took.items())
    counts_checked(
        f"3 brokers, 3 workers, node {faulted.victim} killed -9 and back, rolling restart, "
        f"{restarts(run)} exits 70 restarted by the supervisor, "
        f"3 -> 1: {counts['acknowledged']} acknowledged, each once on leadflow.events, "
        f"{counts['in ClickHouse']} in ClickHouse, {counts['derived ids']} derived ids equal "
        f"to the clean single-broker run's ({counts['decay re-scores in one run only']} decay "
        f"re-scores in one run only: model timing); {run.summary()}; faults took {took}; "
        f"log: {'; '.join(run.log)}"
    )
