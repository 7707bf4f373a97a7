"""A minimal faust worker for the compatibility test: decode Avro, count in a RocksDB table,
re-encode and forward. Run as ``python echo_worker.py GUARANTEE BOOTSTRAP DATADIR PORT``."""

import sys
from dataclasses import replace

import faust

from leadflow.processors.events import Event
from leadflow.schemas.codec import SingleObjectCodec

guarantee, bootstrap, datadir, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
codec = SingleObjectCodec()
app = faust.App(
    f"echo-{guarantee}",
    broker=f"kafka://{bootstrap}",
    processing_guarantee=guarantee,
    datadir=datadir,
    store="rocksdb://",
    web_host="127.0.0.1",
    web_port=port,
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=2,
    topic_replication_factor=1,
)
source = app.topic(f"echo-in-{guarantee}", partitions=2)
sink = app.topic(f"echo-out-{guarantee}", partitions=2)
seen = app.Table(f"seen-{guarantee}", default=int, partitions=2, key_type=bytes, value_type=int)


@app.agent(source)
async def echo(stream):
    async for key, value in stream.items():
        event = codec.decode(value)
        assert isinstance(event, Event)
        seen[key] += 1
        forwarded = replace(event, payload={**event.payload, "name": f"seen-{seen[key]}"})
        await sink.send(key=key, value=codec.encode(forwarded))


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
