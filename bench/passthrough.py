"""The baseline: a raw Kafka pass-through with the worker's client library (aiokafka).

Consumes ``leadflow.events`` and produces every record unchanged to ``bench.passthrough``
with acks=all (the worker's ``producer_acks=-1``), committing after each fetched batch and
awaiting the acks of a batch before committing it: at-least-once, no decoding, no state.
Run as a child of ``bench.pipeline``: it prints ``ready`` once it has its partitions,
forwards ``--count`` records, then prints one JSON line with its timing and CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from leadflow.streams.settings import load_settings
from leadflow.streams.topics import EVENTS

SINK = "bench.passthrough"


async def forward(bootstrap: str, count: int) -> dict[str, float]:
    """Forward ``count`` records; return first/last wall times and records seen."""
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
        done = 0
        first = 0.0
        while done < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
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
        return {"first": first, "last": time.time(), "records": done}
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    """Forward, then print the result as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--count", type=int, required=True)
    args = p.parse_args()
    result = asyncio.run(forward(load_settings().bootstrap, args.count))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({**result, "cpu": usage.ru_utime + usage.ru_stime}), flush=True)


if __name__ == "__main__":
    main()
