"""The baseline: a raw Kafka pass-through with the worker's client library (aiokafka).

Consumes ``leadflow.events`` and produces every record unchanged to ``bench.passthrough``
with acks=all (the worker's ``producer_acks=-1``), committing after each fetched batch and
awaiting the acks of a batch before committing it: at-least-once, no decoding, no state.
Run as a child of ``bench.pipeline``: it prints ``ready`` once it has its partitions,
then for each phase (``--warmup`` records, if any, then ``--count`` records ``--repeat``
times) forwards that many records and prints one JSON line with the phase's timing and CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import cpu_seconds
from leadflow.streams.settings import load_settings
from leadflow.streams.topics import EVENTS

SINK = "bench.passthrough"


async def forward(bootstrap: str, phases: list[int]) -> None:
    """Forward each phase's count of records; print each phase's times, records and CPU."""
    consumer = AIOKafkaConsumer(
        EVENTS.name,
        bootstrap_servers=bootstrap,
        group_id="bench-passthrough",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        print("ready", flush=True)
        for count in phases:
            cpu = cpu_seconds(os.getpid())
            done = 0
            first = 0.0
            while done < count:
                # A phase's records were all produced after the phase before it ended, so
                # a phase never takes its successor's records.
                batch = await consumer.getmany(timeout_ms=200, max_records=count - done)
                if not batch:
                    continue
                first = first or time.time()
                acks = []
                offsets: dict[TopicPartition, int] = {}
                for tp, records in batch.items():
                    for record in records:
                        acks.append(await producer.send(SINK, value=record.value, key=record.key))
                    offsets[tp] = records[-1].offset + 1
                    done += len(records)
                await asyncio.gather(*acks)
                await consumer.commit(offsets)
            result = {"first": first, "last": time.time(), "records": done}
            print(json.dumps({**result, "cpu": cpu_seconds(os.getpid()) - cpu}), flush=True)
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    """Forward each phase, printing its result as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--warmup", type=int, default=0, help="records forwarded first, apart")
    p.add_argument("--repeat", type=int, default=1, help="phases of --count records")
    args = p.parse_args()
    phases = ([args.warmup] if args.warmup else []) + [args.count] * args.repeat
    asyncio.run(forward(load_settings().bootstrap, phases))


if __name__ == "__main__":
    main()
