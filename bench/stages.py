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

    python -m bench.stages [--events 5000] [--partitions 12]
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

from bench.common import Figure, emit, parser
from bench.pipeline import simulated
from leadflow.demo.simulator.send import message_to_event
from tests.unit.streams import test_release_order as harness

COMMAND = "python -m bench.stages --events {events} --partitions {partitions}"


def run(events: int, partitions: int) -> list[Figure]:
    """Run the stages over the first ``events`` simulated messages; return the figure."""
    inbound = sorted(
        (message_to_event(m, "bench") for m in simulated(events, 1)), key=lambda e: e.received_at
    )
    writes: Counter[str] = Counter()
    put = harness.Ctx.put

    def counted(ctx: harness.Ctx, store: str, key: bytes, value: bytes | None) -> None:
        writes[store] += 1
        put(ctx, store, key, value)

    harness.Ctx.put = counted  # type: ignore[method-assign]
    try:
        start = time.process_time()
        out = harness.run_stages(inbound, partitions, 0, iter([]), 0)
        cpu = time.process_time() - start
    finally:
        harness.Ctx.put = put  # type: ignore[method-assign]
    derived = sorted(out.derived.items())
    digest = hashlib.sha256(repr(derived).encode()).hexdigest()[:16]
    extra: dict[str, Any] = {"digest": digest, "store_writes": dict(writes)}
    return [
        Figure(
            "4",
            "CPU per inbound event, identity + lead tasks in one process (no Kafka)",
            cpu / len(inbound) * 1e6,
            "µs/event",
            command=COMMAND.format(events=events, partitions=partitions),
            notes=(
                f"{len(inbound):,} events, {partitions} partitions, "
                f"{sum(len(v) for _, v in derived):,} derived records (digest {digest}); "
                f"store writes: {', '.join(f'{k} {v:,}' for k, v in sorted(writes.items()))}"
            ),
            extra=extra,
        )
    ]


def main() -> None:
    """Parse arguments, run, print and record."""
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--events", type=int, default=None)
    p.add_argument("--partitions", type=int, default=12)
    args = p.parse_args()
    emit(run(args.events or (1000 if args.quick else 5000), args.partitions), args.json)


if __name__ == "__main__":
    main()
