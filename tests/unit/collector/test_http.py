"""The HTTP pipeline in-process (ASGI), with a recording sink in place of Kafka.

The real broker path is in tests/integration/collector; these pin the order of checks,
the answer shapes and the OpenAPI document without a JVM.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadflow.processors.events import Event, Kind
from leadflow.schemas.codec import SingleObjectCodec
from leadflow.streams.collector.app import Collector, create_app
from leadflow.streams.collector.dead_letters import DeadLetter
from leadflow.streams.collector.keys import KeyStore
from leadflow.streams.collector.producer import KafkaUnavailable
from leadflow.streams.settings import load_settings

CODEC = SingleObjectCodec()


class RecordingSink:
    def __init__(self) -> None:
        self.available = True
        self.records: list[tuple[bytes, bytes]] = []
        self.dead: list[DeadLetter] = []
        self.on_ack: Callable[[], None] = lambda: None

    def start(self) -> None:
        pass

    def close(self, timeout: float = 10.0) -> None:
        pass

    def reachable(self, timeout: float = 2.0) -> bool:
        return self.available

    async def send(
        self,
        records: Sequence[tuple[bytes, bytes]],
        dead: Sequence[DeadLetter] = (),
        queued: Callable[[], None] | None = None,
    ) -> float:
        if not self.available:
            raise KafkaUnavailable("down")
        if queued is not None:
            queued()
        self.on_ack()  # where EventProducer.send awaits the broker's acknowledgements
        self.records.extend(records)
        self.dead.extend(dead)
        return 0.001


class Harness:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.now = [0.0]
        self.sink = RecordingSink()
        keys = KeyStore(tmp_path / "keys.json")
        self.key = keys.create("acme", lambda: datetime(2026, 3, 1, tzinfo=UTC))
        self.collector = Collector(
            settings=load_settings(data_dir=tmp_path, **settings),
            keys=keys,
            sink=self.sink,
            encode=CODEC.encode,
            clock_ms=lambda: 1_772_366_400_000,
            monotonic=lambda: self.now[0],
            new_id=lambda: "new-id",
        )
        self.app = create_app(self.collector, manage_sink=False)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        content: bytes | None = None,
        key: str | None = "valid",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                auth = (self.key if key == "valid" else key, "") if key else None
                data = content if content is not None else json.dumps(body).encode()
                return await client.post(path, content=data, auth=auth, headers=headers or {})

        return asyncio.run(go())

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.request(method, path, headers=headers)

        return asyncio.run(go())

    def events(self) -> list[Event]:
        out = []
        for _key, value in self.sink.records:
            event = CODEC.decode(value)
            assert isinstance(event, Event)
            out.append(event)
        return out


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    # These tests read /metrics and /openapi.json, off by default (test_exposure.py).
    return Harness(tmp_path, collector_expose_metrics=True, collector_expose_docs=True)


DEAL = {"event": "Deal Won", "userId": "u1", "properties": {"amount": 5}}


def test_a_requests_stamp_closes_once_its_records_are_queued_before_their_ack(
    h: Harness,
) -> None:
    # Closing the stamp kicks the heartbeat round that releases the records; queued behind
    # them before their acknowledgement, it reaches the worker with them (session 23).
    seen: list[str] = []
    assert h.collector.receive is not None
    h.collector.receive.on_close = lambda: seen.append("stamp closed")
    h.sink.on_ack = lambda: seen.append("acknowledged")
    assert h.post("/v1/track", {**DEAL, "anonymousId": "a1"}).status_code == 200
    assert seen == ["stamp closed", "acknowledged"]


def test_accepted_events_are_keyed_by_person_and_decodable(h: Harness) -> None:
    response = h.post("/v1/track", {**DEAL, "anonymousId": "a1"})
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "event_ids": ["new-id"],
        "ignored": [],
        "kept": [],
        "warnings": [],
        "refused": [],
    }
    [(key, _)] = h.sink.records
    assert key == b'["acme","a1"]'
    [event] = h.events()
    assert (event.kind, event.workspace_id, event.payload["amount"]) == (Kind.DEAL_WON, "acme", 5.0)


def test_unknown_header_key_is_401_before_the_body_is_read(h: Harness) -> None:
    response = h.post("/v1/track", content=b"x" * 100_000, key="lfw_unknown")
    assert response.status_code == 401
    assert h.post("/v1/track", content=b"x" * 100_000).status_code == 413


def test_gzip_bodies_and_body_write_keys(h: Harness) -> None:
    body = gzip.compress(json.dumps(DEAL).encode())
    assert (
        h.post("/v1/track", content=body, headers={"Content-Encoding": "gzip"}).status_code == 200
    )
    assert (
        h.post("/v1/track", content=b"not gzip", headers={"Content-Encoding": "gzip"}).status_code
        == 400
    )
    assert h.post("/v1/track", {**DEAL, "writeKey": h.key}, key=None).status_code == 200
    assert h.post("/v1/track", {**DEAL, "writeKey": 12}, key=None).status_code == 401


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    h = Harness(tmp_path, collector_rate_per_second=0.5, collector_rate_burst=2.0)
    assert h.post("/v1/batch", {"batch": [{"type": "track", **DEAL}] * 4}).status_code == 200
    refused = h.post("/v1/track", DEAL)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "6"  # 2 tokens of debt + 1, at 0.5/s
    assert refused.json()["error"] == "rate_limited"
    h.now[0] = 6.0
    assert h.post("/v1/track", DEAL).status_code == 200
    assert len(h.sink.records) == 5


def test_unavailable_sink_is_503_and_counted(h: Harness) -> None:
    h.sink.available = False
    response = h.post("/v1/batch", {"batch": [{"type": "track", **DEAL}] * 3})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "same messageIds" in response.json()["message"]
    assert h.get("/ready").status_code == 503
    metrics = h.get("/metrics").text
    assert 'leadflow_collector_requests_rejected_total{reason="unavailable"} 1.0' in metrics
    assert 'leadflow_collector_events_rejected_total{reason="unavailable"} 3.0' in metrics


def test_a_bad_event_costs_only_itself_and_goes_to_the_dead_letter_topic(h: Harness) -> None:
    response = h.post(
        "/v1/batch",
        {
            "batch": [
                {"type": "track", **DEAL},
                {
                    "type": "track",
                    "event": "Deal Won",
                    "userId": "u",
                    "properties": {"amount": "x"},
                },
                {"type": "page"},
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["event_ids"] == ["new-id"]
    assert [
        (r["index"], r["reason"], [e["path"] for e in r["errors"]]) for r in body["refused"]
    ] == [
        (1, "invalid", ["batch[1].properties.amount"]),
        (2, "invalid", ["batch[2].userId"]),
    ]
    assert len(h.sink.records) == 1
    assert [dict(d.headers)["source.partition"] for d in h.sink.dead] == [b"1", b"2"]
    assert json.loads(h.sink.dead[0].value)["properties"] == {"amount": "x"}
    # Keyed by the person in the write key's workspace (issue 19), no key for nobody.
    assert [d.key for d in h.sink.dead] == [b'["acme","u"]', b""]


def test_a_batch_of_only_bad_events_is_a_400_naming_every_problem(h: Harness) -> None:
    response = h.post("/v1/batch", {"batch": [{"type": "page"}, {"type": "track", "event": "x"}]})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == body["error"] == "invalid"
    assert [e["path"] for e in body["errors"]] == ["batch[0].userId", "batch[1].userId"]
    assert [r["index"] for r in body["refused"]] == [0, 1]
    assert h.sink.records == []
    assert len(h.sink.dead) == 2


def test_openapi_references_resolve(h: Harness) -> None:
    doc = h.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    missing = {r for r in refs if r.removeprefix("#/components/schemas/") not in schemas}
    assert missing == set()
    for path in ("/v1/track", "/v1/page", "/v1/identify", "/v1/alias", "/v1/batch"):
        operation = doc["paths"][path]["post"]
        assert operation["security"] == [{"writeKey": []}]
        assert set(operation["responses"]) >= {"200", "400", "401", "413", "429", "503"}


def test_an_internal_error_is_a_json_500_and_nothing_is_stored(h: Harness, tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text("{broken")
    response = h.post("/v1/track", DEAL)
    assert response.status_code == 500
    assert response.json()["error"] == "internal"
    assert h.sink.records == []
    assert (
        'leadflow_collector_requests_rejected_total{reason="internal"} 1.0'
        in h.get("/metrics").text
    )
