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
in the clean run, and every derived record id and value must equal the clean run's, the
model fields included (both runs take a model snapshot every few examples, so models switch
mid-feed at points of the log). Each fault must start and end while the feed is still being
sent.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.cluster.conftest import ClusterRun, busiest_node, group_coordinator
from tests.integration.pipeline.equivalence import Run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_broker_kill_rolling_restart_and_scale_down_derive_what_a_clean_run_derives(
    cluster_run: ClusterRun, counts_checked: Callable[[str], None]
) -> None:
    cluster, settings = cluster_run.cluster, cluster_run.settings
    victim: list[int] = []

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
            cluster_run.stop(run, worker)
            worker.start(wait=True)
            run.note(f"{worker.name} restarted, ready")

    run = cluster_run.run(
        workers=3,
        faults=[
            cluster_run.at(5, "kill -9 the coordinator", kill_coordinator),
            cluster_run.at(12, "broker back", broker_back),
            cluster_run.at(35, "rolling restart of 3 workers", rolling_restart),
            cluster_run.at(65, "scale 3 -> 1", cluster_run.scale_down),
        ],
    )
    counts_checked(
        f"3 brokers, 3 workers, node {victim[0]} killed -9 and back, rolling restart, 3 -> 1, "
        + cluster_run.check(run)
    )
