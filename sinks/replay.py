"""Rebuild the projections from offset 0 into a fresh database, then swap it in.

Steps: create ``<db>_r<N>`` (the next free version) with the current migrations, project
every contract topic into it from the beginning with a fresh consumer group, and when it
has caught up, ``EXCHANGE TABLES`` each table with the live database. Views and
materialized views resolve tables by name, so after the swap ``<db>``'s views read the
rebuilt data and ``<db>_r<N>`` holds the previous data (drop it when satisfied).

Run it with the projector stopped (locally, chdb allows one process anyway). The projector's
own group then resumes from its committed offsets, which are at or before the replay's end:
the overlap is deduplicated by the tables' keys, and nothing after it is missed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from leadflow.processors.errors import LeadflowError
from leadflow.sinks.migrations import migrate
from leadflow.sinks.projector import Projector, ProjectorStats
from leadflow.sinks.tables import ALL_TABLES, check_identifier
from leadflow.streams.settings import Settings


class ReplayError(LeadflowError):
    """The rebuild did not catch up in time, so nothing was swapped."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: where the old data went and how much was projected."""

    database: str
    previous_data_in: str
    stats: ProjectorStats


def next_version(client: Any, database: str) -> str:
    """The next free ``<database>_r<N>`` name."""
    db = check_identifier(database, "database")
    names = [str(r[0]) for r in client.query("SELECT name FROM system.databases").result_rows]
    pattern = re.compile(rf"^{re.escape(db)}_r(\d+)$")
    taken = [int(m.group(1)) for n in names if (m := pattern.match(n))]
    return f"{db}_r{max(taken, default=0) + 1}"


def replay(
    settings: Settings,
    client: Any,
    database: str,
    *,
    max_seconds: float = 3600.0,
    on_batch: Callable[[ProjectorStats], None] | None = None,
) -> ReplayResult:
    """Rebuild ``database`` from offset 0 and swap it in (see the module docstring).

    Raises:
        ReplayError: the rebuild had not caught up after ``max_seconds``; the live
            database is untouched and the partial rebuild is left for inspection.
    """
    db = check_identifier(database, "database")
    cluster = settings.clickhouse_cluster
    migrate(client, db, cluster)
    fresh = next_version(client, db)
    projector = Projector(
        settings, client, fresh, group_id=f"leadflow-replay-{fresh}", on_batch=on_batch
    )
    stats = projector.run_until_idle(max_seconds)
    if not projector.caught_up_at_end:
        raise ReplayError(f"replay into {fresh} did not catch up within {max_seconds:.0f} s")
    on_cluster = f" ON CLUSTER {check_identifier(cluster, 'cluster')}" if cluster else ""
    for table in (*ALL_TABLES, None):
        name = table.name if table is not None else "schema_migrations"
        client.command(f"EXCHANGE TABLES {db}.{name} AND {fresh}.{name}{on_cluster}")
    return ReplayResult(database=db, previous_data_in=fresh, stats=stats)
