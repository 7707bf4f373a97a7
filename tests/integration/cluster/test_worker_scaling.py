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

import pytest

from tests.integration.cluster.conftest import ClusterRun
from tests.integration.pipeline.equivalence import Run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_scaling_workers_1_3_1_derives_what_a_clean_run_derives(
    cluster_run: ClusterRun, counts_checked: Callable[[str], None]
) -> None:
    def scale_up(run: Run) -> None:
        added = [run.add_worker(), run.add_worker()]
        for worker in added:
            worker.start(wait=False)
        for worker in added:
            worker.wait_ready()
        run.note(f"scaled to {len(run.workers)} workers, all ready")

    run = cluster_run.run(
        workers=1,
        faults=[
            cluster_run.at(15, "scale 1 -> 3", scale_up),
            cluster_run.at(60, "scale 3 -> 1", cluster_run.scale_down),
        ],
    )
    counts_checked("3 brokers, workers 1 -> 3 -> 1, " + cluster_run.check(run))
