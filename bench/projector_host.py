"""The pipeline bench's ClickHouse process: the real projector plus a freshness poller.

chdb lets one process own a data directory, so the poller that watches for probe rows
must live where the projector runs. This runs ``sinks.projector.Projector.run`` exactly as
``leadflow projector`` does (same batch size and poll timeout) in one thread, and polls the
events table every ``--every`` seconds for the probe event ids in another (own client),
noting the wall time each first becomes visible. SIGTERM stops both and writes JSON to
``--out``: ``{"seen": {event_id: unix_time}, "records": n}``.

    LEADFLOW_*=... python -m bench.projector_host --out seen.json --probe-prefix p- --probes 100
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from leadflow.cli.report import clickhouse_client
from leadflow.sinks.bench_data import visible_event_ids
from leadflow.sinks.clickhouse_http import serve
from leadflow.sinks.migrations import DEFAULT_DATABASE
from leadflow.sinks.projector import Projector
from leadflow.streams.logs import configure_logging
from leadflow.streams.settings import load_settings


def main() -> None:
    """Project until SIGTERM, watching for probes; then write what was seen."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--probe-prefix", default="probe-")
    p.add_argument("--probes", type=int, default=0)
    p.add_argument("--every", type=float, default=0.05)
    args = p.parse_args()
    settings = load_settings()
    configure_logging(settings)
    stop = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    projector = Projector(settings, clickhouse_client(settings), DEFAULT_DATABASE)
    # As `leadflow projector` does: the owner serves ClickHouse's HTTP interface, which
    # bench.pipeline's query-load phase hammers.
    serving = serve(settings, DEFAULT_DATABASE)
    serving.__enter__()
    thread = threading.Thread(target=projector.run, args=(stop,), name="projector")
    thread.start()
    watcher = clickhouse_client(settings)
    pending = [f"{args.probe_prefix}{i}" for i in range(args.probes)]
    seen: dict[str, float] = {}
    print("projector host ready", flush=True)
    while not stop.wait(args.every):
        if not pending or not projector._migrated:
            continue
        try:
            found = visible_event_ids(watcher, DEFAULT_DATABASE, pending)
        except Exception as exc:  # the table may not exist for a moment after migration
            print(f"probe query failed: {exc}", flush=True)
            continue
        now = time.time()
        for event_id in found:
            seen[event_id] = now
        pending = [i for i in pending if i not in found]
    thread.join(60)
    serving.__exit__(None, None, None)
    args.out.write_text(json.dumps({"seen": seen, "records": projector.stats.records}))


if __name__ == "__main__":
    main()
