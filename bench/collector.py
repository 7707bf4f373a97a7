"""Measure the collector: ``python -m bench.collector [--seconds 10]``.

Two figures, printed for the reader (no assertions):

1. microseconds per event spent in validation + mapping (``map_message``) and in
   encoding, in-process, over a realistic mix of messages;
2. requests/s and events/s of ``POST /v1/batch`` with 100-event batches through real HTTP
   to a real collector in front of a real broker (acks=all). Without
   ``LEADFLOW_KAFKA_BOOTSTRAP`` a throwaway local broker is started in a temp dir.
   The load generator runs on the same machine and competes for its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.collector.app import build_collector, create_app
from leadflow.streams.collector.keys import KeyStore
from leadflow.streams.collector.mapping import MapOptions, Mapped, map_message
from leadflow.streams.local_kafka import free_port, scratch_broker
from leadflow.streams.logs import configure_logging
from leadflow.streams.settings import Settings, load_settings
from leadflow.streams.topics import EVENTS, create_topics


def sample_messages(n: int) -> list[dict[str, Any]]:
    """A mix like a B2B site's traffic: mostly page views, some forms, identifies, emails."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        anon = f"anon-{i % 997}"
        common = {
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "timestamp": "2026-03-01T11:59:58.000Z",
            "sentAt": "2026-03-01T11:59:59.000Z",
            "context": {
                "page": {
                    "url": f"https://acme.example/p/{i % 40}?utm_source=google"
                    "&utm_medium=cpc&utm_campaign=brand",
                    "path": f"/p/{i % 40}",
                    "referrer": "https://www.google.com/",
                    "title": "Acme",
                },
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
                "ip": "203.0.113.9",
                "library": {"name": "analytics.js", "version": "2.11"},
            },
        }
        kind = i % 10
        if kind < 6:
            out.append(
                {
                    **common,
                    "type": "page",
                    "name": "Pricing",
                    "properties": {"path": "/pricing", "search": "?plan=pro"},
                }
            )
        elif kind < 8:
            out.append(
                {
                    **common,
                    "type": "track",
                    "event": "Form Submitted",
                    "properties": {
                        "form_id": "demo",
                        "email": f"p{i}@example.com",
                        "company": "Initech",
                        "company_size": 250,
                        "title": "VP Sales",
                        "answers": {"budget": "50k"},
                    },
                }
            )
        elif kind == 8:
            out.append(
                {
                    **common,
                    "type": "identify",
                    "userId": f"lead-{i}",
                    "traits": {"email": f"p{i}@example.com", "first_name": "Pat"},
                }
            )
        else:
            out.append(
                {
                    **common,
                    "type": "track",
                    "event": "Email Link Clicked",
                    "properties": {
                        "email_id": "e-1",
                        "campaign": "nurture-3",
                        "link_url": "https://acme.example/case",
                    },
                }
            )
    return out


def measure_mapping(settings: Settings, n: int = 5_000, repeat: int = 5) -> tuple[float, float]:
    """Microseconds per event for ``map_message`` and for ``codec.encode`` (best of runs).

    The best of several runs, because the machine is shared and the slower runs measure
    the neighbours rather than this code.
    """
    messages = sample_messages(n)
    options = MapOptions("ws", 1_772_366_400_000, 300_000)
    encode = codec_from_settings(settings).encode
    map_best = encode_best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        mapped = [map_message(m, m["type"], options, lambda: "x", "") for m in messages]
        map_best = min(map_best, time.perf_counter() - started)
        events = [m.event for m in mapped if isinstance(m, Mapped)]
        if len(events) != n:
            raise RuntimeError("the benchmark sample must be valid")
        started = time.perf_counter()
        for event in events:
            encode(event)
        encode_best = min(encode_best, time.perf_counter() - started)
    return map_best / n * 1e6, encode_best / n * 1e6


@contextmanager
def _broker(settings: Settings, home: Path) -> Iterator[Settings]:
    with scratch_broker(settings, home / "kafka", heap="768m") as (_, scratch):
        yield scratch


async def _load(url: str, key: str, seconds: float, concurrency: int) -> tuple[int, list[float]]:
    batches = [{"batch": sample_messages(100)} for _ in range(20)]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    statuses: dict[int, int] = {}

    async def worker(client: httpx.AsyncClient, offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            body = batches[i % len(batches)]
            started = time.perf_counter()
            response = await client.post("/v1/batch", json=body)
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            i += 1

    async with httpx.AsyncClient(base_url=url, auth=(key, ""), timeout=60) as client:
        await asyncio.gather(*(worker(client, n) for n in range(concurrency)))
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected answers: {statuses}")
    return statuses[200], latencies


def _serve(settings: Settings, port: int) -> None:
    """The collector process of the benchmark (spawned, so it has its own interpreter)."""
    configure_logging(settings)
    uvicorn.run(
        create_app(build_collector(settings)),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
    )


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc), to charge the collector alone.

    /proc counts in clock ticks (10 ms); a process asking about itself gets getrusage's
    microseconds instead (the pass-through child times phases of ~0.1 s of CPU).
    """
    if pid == os.getpid():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    base = load_settings(log_level="WARNING", topic_partitions=4)
    map_us, encode_us = measure_mapping(base)
    print(f"validation+mapping: {map_us:.1f} us/event; encode: {encode_us:.1f} us/event")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        base = base.model_copy(
            update={
                "data_dir": home,
                "collector_keys_file": home / "keys.json",
                "collector_rate_per_second": 1e9,
                "collector_rate_burst": 1e9,
            }
        )
        context = _broker(base, home) if base.local_kafka else nullcontext(base)
        with context as settings:
            create_topics(settings, [EVENTS])
            key = KeyStore(home / "keys.json").create("bench", lambda: datetime.now(tz=UTC))
            port = free_port()
            # A separate process: the load generator must not share the collector's GIL.
            server = multiprocessing.get_context("spawn").Process(
                target=_serve, args=(settings, port), daemon=True
            )
            server.start()
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_until_up(url, server)
                assert server.pid is not None
                cpu_before = _cpu_seconds(server.pid)
                requests, latencies = asyncio.run(_load(url, key, args.seconds, args.concurrency))
                cpu = _cpu_seconds(server.pid) - cpu_before
            finally:
                server.terminate()
                server.join(timeout=30)
    rps = requests / args.seconds
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"/v1/batch x100 events, concurrency {args.concurrency}, {args.seconds:g} s: "
        f"{rps:.1f} requests/s, {rps * 100:.0f} events/s; latency p50 "
        f"{quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms; "
        f"collector CPU {cpu / (requests * 100) * 1e6:.0f} us/event "
        f"({cpu / args.seconds:.2f} cores)"
    )


def _wait_until_up(url: str, server: multiprocessing.process.BaseProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not server.is_alive():
            raise RuntimeError("the collector process exited")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the collector did not become ready")


if __name__ == "__main__":
    main()
