"""Row 4 (in-process, the real stage tasks): CPU per inbound event of the worker's identity
and lead tasks, without Kafka.

``bench.processors`` times the pure steps; this runs the worker's own ``IdentityTask`` and
``LeadTask`` (release order, forward frontier, deadlines on the partition's clock, the
quiet decay checks and the state cache) over ``bench.pipeline``'s input, through the
in-memory engine of the stage tests (``tests/unit/streams/test_release_order.py``:
``run_stages``, every task's batch committed in turn, sends delivered in order). What it
leaves out is everything Kafka costs (clients, transactions, the broker), so it is the
floor under the worker's figure in ``bench.pipeline`` and a low-noise way to compare two
builds: same input, same derived bytes (the digest), CPU time of this one process.

    python -m bench.stages [--events 5000] [--partitions 12] [--step-ms 3600000]

The deadline clock steps run as in the worker (``LEADFLOW_DEADLINE_CLOCK_STEP_MS``, default
one hour; session 8's figures were taken without them, ``--step-ms 0``).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

from bench.common import Figure, emit, parser
from bench.pipeline import simulated
from leadflow.demo.simulator.send import message_to_event
from leadflow.streams.engine.stores import PartitionStore
from leadflow.streams.settings import Settings
from tests.unit.streams import test_release_order as harness

COMMAND = "python -m bench.stages --events {events} --partitions {partitions} --step-ms {step_ms}"
# The worker's default clock step (streams/settings.py), read from the field, not the environment.
STEP_MS = int(Settings.model_fields["deadline_clock_step_ms"].default)


def run(events: int, partitions: int, step_ms: int = STEP_MS) -> list[Figure]:
    """Run the stages over the first ``events`` simulated messages; return the figure."""
    inbound = sorted(
        (message_to_event(m, "bench") for m in simulated(events, 1)), key=lambda e: e.received_at
    )
    # What a commit puts on each store's changelog (records, bytes): the engine writes a
    # transaction's pending entries once each, so this, not the puts, is what Kafka carries.
    records: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    names: dict[int, str] = {}
    store_of, commit = harness.Ctx._store, PartitionStore.commit

    def named(ctx: harness.Ctx, name: str) -> PartitionStore:
        store = store_of(ctx, name)
        names[id(store)] = name
        return store

    def counted(store: PartitionStore) -> None:
        name = names.get(id(store), "?")
        records[name] += len(store.pending)
        sizes[name] += sum(len(k) + len(v or b"") for k, v in store.pending.items())
        commit(store)

    harness.Ctx._store = named  # type: ignore[method-assign]
    PartitionStore.commit = counted  # type: ignore[method-assign]
    try:
        start = time.process_time()
        out = harness.run_stages(inbound, partitions, 0, iter([]), 0, step_ms=step_ms)
        cpu = time.process_time() - start
    finally:
        harness.Ctx._store = store_of  # type: ignore[method-assign]
        PartitionStore.commit = commit  # type: ignore[method-assign]
    derived = sorted(out.derived.items())
    digest = hashlib.sha256(repr(derived).encode()).hexdigest()[:16]
    extra: dict[str, Any] = {
        "digest": digest,
        "changelog_records": dict(records),
        "changelog_bytes": dict(sizes),
    }
    return [
        Figure(
            "4",
            "CPU per inbound event, identity + lead tasks in one process (no Kafka)",
            cpu / len(inbound) * 1e6,
            "µs/event",
            command=COMMAND.format(events=events, partitions=partitions, step_ms=step_ms),
            notes=(
                f"{len(inbound):,} events, {partitions} partitions, "
                f"{sum(len(v) for _, v in derived):,} derived records (digest {digest}); "
                "changelog records (KiB): "
                + ", ".join(f"{k} {v:,} ({sizes[k] // 1024:,})" for k, v in sorted(records.items()))
            ),
            extra=extra,
        )
    ]


def main() -> None:
    """Parse arguments, run, print and record."""
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--events", type=int, default=None)
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--step-ms", type=int, default=STEP_MS, help="deadline clock step (0: none)")
    args = p.parse_args()
    events = args.events or (1000 if args.quick else 5000)
    emit(run(events, args.partitions, args.step_ms), args.json)


if __name__ == "__main__":
    main()
