"""``leadflow worker``: run the stream processors (the runtime is ``streams/worker.py``)."""

from __future__ import annotations

import click

from leadflow.cli.options import fail, settings_of
from leadflow.processors.errors import LeadflowError
from leadflow.streams.worker import run_worker


@click.command("worker")
@click.pass_context
def worker_cmd(ctx: click.Context) -> None:
    """Run the stream processors: identity, lead state and scoring, trainer.

    Start as many workers as you like with the same settings: they form one consumer
    group and share the partitions (LEADFLOW_TOPIC_PARTITIONS bounds the parallelism).
    Each needs its own LEADFLOW_DATA_DIR (it holds the worker's transactional identity).
    The topics must exist (`leadflow topics create`).
    """
    try:
        run_worker(settings_of(ctx))
    except LeadflowError as exc:
        fail(str(exc))
