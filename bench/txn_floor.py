"""Row 2's floor: ack -> output latency of two transactional hops that do no work.

A hand-off leaves the worker at least two transactions after the collector's ack: the
identity stage's (with the heartbeat round that follows the request), then the lead
stage's release (docs/benchmarks.md, "Not met, and why"). This measures what two such hops
cost with nothing in them, on the same kind of scratch broker: a child process with the
worker's own consumer and producer configuration (``streams/engine/kafka.py``) forwards
``bench.floor.in`` to ``bench.floor.mid`` and ``bench.floor.mid`` to ``bench.floor.out``,
one transaction per polled batch with the input offsets sent in it (in a thread from the
transaction's start, as the engine does); a producer with the collector's settings
(``streams/collector/producer.delivery_config``: acks=all, idempotent, ``linger.ms`` 5)
writes at a steady rate, and a ``read_committed`` reader notes when each record comes out
of each hop. No decoding, no state, no heartbeats, no release order: what is left is Kafka's
transactions and the loop.

It also measures what each partition a transaction writes adds to it (:func:`widths`):
transactions back to back with the worker's producer, one record to each of K partitions and
one input offset each, as the worker's batches do (a worker transaction writes 30-35
partitions: ``bench.pipeline`` counts them).

Run alone: ``python -m bench.txn_floor`` (``--rate``, ``--seconds``, ``--warmup-seconds``);
``bench.pipeline`` (so ``make bench``) runs it at its steady phase's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from bench.common import (
    Figure,
    add_broker_config,
    broker_note,
    emit,
    one_broker,
    parser,
    quantile,
)
from leadflow.streams.collector.producer import delivery_config
from leadflow.streams.engine.kafka import consumer_config, producer_config
from leadflow.streams.local_kafka import BrokerProperties
from leadflow.streams.settings import Settings, load_settings
from leadflow.streams.topics import TopicSpec, create_topics

HOPS = ("bench.floor.in", "bench.floor.mid", "bench.floor.out")
GROUP = "bench-floor"
RATES = (50.0, 300.0)  # a trickle, and about half the pipeline's end-to-end rate
# Partitions written per transaction in :func:`widths`: one, a topic's, and past the worker's.
WIDTHS = (1, 12, 24, 48)
WIDE = "bench.floor.wide"  # as many partitions as the widest size


def forward(settings: Settings) -> None:
    """The child: forward each input record to the next hop, one transaction per batch."""
    consumer = Consumer({**consumer_config(settings, "floor"), "group.id": GROUP})
    producer = Producer(producer_config(settings, "bench-floor"))
    producer.init_transactions(30)
    consumer.subscribe(list(HOPS[:2]))
    following = {HOPS[0]: HOPS[1], HOPS[1]: HOPS[2]}
    announced = False
    while True:
        first = consumer.poll(settings.worker_poll_seconds)
        if not announced and consumer.assignment():
            print("ready", flush=True)
            announced = True
        if first is None or first.error() is not None:
            continue
        batch = [first, *consumer.consume(settings.worker_batch_max - 1, timeout=0)]
        records = [m for m in batch if m.error() is None]
        offsets: dict[tuple[str, int], int] = {}
        for m in records:
            offsets[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
        producer.begin_transaction()
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        sender = threading.Thread(
            target=producer.send_offsets_to_transaction,
            args=(tps, consumer.consumer_group_metadata(), 30),
        )
        sender.start()
        for m in records:
            producer.produce(following[str(m.topic())], m.value(), m.key())
        sender.join()
        producer.commit_transaction(30)


class Reader(threading.Thread):
    """Notes when each record id comes out of ``mid`` and ``out`` (committed reads)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="floor-reader", daemon=True)
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": "bench-floor-reader",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "socket.nagle.disable": True,
            }
        )
        self.consumer.subscribe(list(HOPS[1:]))
        self.seen: dict[str, dict[int, float]] = {HOPS[1]: {}, HOPS[2]: {}}
        self.stop = threading.Event()

    def run(self) -> None:
        """Poll until stopped."""
        while not self.stop.is_set():
            message = self.consumer.poll(0.05)
            if message is not None and message.error() is None:
                arrived = self.seen[str(message.topic())]
                arrived.setdefault(int(message.value() or b"0"), time.time())
        self.consumer.close()


