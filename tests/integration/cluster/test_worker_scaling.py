"""Scaling the worker group 1 -> 3 -> 1 on a 3-broker cluster while traffic flows through
the collector; the outputs compared record by record with a clean single-broker run.

Issue 18. The feed of ``test_worker_faults`` (1,407 messages) at 8 messages/s through the real
collector, one ``leadflow worker`` and the projector on a 3-node KRaft cluster; after 15 %
of the feed two more workers join the group (each with its own data dir: it restores the
state of the partitions it is given from the changelogs), after 60 % they are stopped
(SIGTERM) and the first worker takes everything back. Nothing may be lost or derived
differently from the clean run (see ``test_worker_faults`` for what is compared). Its own
module, so it gets a fresh cluster: the harness needs a Kafka no other run wrote to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from leadflow.streams.kafka_cluster import KafkaCluster
from leadflow.streams.settings import Settings
from tests.integration.cluster.conftest import (
    FEED,
    Flowing,
    check_against_clean,
    on_cluster,
    restarts,
    stop,
)
from tests.integration.pipeline.equivalence import Fault, Outputs, Run, run_pipeline
from tests.integration.pipeline.test_crash_equivalence import INBOUND_PARTITIONS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_scaling_workers_1_3_1_derives_what_a_clean_run_derives(
    kafka_cluster: tuple[KafkaCluster, Settings],
    clean_single_broker: Outputs,
    tmp_path: Path,
    counts_checked: Callable[[str], None],
) -> None:
    _cluster, settings = kafka_cluster
    n = len(FEED.messages())
    flowing = Flowing()
    exits: list[int] = []

    def scale_up(run: Run) -> None:
        added = [run.add_worker(), run.add_worker()]
        for worker in added:
            worker.start(wait=False)
        for worker in added:
            worker.wait_ready()
        run.note(f"scaled to {len(run.workers)} workers, all ready")

    def scale_down(run: Run) -> None:
        for worker in run.workers[1:]:
            stop(run, worker, exits)
            run.workers.remove(worker)
        run.note(f"scaled to {len(run.workers)} worker")

    faults = [
        Fault(n * 15 // 100, "scale 1 -> 3", flowing("up", scale_up)),
        Fault(n * 60 // 100, "scale 3 -> 1", flowing("down", scale_down)),
    ]
    run = run_pipeline(
        on_cluster(settings),
        tmp_path,
        FEED,
        workers=1,
        faults=faults,
        inbound_partitions=INBOUND_PARTITIONS,
    )
    log = "\n".join(run.log)
    assert flowing.late == [], f"faults not entirely while traffic flowed: {flowing.late}\n{log}"
    assert set(exits) <= {0}, f"SIGTERMed workers exited {exits}\n{log}"
    counts = check_against_clean(run, clean_single_broker)
    took = ", ".join(f"{k} {v:.0f}s" for k, v in flowing.took.items())
    counts_checked(
        f"3 brokers, workers 1 -> 3 -> 1 ({restarts(run)} exits 70 restarted): "
        f"{counts['acknowledged']} acknowledged, each once on "
        f"leadflow.events, {counts['in ClickHouse']} in ClickHouse, {counts['derived ids']} "
        f"derived ids equal to the clean single-broker run's "
        f"({counts['decay re-scores in one run only']} decay re-scores in one run only: model "
        f"timing); {run.summary()}; faults took "
        f"{took}; log: {'; '.join(run.log)}"
    )