def _send(producer: Producer, rate: float, seconds: float, first: int) -> Iterator[int]:
    """Produce ``rate x seconds`` ids from ``first`` on, one every ``1 / rate`` s; yield each."""
    start = time.monotonic()
    for n in range(int(rate * seconds)):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        ident = first + n
        producer.produce(HOPS[0], str(ident).encode(), f"k{ident}".encode())
        yield ident


def _serve_acks(producer: Producer, stop: threading.Event) -> None:
    while not stop.is_set():
        producer.poll(0.005)


def measure(settings: Settings, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    """One steady phase after a warm-up at the same rate: per-hop latency quantiles."""
    acked: dict[int, float] = {}

    def on_delivery(err: Any, message: Message) -> None:
        if err is None:
            acked[int(message.value() or b"0")] = time.time()

    producer = Producer(
        {**delivery_config(settings.kafka_client_config()), "on_delivery": on_delivery}
    )
    reader = Reader(settings)
    reader.start()
    # Acks are noted when their callback runs: a thread of its own serves them at once, as
    # the collector's poll thread does (polling after each send noted them up to 1/rate late).
    stop = threading.Event()
    poller = threading.Thread(target=_serve_acks, args=(producer, stop), daemon=True)
    poller.start()
    try:
        for _ in _send(producer, rate, warmup, 0):
            pass
        measured = list(_send(producer, rate, seconds, 10_000_000))
        producer.flush(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(reader.seen[HOPS[2]]) < len(acked):
            time.sleep(0.1)
    finally:
        stop.set()
        poller.join(10)
        reader.stop.set()
        reader.join(10)
    out: dict[str, Any] = {"rate": rate, "records": len(measured)}
    for hop in HOPS[1:]:
        waits = [
            (reader.seen[hop][i] - acked[i]) * 1000
            for i in measured
            if i in acked and i in reader.seen[hop]
        ]
        out[hop] = {
            "p50": quantile(waits, 0.5),
            "p99": quantile(waits, 0.99),
            "seen": len(waits),
        }
    return out


def widths(settings: Settings, sizes: tuple[int, ...], rounds: int) -> dict[int, float]:
    """Median ms of one transaction writing one record to each of K partitions, per K.

    Each: begin, the records, the offset of one input partition (the worker sends its
    input offsets in every transaction), commit; back to back, as the worker's loop runs
    under load. The first tenth of each size is left out (connections, the coordinator).
    """
    consumer = Consumer({**consumer_config(settings, "width"), "group.id": f"{GROUP}-width"})
    producer = Producer(producer_config(settings, "bench-width"))
    producer.init_transactions(30)
    source = [TopicPartition(HOPS[0], 0, 0)]
    out: dict[int, float] = {}
    try:
        for size in sizes:
            took = []
            for n in range(rounds):
                started = time.perf_counter()
                producer.begin_transaction()
                for partition in range(size):
                    producer.produce(WIDE, b"x" * 200, b"k", partition=partition)
                source[0].offset = n
                producer.send_offsets_to_transaction(source, consumer.consumer_group_metadata(), 30)
                producer.commit_transaction(30)
                if n >= rounds // 10:
                    took.append((time.perf_counter() - started) * 1000)
            out[size] = quantile(took, 0.5)
    finally:
        consumer.close()
        producer.close()
    return out


def slope(costs: dict[int, float]) -> float:
    """Least-squares ms per partition of :func:`widths`' medians.

    Example:
        >>> round(slope({1: 7.0, 12: 9.75, 48: 18.75}), 6)
        0.25
    """
    n = len(costs)
    mean_x, mean_y = sum(costs) / n, sum(costs.values()) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in costs.items())
    return num / sum((x - mean_x) ** 2 for x in costs)


def floor(
    base: Settings,
    home: Path,
    rates: tuple[float, ...],
    seconds: float,
    warmup: float,
    sizes: tuple[int, ...] = (),
    rounds: int = 150,
    overrides: BrokerProperties = (),
) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """Each rate in turn on one scratch broker and forwarder, then :func:`widths`.

    Returns :func:`measure`'s result per rate and the median transaction per size (none
    without ``sizes``). ``overrides``: properties of the scratch broker.
    """
    results = []
    with one_broker(base, home, overrides) as (_brokers, settings):
        create_topics(settings, [TopicSpec(name, "key", "bench floor") for name in HOPS])
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.txn_floor", "--forward"],
            env={**os.environ, **settings.to_env()},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("the forwarder did not start")
            for rate in rates:
                results.append(measure(settings, rate, seconds, warmup))
                print(json.dumps(results[-1]), flush=True)
        finally:
            child.kill()
            child.wait()
        costs: dict[int, float] = {}
        if sizes:
            wide = TopicSpec(WIDE, "key", "bench floor: widths", partitions=max(sizes))
            create_topics(settings, [wide])
            costs = widths(settings, sizes, rounds)
            print(json.dumps({"widths_ms": costs}), flush=True)
    return results, costs


def width_figures(costs: dict[int, float], cmd: str) -> list[Figure]:
    """The median transaction per partitions written, and the cost of each one more."""
    if len(costs) < 2:
        return []
    one = min(costs)
    figures = [
        Figure("2", f"floor: one transaction writing {_partitions(size)} p50", ms, "ms",
               baseline=costs[one], baseline_name=f"writing {_partitions(one)}", command=cmd,
               notes="begin, one record per partition, one input offset, commit; back to back")
        for size, ms in sorted(costs.items())
    ]  # fmt: skip
    figures.append(
        Figure("2", "floor: each partition a transaction writes adds", slope(costs) * 1000,
               "µs", command=cmd, notes="least squares over the sizes above")
    )  # fmt: skip
    return figures


def _partitions(n: int) -> str:
    return f"{n} partition" if n == 1 else f"{n} partitions"


def notes(result: dict[str, Any], warmup: float) -> str:
    """What a floor figure was measured on, and its first hop."""
    one, two = result[HOPS[1]], result[HOPS[2]]
    return (
        f"{result['records']} records at {result['rate']:.0f}/s after {warmup:g} s at that "
        f"rate; {two['seen']} seen out; one hop p50 {one['p50']:.0f} / p99 {one['p99']:.0f} ms"
    )


def run(
    rates: tuple[float, ...],
    seconds: float,
    warmup: float,
    sizes: tuple[int, ...],
    rounds: int,
    overrides: BrokerProperties = (),
) -> list[Figure]:
    """The floor at each rate, and the transaction widths, as figures."""
    cmd = f"python -m bench.txn_floor --seconds {seconds:g} --warmup-seconds {warmup:g}"
    cmd += broker_note(overrides)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="leadflow-floor-") as tmp:
        results, costs = floor(
            load_settings(log_level="INFO"),
            Path(tmp),
            rates,
            seconds,
            warmup,
            sizes,
            rounds,
            overrides,
        )
    for result in results:
        out, rate = result[HOPS[2]], result["rate"]
        for q in ("p50", "p99"):
            figures.append(
                Figure("2", f"floor: ack -> out of two empty transactional hops {q}, "
                       f"{rate:g} records/s", out[q], "ms", command=cmd,
                       notes=notes(result, warmup))
            )  # fmt: skip
    return figures + width_figures(costs, cmd)


def main() -> None:
    """Parse arguments, run, print and record (or, with ``--forward``, be the forwarder)."""
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--forward", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, action="append", help=f"records/s (default {RATES})")
    p.add_argument("--seconds", type=float, default=None, help="measured phase per rate")
    p.add_argument("--warmup-seconds", type=float, default=None, help="unmeasured, first")
    p.add_argument("--width", type=int, action="append", help="partitions per transaction in "
                   f"the widths measurement (default {WIDTHS}); 0: skip it")  # fmt: skip
    add_broker_config(p)
    args = p.parse_args()
    if args.forward:
        forward(load_settings())
        return
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    warmup = (
        args.warmup_seconds if args.warmup_seconds is not None else (3.0 if args.quick else 15.0)
    )
    sizes = tuple(w for w in (args.width or WIDTHS) if w > 0)
    rounds = 40 if args.quick else 150
    overrides = tuple(args.broker_config)
    emit(run(tuple(args.rate or RATES), seconds, warmup, sizes, rounds, overrides), args.json)


if __name__ == "__main__":
    main()
